//! The scenarios that take cases through their life: `lifecycle`
//! completes cases step by step, and `queue-depth` measures create,
//! assign and close against an empty and a deep queue, then leaves the
//! broker as it found it.

use super::{LOAD_CONFIG, broker, run, run_with_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_completes_cases() {
    let b = broker(LOAD_CONFIG).await;
    let v = run(
        "lifecycle",
        &[
            "lifecycle",
            "--url",
            &b.ws_url(),
            "--concurrency",
            "4",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(v["cases"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["cases_per_sec"].is_number(), "{v:#}");
    for step in casebroker_loadtest::lifecycle::STEPS {
        assert!(
            v["steps"][step]["count"].as_u64().unwrap() > 0,
            "{step}: {v:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_compares_a_deep_queue_and_cleans_up() {
    let b = broker(LOAD_CONFIG).await;
    let args = [
        "queue-depth",
        "--url",
        &b.ws_url(),
        "--cases",
        "200",
        "--waiting",
        "20",
        "--seconds",
        "1",
    ];
    let (v, table) = run_with_table("queue-depth", &args).await;
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(v["aborted"].is_null(), "{v:#}");
    assert_eq!(v["fill"]["cases"], 200, "{v:#}");
    assert_eq!(v["fill"]["customers"], 20, "{v:#}");
    assert_eq!(v["cleanup"]["left"], 0, "{v:#}");
    // Every waiting customer was told its place in the line.
    assert!(v["queue_pushes"].as_u64().unwrap() >= 20, "{v:#}");
    for op in casebroker_loadtest::queue_depth::OPS {
        for phase in ["empty", "deep"] {
            let m = &v[phase][op];
            assert!(m["ops"].as_u64().unwrap() > 0, "{phase} {op}: {v:#}");
            assert_eq!(m["errors"], 0, "{phase} {op}: {v:#}");
            assert!(m["per_sec"].is_number(), "{phase} {op}: {v:#}");
            assert!(m["p99_ms"].is_number(), "{phase} {op}: {v:#}");
        }
        assert!(v["ratios"][op].as_f64().unwrap() > 0.0, "{op}: {v:#}");
        assert!(table.contains(&format!("{op} deep/empty")), "{op}: {table}");
    }
    assert!(v["meets_target"].is_boolean(), "{v:#}");
    // The broker is left as found: a second run starts from an empty group.
    let (again, _) = run_with_table("queue-depth-again", &args).await;
    assert_eq!(again["open_before"], 0, "{again:#}");
    assert_eq!(again["failed"], 0, "{again:#}");
}
