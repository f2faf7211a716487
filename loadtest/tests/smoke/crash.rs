//! `crash` against the casebroker binary of this build: a few rounds lose
//! no acknowledged change, and a broker that keeps nothing makes the run
//! report every change lost and fail.

use std::path::Path;

use super::{broker_binary, run_report, run_with_table};

/// The arguments of a short `crash` run against this build's binary.
fn crash_args(broker: &Path, rounds: &str) -> Vec<String> {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/casebroker-load.toml");
    [
        "crash",
        "--broker",
        broker.to_str().unwrap(),
        "--config",
        config,
        "--rounds",
        rounds,
        "--clients",
        "3",
        "--min-ms",
        "100",
        "--max-ms",
        "300",
        "--time-limit",
        "50",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_change() {
    let broker = broker_binary();
    let args = crash_args(&broker, "3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (v, table) = run_with_table("crash", &args).await;
    assert_eq!(v["scenario"], "crash", "{v:#}");
    assert_eq!(v["rounds_done"], 3, "{v:#}");
    assert_eq!(v["lost"], 0, "{table}");
    assert!(v["acknowledged"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["recovered"], v["acknowledged"], "{v:#}");
    for kind in ["creates", "chat_lines"] {
        assert!(
            v["acknowledged_by_kind"][kind].as_u64().unwrap() > 0,
            "{kind}: {v:#}"
        );
    }
    assert_eq!(v["resumed"], 3, "{v:#}");
    assert_eq!(v["snapshot"], 0, "{v:#}");
    assert_eq!(v["epoch_changed"], 0, "{v:#}");
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["unexpected"], 0, "{v:#}");
    assert_eq!(v["restart"]["count"], 3, "{v:#}");
    assert!(v["p99_ms"].is_number(), "{v:#}");
    assert!(table.contains("lost"), "{table}");
    // The fresh data directory is removed at the end.
    let data = v["data_dir"].as_str().unwrap();
    assert!(!Path::new(data).exists(), "{data} left behind");
}

/// The check itself: a broker that keeps nothing (`--in-memory`) loses
/// every change, and the run must say so and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_reports_the_losses_of_a_broker_that_keeps_nothing() {
    let broker = broker_binary();
    let mut args = crash_args(&broker, "1");
    args.push("--broker-in-memory".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (v, report) = run_report("crash-in-memory", &args).await;
    assert!(report.failed, "{}", report.table());
    let acked = v["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{v:#}");
    assert_eq!(v["lost"], acked, "{v:#}");
    assert_eq!(v["recovered"], 0, "{v:#}");
    assert_eq!(v["snapshot"], 1, "{v:#}");
    assert_eq!(v["epoch_changed"], 1, "{v:#}");
    assert!(
        v["losses"][0].as_str().unwrap().contains("is gone"),
        "{v:#}"
    );
}
