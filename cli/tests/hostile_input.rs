//! Hostile input to the real binary: every case ends in one clear line on
//! stderr and a non-zero exit, never a panic, and writes nothing.

use std::path::Path;

mod support;

use support::{ok, run, seed_orders, tally, temp_db, texts};

/// Runs `tally <args>` (with `--db db` when given) and checks it failed with
/// exit status 2 and one `tally:` line mentioning `expected`.
fn refused(db: Option<&Path>, args: &[&str], expected: &str) {
    let mut command = tally();
    command.args(args);
    if let Some(db) = db {
        command.arg("--db").arg(db);
    }
    let output = command.output().expect("run tally");
    let (stdout, stderr) = texts(&output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got: {stderr}");
    assert!(stderr.starts_with("tally: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr:?} should mention {expected:?}"
    );
}

/// Table: unknown projection, missing or binary or format-less file,
/// missing / non-SQLite / directory store, malformed --at, bad stream id,
/// unknown stream.
#[test]
fn hostile_input_is_one_clear_line_and_a_non_zero_exit() {
    let (dir, db) = temp_db();
    seed_orders(&db, 0..3);
    let missing_db = dir.path().join("nope.db");
    let text_db = dir.path().join("notes.db");
    std::fs::write(&text_db, "these are my notes, not a database\n".repeat(200)).expect("write");
    let binary = dir.path().join("photo.csv");
    std::fs::write(&binary, [0x89u8, b'P', b'N', b'G', 0xff, 0xfe, 0x00, 0x01, b'\n', 0xc3]).expect("write");
    let no_extension = dir.path().join("export");
    std::fs::write(&no_extension, "sku,name,on_hand\n").expect("write");
    let (binary, no_extension) = (binary.to_str().expect("utf-8"), no_extension.to_str().expect("utf-8"));

    let cases: &[(Option<&Path>, &[&str], &str)] = &[
        (Some(&db), &["rebuild", "nope"], "unknown projection \"nope\""),
        (Some(&db), &["verify", "projections", "orders"], "unknown projection"),
        (
            Some(&db),
            &["import", "/definitely/not/here.csv"],
            "cannot read /definitely/not/here.csv",
        ),
        (Some(&db), &["import", binary], "not UTF-8 text"),
        (Some(&db), &["import", no_extension], "--format"),
        (Some(&missing_db), &["verify", "chain"], "no store at"),
        (Some(&missing_db), &["rebuild", "order_summary"], "no store at"),
        (Some(&text_db), &["verify", "chain"], "not a database"),
        (Some(&text_db), &["stream", "show", "order-o1"], "not a database"),
        (Some(dir.path()), &["verify", "chain"], "is not a database file"),
        (
            Some(&db),
            &["stream", "state", "order-o1", "--at", "yesterday"],
            "--at \"yesterday\"",
        ),
        (
            Some(&db),
            &["stream", "state", "order-o1", "--at", "2026-13-45T99:00:00Z"],
            "RFC 3339",
        ),
        (Some(&db), &["stream", "show", "order o1"], "invalid stream id"),
        (
            Some(&db),
            &["stream", "show", "order-o1", "--from", "5", "--to", "2"],
            "below --from",
        ),
        (
            Some(&db),
            &["verify", "chain", "--stream", "../../etc/passwd"],
            "invalid stream id",
        ),
        (Some(&db), &["stream", "show", "order-nobody"], "has no events"),
        (Some(&db), &["stream", "state", "widget-1"], "had no events"),
    ];
    for (db, args, expected) in cases {
        refused(*db, args, expected);
    }
    assert!(!missing_db.exists(), "an operator command never creates a store");
}

/// A closed stdout (`tally stream show … | head -1`) ends the output
/// quietly, not with a panic.
#[test]
fn a_closed_pipe_is_not_a_panic() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..2);
    let mut child = tally()
        .args(["stream", "show", "order-o1", "--db"])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let (_, stderr) = texts(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The help of every subcommand explains its options with an example.
#[test]
fn every_help_has_an_example() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["rebuild", "--help"],
        &["verify", "--help"],
        &["verify", "chain", "--help"],
        &["verify", "projections", "--help"],
        &["import", "--help"],
        &["stream", "--help"],
        &["stream", "show", "--help"],
        &["stream", "state", "--help"],
    ] {
        let stdout = ok(tally().args(args).output().expect("run tally"));
        assert!(stdout.contains("Example"), "{args:?} has no example:\n{stdout}");
        assert!(stdout.contains("Usage:"), "{args:?}:\n{stdout}");
    }
    let (stdout, _) = texts(&run(Path::new("unused.db"), &["stream", "show", "--help"]));
    assert!(stdout.contains("--db <PATH>"), "{stdout}");
}
