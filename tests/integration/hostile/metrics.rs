//! The metrics the hostile clients move: messages and bytes in and out,
//! push latency, rate-limited disconnects, and the build and process
//! gauges.

use super::*;

// 13. Metrics move --------------------------------------------------------------------------

#[tokio::test]
async fn metrics_move() {
    const IN: &str = "casebroker_messages_total{direction=\"in\"}";
    const OUT: &str = "casebroker_messages_total{direction=\"out\"}";
    const BYTES_IN: &str = "casebroker_bytes_total{direction=\"in\"}";
    const BYTES_OUT: &str = "casebroker_bytes_total{direction=\"out\"}";
    const LATENCY: &str = "casebroker_push_latency_seconds_count";
    let server =
        TestServer::with_config(config_with("messages_per_second = 5\nmessage_burst = 5")).await;
    let t0 = scrape(&server).await;
    let build = format!(
        "casebroker_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&t0, &build), 1.0, "{t0}");
    assert!(value(&t0, "process_resident_memory_bytes") > 0.0, "{t0}");
    let rl0 = value(&t0, &disconnects("rate_limited"));
    let lat0 = value(&t0, LATENCY);

    // 2 hellos, 1 subscribe, 3 create_case in; 2 welcomes, a snapshot, 3
    // replies and 3 events out.
    let mut alice = server.agent(ALICE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    let mut bob = server.agent(BOB).await;
    for _ in 0..3 {
        create_case(&mut bob, "support").await;
    }
    for _ in 0..3 {
        alice.wait_type("event").await;
    }
    // Writes are counted right after the flush: poll for the last ones.
    let out0 = value(&t0, OUT);
    wait_metric(&server, OUT, ">= 9 more", |v| v >= out0 + 9.0).await;
    let t1 = scrape(&server).await;
    assert!(value(&t1, IN) >= value(&t0, IN) + 6.0, "{t1}");
    assert!(value(&t1, BYTES_IN) > value(&t0, BYTES_IN) + 100.0, "{t1}");
    assert!(
        value(&t1, BYTES_OUT) > value(&t0, BYTES_OUT) + 1000.0,
        "{t1}"
    );

    // A flood closed with 4002 is counted.
    let mut flooder = customer_from(&server, None, &[]).await;
    flooder
        .burst((0..40).map(|i| json!({"type": "ping", "id": i})))
        .await;
    assert_eq!(flooder.closed().await.0, Closed::Code(4002));
    wait_metric(&server, &disconnects("rate_limited"), "one more", |v| {
        v >= rl0 + 1.0
    })
    .await;

    // Every event written to alice's dashboard is timed.
    wait_metric(&server, LATENCY, ">= 3 more", |v| v >= lat0 + 3.0).await;
}
