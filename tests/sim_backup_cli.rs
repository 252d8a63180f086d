//! The simulator through the real binary: `replay` is bit-for-bit repeatable and ends in
//! the failure with a typed exit code; `sim` passes a correct variant and refuses bad
//! input with exit code 2.

use std::process::{Command, Output};

fn crosscheck(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscheck"))
        .args(arguments)
        .output()
        .expect("the crosscheck binary runs")
}

/// Finds a failing naive seed through `sim --json`, then replays it twice.
#[test]
fn replaying_a_failing_seed_twice_prints_the_same_trace_ending_in_the_failure() {
    let hunt = crosscheck(&[
        "sim",
        "backup",
        "--variant",
        "naive",
        "--seeds",
        "64",
        "--json",
    ]);
    assert_eq!(
        hunt.status.code(),
        Some(1),
        "naive must fail within 64 seeds: a safety exit"
    );
    let report: serde_json::Value = serde_json::from_slice(&hunt.stdout).unwrap();
    let seed = report["summary"]["first_failing_seed"]
        .as_u64()
        .expect("a failing seed");
    let seed_text = seed.to_string();
    let arguments = [
        "replay",
        "backup",
        "--seed",
        &seed_text,
        "--variant",
        "naive",
    ];
    let first = crosscheck(&arguments);
    let second = crosscheck(&arguments);
    assert_eq!(first.status.code(), Some(1), "a safety violation exits 1");
    assert_eq!(
        first.stdout, second.stdout,
        "two replays of one seed must be identical"
    );
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(
        text.lines().count() > 50,
        "a replay prints the whole trace:\n{text}"
    );
    assert!(
        text.contains(" Violation "),
        "the trace ends in the violation:\n{text}"
    );
    let command = format!("replay: cargo run --release -- replay backup --seed {seed}");
    assert!(text.contains(&command), "{text}");
}

#[test]
fn a_short_batch_of_a_correct_variant_passes_and_reports_json() {
    let output = crosscheck(&[
        "sim",
        "backup",
        "--seeds",
        "16",
        "--variant",
        "optimistic",
        "--json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["summary"]["seeds_run"], 16);
    assert_eq!(report["summary"]["seeds_failed"], 0);
    assert!(report["simulated_s"].as_f64().unwrap() > 1.0);
    // Under --json, stderr is JSON too: the run's seeds and settings as a note.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let notes: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let settings = notes[0]["note"].as_str().unwrap_or_default();
    assert!(settings.contains("variant=optimistic seeds="), "{stderr}");
}

#[test]
fn an_unknown_variant_or_zero_seeds_is_a_usage_error() {
    let bad_variant = crosscheck(&["sim", "backup", "--variant", "reckless"]);
    assert_eq!(bad_variant.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad_variant.stderr);
    assert!(message.contains("expected one of optimistic"), "{message}");
    let zero_seeds = crosscheck(&["sim", "backup", "--seeds", "0"]);
    assert_eq!(zero_seeds.status.code(), Some(2));
    // A range past the last u64 seed is refused, not wrapped around.
    let past_the_end = crosscheck(&[
        "sim",
        "backup",
        "--seed",
        &u64::MAX.to_string(),
        "--seeds",
        "2",
    ]);
    assert_eq!(past_the_end.status.code(), Some(2));
    let message = String::from_utf8_lossy(&past_the_end.stderr);
    assert!(
        message.contains("expected a range that ends within u64"),
        "{message}"
    );
}

#[test]
fn a_missing_empty_or_non_directory_from_dir_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let file = dir.path().join("file.txt");
    std::fs::write(&file, b"not a directory").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cases = [
        (&missing, "expected an existing directory"),
        (&file, "expected a directory, found a regular file"),
        (
            &empty,
            "expected at least one readable, non-empty regular file",
        ),
    ];
    for (path, expected) in cases {
        let path = path.to_str().unwrap();
        for command in ["sim", "replay"] {
            let mut arguments = vec![command, "backup", "--from-dir", path];
            if command == "replay" {
                arguments.extend(["--seed", "1"]);
            }
            let output = crosscheck(&arguments);
            let message = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{arguments:?}: {message}");
            assert!(message.contains(expected), "{arguments:?}: {message}");
        }
    }
}

/// A failing seed over a real directory: its replay command names the directory, and
/// running that command reproduces the run bit for bit.
#[test]
fn a_failure_over_a_directory_prints_a_replay_command_with_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.txt"),
        "some text to back up\n".repeat(200),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.txt"),
        "other text, other chunks\n".repeat(150),
    )
    .unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let root = root.to_str().unwrap();
    let hunt = crosscheck(&[
        "sim",
        "backup",
        "--variant",
        "naive",
        "--seeds",
        "64",
        "--from-dir",
        root,
    ]);
    assert_eq!(
        hunt.status.code(),
        Some(1),
        "naive must fail within 64 seeds"
    );
    let stderr = String::from_utf8_lossy(&hunt.stderr);
    assert!(stderr.contains("read 2 file(s)"), "{stderr}");
    let stdout = String::from_utf8(hunt.stdout).unwrap();
    let replay_line = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("replay: cargo run --release -- "))
        .unwrap_or_else(|| panic!("no replay command in:\n{stdout}"));
    assert!(
        replay_line.ends_with(&format!("--from-dir {root}")),
        "{replay_line}"
    );
    let arguments: Vec<&str> = replay_line.split(' ').collect();
    let first = crosscheck(&arguments);
    let second = crosscheck(&arguments);
    assert_eq!(first.status.code(), Some(1));
    assert_eq!(first.stdout, second.stdout);
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(text.contains(&format!("workload_dir={root:?}")), "{text}");
}
