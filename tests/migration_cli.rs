//! `crosscheck migrate` end to end through the real binary, on two temporary databases.

use std::process::Command;

fn crosscheck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crosscheck"))
}

#[test]
fn migrate_moves_sqlite_to_redb_under_load_and_reports_json() {
    let directory = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}", directory.path().join("x.db").display());
    let to = format!("redb://{}", directory.path().join("y.redb").display());
    let output = crosscheck()
        .args([
            "migrate",
            "--from",
            &from,
            "--to",
            &to,
            "--keys",
            "500",
            "--writers",
            "2",
        ])
        .args(["--ops-per-writer", "100", "--batch-keys", "64", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["holds"], true);
    assert_eq!(json["seeded_keys"], 500);
    let report = &json["report"];
    assert_eq!(report["record"]["phase"], "Done");
    assert!(report["record"]["backfill_keys_scanned"].as_u64().unwrap() >= 500);
    assert_eq!(report["final_check"]["count"], 0);
    assert_eq!(report["stale_reads"], 0);
    assert!(report["final_keys_checked"].as_u64().unwrap() >= 500);
    assert_eq!(
        report["phases"].as_array().unwrap().len(),
        6,
        "one row per phase"
    );

    // The state file says Done: a second run must refuse rather than migrate again.
    let again = crosscheck()
        .args(["migrate", "--from", &from, "--to", &to])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already Done"));
}

#[test]
fn migrate_explains_a_bad_url_with_the_accepted_forms() {
    let output = crosscheck()
        .args([
            "migrate",
            "--from",
            "postgres://db/x",
            "--to",
            "redb:///tmp/never.redb",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown scheme \"postgres\""), "{stderr}");
    assert!(stderr.contains("sqlite:///absolute/path.db"), "{stderr}");
}

#[test]
fn migrate_refuses_a_non_empty_target_without_a_recorded_migration() {
    let directory = tempfile::tempdir().unwrap();
    let y_path = directory.path().join("y.db");
    {
        use migration::store::Store;
        let y = migration::store::sqlite::SqliteStore::open(&y_path).unwrap();
        y.put("already-here", b"v").unwrap();
    }
    let output = crosscheck()
        .args([
            "migrate",
            "--from",
            "memory:",
            "--to",
            &format!("sqlite://{}", y_path.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected an empty Y"));
}
