//! `tally rebuild` as an operator runs it: the real binary against a store
//! file that a real `tally serve` is serving at the same time, read back
//! through the HTTP API.

use std::process::Stdio;
use std::time::{Duration, Instant};

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
        let mut args = vec!["rebuild", projection, "--chunk", "500"];
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
