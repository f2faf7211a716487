//! The fan-out runs: `fanout` as fast as the dashboards keep up (with its
//! `--plot`) and at a fixed rate, and `mixed`, the same fan-out beside
//! connected idle customers; every dashboard must get every event, in
//! order.

use super::{LOAD_CONFIG, assert_complete, broker, run, scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_as_fast_as_possible_loses_nothing() {
    let b = broker(LOAD_CONFIG).await;
    let svg = scratch("fanout-plot").join("latency.svg");
    let svg_arg = svg.to_str().unwrap().to_string();
    let v = run(
        "fanout",
        &[
            "fanout",
            "--url",
            &b.ws_url(),
            "--dashboards",
            "8",
            "--seconds",
            "2",
            "--plot",
            &svg_arg,
        ],
    )
    .await;
    assert_complete("fanout", &v);
    let plot = std::fs::read_to_string(&svg).expect("--plot wrote its file");
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_at_a_rate_loses_nothing() {
    let b = broker(LOAD_CONFIG).await;
    let v = run(
        "fanout-rate",
        &[
            "fanout",
            "--url",
            &b.ws_url(),
            "--dashboards",
            "5",
            "--seconds",
            "2",
            "--rate",
            "300",
        ],
    )
    .await;
    assert_complete("fanout-rate", &v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_loses_nothing_under_idle_load() {
    let b = broker(LOAD_CONFIG).await;
    let v = run(
        "mixed",
        &[
            "mixed",
            "--url",
            &b.ws_url(),
            "--dashboards",
            "6",
            "--customers",
            "60",
            "--rate",
            "100",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_complete("mixed", &v);
    assert_eq!(v["customers"], 60, "{v:#}");
}
