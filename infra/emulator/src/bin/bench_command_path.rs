//! `make bench`: the DynamoDB command path against the emulator. For streams
//! of 1, 1,000 and 20,000 events, with a snapshot every 100 events and with
//! none, it runs `receive_stock` commands through the real command service
//! and SDK and prints requests and latency per command.
//!
//! Latencies are the emulator's (moto on one thread, loopback), not
//! DynamoDB's: compare the rows with each other, and read the request counts
//! as what a command costs in AWS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_api::CommandService;
use tally_api::service::{CommandContext, ServiceConfig};
use tally_core::SnapshotPolicy;
use tally_domain::{Quantity, Sku};
use tally_emulator::RequestCounter;
use tally_store_dynamodb::DynamoStore;

const READS: [&str; 3] = ["Query", "GetItem", "BatchGetItem"];
const WRITES: [&str; 3] = ["PutItem", "TransactWriteItems", "BatchWriteItem"];

#[tokio::main]
async fn main() {
    println!("DynamoDB command path on the emulator (receive_stock on one SKU stream)");
    println!(
        "{:>8} {:>10} {:>9} {:>12} {:>13} {:>11} {:>11}",
        "events", "snapshots", "commands", "reads/cmd", "writes/cmd", "p50 ms", "mean ms"
    );
    for length in [1u64, 1_000, 20_000] {
        for interval in [Some(100u64), None] {
            let counter = RequestCounter::default();
            let client = tally_emulator::dynamodb(Some(counter.clone())).await;
            let tables = tally_emulator::create_tables(&client, interval).await;
            let store = DynamoStore::new(client, tables);
            let sku_id = format!("BENCH-{length}");
            tally_emulator::seed_inventory_stream(&store, &sku_id, length, 100).await;
            let config = ServiceConfig {
                snapshots: SnapshotPolicy { every: interval },
                ..ServiceConfig::default()
            };
            let service = CommandService::new(Arc::new(store), config);
            let sku = Sku::parse(sku_id).expect("sku");
            let commands = if interval.is_none() && length > 1_000 { 5 } else { 30 };
            counter.reset();
            let mut latencies: Vec<Duration> = Vec::with_capacity(commands);
            for _ in 0..commands {
                let start = Instant::now();
                service
                    .receive_stock(&sku, Quantity::new(1).expect("qty"), &CommandContext::default())
                    .await
                    .expect("command");
                latencies.push(start.elapsed());
            }
            latencies.sort();
            let mean = latencies.iter().sum::<Duration>() / commands as u32;
            let per = |ops: &[&str]| counter.of(ops) as f64 / commands as f64;
            println!(
                "{:>8} {:>10} {:>9} {:>12.2} {:>13.2} {:>11.1} {:>11.1}",
                length,
                interval.map_or("none".to_owned(), |n| format!("every {n}")),
                commands,
                per(&READS),
                per(&WRITES),
                latencies[commands / 2].as_secs_f64() * 1e3,
                mean.as_secs_f64() * 1e3,
            );
        }
    }
}
