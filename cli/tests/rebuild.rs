//! `tally rebuild` as an operator runs it: the real binary against a store
//! file that a real `tally serve` is serving at the same time, read back
//! through the HTTP API.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

mod support;

use support::{
    Server, corrupt_summary, final_status, live_generation, ok, rebuild_unfinished, run, seed_orders, tally, temp_db,
    texts,
};

/// Places order `id` for one unit of `sku` through the API.
fn place(server: &Server, id: &str, sku: &str) {
    let body = format!(
        r#"{{"order_id":"{id}","customer_id":"c-live","lines":[{{"sku":"{sku}","quantity":1,"unit_price_cents":500}}]}}"#
    );
    let (status, answer) = server.post("/orders", &body);
    assert_eq!(status, 201, "{answer}");
}

fn stock(server: &Server, sku: &str, units: u64) {
    let (status, answer) = server.post("/inventory", &format!(r#"{{"sku":"{sku}","name":"Live {sku}"}}"#));
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = server.post(
        &format!("/inventory/{sku}/receipts"),
        &format!(r#"{{"quantity":{units}}}"#),
    );
    assert_eq!(status, 200, "{answer}");
}

/// The rebuild lease of `projection` as stored: holder and expiry (ms).
fn lease(db: &Path, projection: &str) -> Option<(String, i64)> {
    Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT holder, expires_at_ms FROM rebuild_leases WHERE projection = ?1",
            [projection],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .expect("read the lease")
}

/// Writes a lease of `projection` by hand, as another run would have.
fn write_lease(db: &Path, projection: &str, holder: &str, expires_at_ms: i64) {
    Connection::open(db)
        .expect("open")
        .execute(
            "INSERT OR REPLACE INTO rebuild_leases (projection, holder, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![projection, holder, expires_at_ms],
        )
        .expect("write the lease");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sleeps until the lease of `projection`, if any, has expired.
fn wait_out_lease(db: &Path, projection: &str) {
    if let Some((_, expires)) = lease(db, projection) {
        let left = expires - now_ms();
        if left >= 0 {
            std::thread::sleep(Duration::from_millis(left as u64 + 100));
        }
    }
}

/// Starts `tally <args> --db <db>` in the background.
fn spawn(db: &Path, args: &[&str]) -> Child {
    tally()
        .args(args)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tally")
}

/// Waits until `child` holds the lease of `projection` (with `also` true).
fn until_leased(db: &Path, projection: &str, child: &mut Child, also: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = format!("pid {}", child.id());
    loop {
        assert!(child.try_wait().expect("poll").is_none(), "the rebuild ended too soon");
        assert!(Instant::now() < deadline, "the rebuild never took its lease");
        if lease(db, projection).is_some_and(|(holder, _)| holder.ends_with(&pid)) && also() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to `child`.
fn signal(child: &Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {signal}");
}

/// Pauses `child` (SIGSTOP) at a moment it holds no write transaction on
/// `db`, so other runs can write while it is paused: a rebuild is faster
/// than the checks that must run while it holds its lease.
fn pause_outside_a_write(db: &Path, child: &Child) {
    let probe = Connection::open(db).expect("open");
    probe.busy_timeout(Duration::ZERO).expect("busy timeout");
    for _ in 0..500 {
        signal(child, "-STOP");
        std::thread::sleep(Duration::from_millis(20));
        if probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok() {
            return;
        }
        signal(child, "-CONT");
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the rebuild always held the write lock");
}

/// Asserts `tally <args>` was refused because `holder` holds the lease: exit
/// status 2 and one line naming the holder and until when.
fn assert_refused(db: &Path, args: &[&str], holder: &str) {
    let output = run(db, args);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("already running") && stderr.contains(holder) && stderr.contains("until"),
        "names the holder and until when: {stderr}"
    );
}

/// Given a rebuild of order_summary running in its own process, when a
/// second rebuild of order_summary is started (either mode), then it is
/// refused with exit status 2 naming the first run and its lease's expiry,
/// while a rebuild of sales_by_day (another projection's lease) runs; the
/// first ends normally and releases its lease.
#[test]
fn a_second_rebuild_of_a_projection_is_refused_while_the_first_runs() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..20_000);
    let mut first = spawn(&db, &["rebuild", "order_summary", "--chunk", "500"]);
    until_leased(&db, "order_summary", &mut first, || true);
    let holder = format!("pid {}", first.id());
    // Paused (its lease lasts 30 s), so it is surely still running below.
    pause_outside_a_write(&db, &first);

    assert_refused(&db, &["rebuild", "order_summary"], &holder);
    assert_refused(&db, &["rebuild", "order_summary", "--truncate"], &holder);
    let other = ok(run(&db, &["rebuild", "sales_by_day"]));
    assert!(other.contains("sales_by_day: generation"), "{other}");
    assert!(
        first.try_wait().expect("poll").is_none(),
        "the first still ran meanwhile"
    );
    signal(&first, "-CONT");

    let output = first.wait_with_output().expect("first rebuild");
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(lease(&db, "order_summary"), None, "released at the end");
    assert_models_verify(&db);
}

/// Given a rebuild SIGKILLed mid-run (it cannot release its lease), when
/// the next run starts before the lease expires, then it is refused naming
/// the killed run; once the lease has expired the next run takes it and
/// resumes. A lease written with an expiry in the past blocks nothing; one
/// in the future is refused, named as written.
#[test]
fn a_killed_runs_lease_blocks_the_next_run_only_until_it_expires() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..15_000);
    let args = ["rebuild", "order_summary", "--chunk", "500", "--lease-ttl", "3"];
    let mut killed = spawn(&db, &args);
    until_leased(&db, "order_summary", &mut killed, || {
        rebuild_unfinished(&db, "order_summary")
    });
    killed.kill().expect("SIGKILL");
    killed.wait().expect("reap");
    let (_, expires) = lease(&db, "order_summary").expect("the killed run's lease is left behind");
    assert!(expires > now_ms(), "not yet expired");

    assert_refused(&db, &args, &format!("pid {}", killed.id()));
    wait_out_lease(&db, "order_summary");
    let stdout = ok(run(&db, &args));
    assert!(stdout.contains("resumed") && stdout.contains("is live"), "{stdout}");
    assert_eq!(lease(&db, "order_summary"), None);

    write_lease(&db, "sales_by_day", "ghost@nowhere pid 1", now_ms() - 1_000);
    ok(run(&db, &["rebuild", "sales_by_day", "--truncate"]));
    write_lease(&db, "sales_by_day", "ghost@nowhere pid 1", now_ms() + 60_000);
    assert_refused(&db, &["rebuild", "sales_by_day"], "ghost@nowhere pid 1");
    assert_models_verify(&db);
}

/// `verify projections` on both models: consistent, and nothing lagging.
fn assert_models_verify(db: &std::path::Path) {
    for projection in ["order_summary", "sales_by_day"] {
        let output = run(db, &["verify", "projections", projection, "--fail-on-lag"]);
        let (stdout, stderr) = texts(&output);
        assert!(output.status.success(), "{projection}: {stdout}{stderr}");
    }
}

/// Given a summary row corrupted by hand, when it is rebuilt blue-green and
/// then (corrupted again) by truncate-and-replay, then the API serves the
/// repaired row after each.
#[test]
fn a_row_corrupted_by_hand_is_repaired_by_either_mode() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..200);
    let server = Server::start(&db);
    server.get_until("/orders/o199", |status, _| status == 200);
    for mode in [None, Some("--truncate")] {
        corrupt_summary(&db, "o5", "status", json!("placed"));
        corrupt_summary(&db, "o5", "total_cents", json!(1));
        let (_, before) = server.get("/orders/o5");
        assert_eq!(
            (before["status"].as_str(), before["total_cents"].as_u64()),
            (Some("placed"), Some(1))
        );

        let mut args = vec!["rebuild", "order_summary"];
        args.extend(mode);
        let stdout = ok(run(&db, &args));
        assert!(stdout.contains("order_summary: generation"), "{stdout}");

        let (_, after) = server.get("/orders/o5");
        assert_eq!(after["status"], final_status(5), "{after}");
        assert_ne!(after["total_cents"], 1);
    }
    assert_models_verify(&db);
}

/// Given a blue-green build replayed but not switched (`--no-switch`), when
/// commands are accepted through `tally serve` meanwhile, then queries still
/// answer from the old generation (its corrupted row included) and see the
/// new commands there; when the rebuild is run again it catches up and
/// switches, and queries answer from the new generation: the row repaired,
/// the commands accepted during the rebuild present.
#[test]
fn blue_green_answers_from_the_old_generation_until_the_switch() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..300);
    let server = Server::start(&db);
    server.get_until("/orders/o299", |status, _| status == 200);
    corrupt_summary(&db, "o9", "status", json!("cancelled"));
    let old = live_generation(&db, "order_summary");

    let stdout = ok(run(&db, &["rebuild", "order_summary", "--no-switch"]));
    assert!(stdout.contains("built but not live"), "{stdout}");
    assert!(rebuild_unfinished(&db, "order_summary"));
    assert_eq!(
        server.get("/orders/o9").1["status"],
        "cancelled",
        "still the old generation"
    );

    stock(&server, "LIVE-1", 10);
    place(&server, "during-1", "LIVE-1");
    let (_, during) = server.get_until("/orders/during-1", |status, _| status == 200);
    assert_eq!(during["status"], "placed");
    assert_eq!(live_generation(&db, "order_summary"), old);

    let stdout = ok(run(&db, &["rebuild", "order_summary"]));
    assert!(stdout.contains("resumed") && stdout.contains("is live"), "{stdout}");
    assert_ne!(live_generation(&db, "order_summary"), old);
    assert_eq!(
        server.get("/orders/o9").1["status"],
        final_status(9),
        "the new generation"
    );
    assert_eq!(server.get("/orders/during-1").1["status"], "placed");
    // The live tail of the running server goes on into the new generation.
    place(&server, "after-1", "LIVE-1");
    server.get_until("/orders/after-1", |status, _| status == 200);
    let (_, listed) = server.get("/customers/c-live/orders");
    assert_eq!(listed["orders"].as_array().map(Vec::len), Some(2), "{listed}");
    assert_models_verify(&db);
}

/// Given a rebuild running in its own process, when commands are accepted
/// through `tally serve` while it runs, then a corrupted row reads corrupted
/// until the switch and repaired after it (never back), and every command
/// ends up in the new generation.
#[test]
fn commands_accepted_during_a_running_rebuild_end_up_in_the_new_generation() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..20_000);
    let server = Server::start(&db);
    server.get_until("/orders/o19999", |status, _| status == 200);
    stock(&server, "LIVE-2", 1_000);
    corrupt_summary(&db, "o13", "status", json!("cancelled"));
    let old = live_generation(&db, "order_summary");

    let mut rebuild = tally()
        .args(["rebuild", "order_summary", "--chunk", "1000", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the rebuild");
    let mut placed = 0;
    let mut repaired_seen = false;
    while rebuild.try_wait().expect("poll").is_none() {
        place(&server, &format!("during-{placed}"), "LIVE-2");
        placed += 1;
        let status = server.get("/orders/o13").1["status"].clone();
        if status == final_status(13) {
            repaired_seen = true;
        } else {
            assert!(!repaired_seen, "a reader went back to the old generation");
            assert_eq!(status, "cancelled");
        }
    }
    let output = rebuild.wait_with_output().expect("rebuild output");
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(placed > 0, "no command was accepted during the rebuild");
    assert_ne!(live_generation(&db, "order_summary"), old);
    assert_eq!(server.get("/orders/o13").1["status"], final_status(13));
    for i in 0..placed {
        server.get_until(&format!("/orders/during-{i}"), |status, _| status == 200);
    }
    assert_models_verify(&db);
}

/// Given a rebuild killed (SIGKILL) at random points, when it is run again,
/// then it resumes and ends with the model of an in-order replay
/// (`verify projections` recomputes exactly that), in both modes.
#[test]
fn a_rebuild_killed_at_random_points_resumes_to_an_in_order_replay() {
    let (_dir, db) = temp_db();
    seed_orders(&db, 0..15_000);
    // Project everything once, so the old generation is complete too.
    for projection in ["order_summary", "sales_by_day"] {
        ok(run(&db, &["rebuild", projection, "--truncate"]));
    }
    let seed = fastrand::u64(..);
    println!("kill timings seeded with {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    for (projection, mode) in [("order_summary", None), ("sales_by_day", Some("--truncate"))] {
        let started = Instant::now();
        // A killed run's lease blocks the next until it expires: keep it short.
        let mut args = vec!["rebuild", projection, "--chunk", "500", "--lease-ttl", "1"];
        args.extend(mode);
        ok(run(&db, &args));
        let full = started.elapsed().as_millis() as u64;

        // Kill until two kills have landed mid-rebuild and the last one did.
        let mut interrupted = 0;
        for _ in 0..12 {
            let mut child = tally()
                .args(&args)
                .arg("--db")
                .arg(&db)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the rebuild");
            std::thread::sleep(Duration::from_millis(rng.u64(50..full.max(100))));
            let _ = child.kill();
            let _ = child.wait();
            wait_out_lease(&db, projection);
            if rebuild_unfinished(&db, projection) {
                interrupted += 1;
                if interrupted >= 2 {
                    break;
                }
            }
        }
        assert!(
            interrupted >= 2 && rebuild_unfinished(&db, projection),
            "{projection}: the kills did not land mid-rebuild (seed {seed})"
        );
        let stdout = ok(run(&db, &args));
        assert!(stdout.contains("resumed"), "{projection}: {stdout}");
        assert!(!rebuild_unfinished(&db, projection));
    }
    assert_models_verify(&db);
}
