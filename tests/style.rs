//! House style that rustfmt cannot enforce: no line of Rust, TLA+ or TLC
//! config wider than 100 columns (comments and strings included), and a `//!`
//! doc at the top of every Rust module.

use std::path::{Path, PathBuf};

const COLUMNS_MAX: usize = 100;

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            sources(&path, found);
        } else if ["rs", "tla", "cfg"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
        {
            found.push(path);
        }
    }
}

fn project_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["src", "impl", "sim", "model", "specs", "tests"] {
        sources(&root.join(dir), &mut found);
    }
    found.sort();
    assert!(
        found.len() > 20,
        "expected the project's sources, found {}",
        found.len()
    );
    found
}

#[test]
fn no_line_is_wider_than_100_columns() {
    let mut wide = Vec::new();
    for path in project_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (index, line) in text.lines().enumerate() {
            let columns = line.chars().count();
            if columns > COLUMNS_MAX {
                wide.push(format!(
                    "{}:{}: {columns} columns",
                    path.display(),
                    index + 1
                ));
            }
        }
    }
    assert!(
        wide.is_empty(),
        "lines wider than {COLUMNS_MAX} columns:\n{}",
        wide.join("\n")
    );
}

#[test]
fn every_rust_module_opens_with_a_module_doc() {
    let mut undocumented = Vec::new();
    for path in project_sources() {
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        if !first.starts_with("//!") {
            undocumented.push(path.display().to_string());
        }
    }
    assert!(
        undocumented.is_empty(),
        "modules without a `//!` doc:\n{}",
        undocumented.join("\n")
    );
}
