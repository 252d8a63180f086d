//! Where a command's words go besides its result on stdout: notes on its
//! progress and the reason it failed, on stderr. Under `--json` every line
//! there is a JSON object, so that a script reads all of a run's output as
//! JSON: `{"note": ...}`, `{"error": ..., "exit_code": N}`, and log events.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::verdict::Verdict;

/// Whether this run prints JSON; set once, at start-up.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether the command line asks for `--json` (before any `--`, after which
/// everything is an operand).
pub fn json_asked(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json" || arg.to_str().is_some_and(|arg| arg.starts_with("--json=")))
}

/// Sets the output mode for the rest of the run.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Whether progress bars are drawn: on a terminal, and never under `--json`.
pub fn progress_drawn() -> bool {
    use std::io::IsTerminal;
    !JSON.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// Writes a line to stderr. A stderr that cannot take it (closed, or a full
/// disk behind it) loses the line, never the command's outcome: the exit
/// code still says how the command ended (`eprintln!` would panic instead).
fn stderr_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints a note on a command's progress: the text, or `{"note": text}`.
pub fn print_note(text: std::fmt::Arguments<'_>) {
    if JSON.load(Ordering::Relaxed) {
        stderr_line(format_args!(
            "{}",
            serde_json::json!({ "note": text.to_string() })
        ));
    } else {
        stderr_line(text);
    }
}

/// Prints why a command failed: `error: <message>` for a person, or one
/// JSON object for a script, `{"error": "<message>", "exit_code": N}`, N
/// being the code the command exits with.
pub fn print_error(message: &str, verdict: Verdict) {
    if JSON.load(Ordering::Relaxed) {
        let error = serde_json::json!({ "error": message, "exit_code": verdict.exit_code() });
        stderr_line(format_args!("{error}"));
    } else {
        stderr_line(format_args!("error: {message}"));
    }
}

/// Under `--json`, a panic anywhere is reported as one JSON object,
/// `{"panic": message, "at": "file:line:column"}`, not as prose.
pub fn install_panic_hook() {
    if !JSON.load(Ordering::Relaxed) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(ToString::to_string);
        let panic = serde_json::json!({ "panic": panic_text(info.payload()), "at": at });
        stderr_line(format_args!("{panic}"));
    }));
}

/// A panic's message, when it has one.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "a panic without a message"
    }
}

/// [`print_note`] with `format!` arguments.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::print_note(format_args!($($arg)*))
    };
}
pub(crate) use note;
