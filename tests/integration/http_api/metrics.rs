//! Health and metrics over HTTP: `/metrics` tracking connections, cases and
//! events, and `metrics_listen` serving it alone on its own listener.

use std::time::Duration;

use serde_json::json;

use super::*;

// 7. Health and metrics ------------------------------------------------------

#[tokio::test]
async fn metrics_track_connections_cases_and_events() {
    let server = TestServer::start().await;
    const AGENTS: &str = "casebroker_connections{role=\"agent\"}";
    const NEW: &str = "casebroker_cases{status=\"new\"}";
    const CLOSED: &str = "casebroker_cases{status=\"closed\"}";
    const EVENTS: &str = "casebroker_events_total";

    let text = scrape(&server).await;
    assert_eq!(metric(&text, AGENTS), Some(0.0), "{text}");
    assert_eq!(metric(&text, NEW), Some(0.0), "{text}");
    let events0 = metric(&text, EVENTS).unwrap_or_else(|| panic!("no {EVENTS}:\n{text}"));

    let bob = server.agent(BOB).await;
    wait_metric(&server, AGENTS, "1", |v| v == 1.0).await;

    let a = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    let b = code_of(&create(&server, ALICE, json!({"group": "sales"})).await);
    let text = scrape(&server).await;
    assert_eq!(metric(&text, NEW), Some(2.0), "{text}");
    let events1 = metric(&text, EVENTS).expect("events counter");
    assert!(
        events1 > events0,
        "events_total grew: {events0} -> {events1}"
    );

    let (status, body) = server
        .http("POST", &format!("/v1/cases/{a}/close"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(&server).await;
    assert_eq!(metric(&text, NEW), Some(1.0), "{text}");
    assert_eq!(metric(&text, CLOSED), Some(1.0), "{text}");
    let events2 = metric(&text, EVENTS).expect("events counter");
    assert!(
        events2 > events1,
        "events_total grew: {events1} -> {events2}"
    );

    for secret in [
        "acme".to_string(),
        "alice".to_string(),
        a.clone(),
        digits_of(&a),
        b.clone(),
        digits_of(&b),
    ] {
        assert!(!text.contains(&secret), "metrics mention {secret}:\n{text}");
    }

    bob.close().await;
    wait_metric(&server, AGENTS, "0", |v| v == 0.0).await;
}

/// `metrics_listen`: `/metrics` alone on its own listener, moving with the
/// main one's traffic; nothing else is served there, and the main listener
/// no longer serves it.
#[tokio::test]
async fn metrics_can_be_served_on_their_own_listener() {
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, metrics_addr) = (main.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(casebroker::run_with_metrics(
        main,
        Some(metrics),
        config_with(""),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let created = http
        .post(format!("http://{main_addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": "support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let text = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("casebroker_cases{status=\"new\"} 1"),
        "{text}"
    );
    let other = http
        .get(format!("http://{metrics_addr}/v1/cases"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves /metrics alone"
    );
    let public = http
        .get(format!("http://{main_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "with a listener of its own, /metrics is off the main one"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), broker)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
