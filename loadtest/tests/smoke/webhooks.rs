//! `webhooks`: every event delivered once and in order (signatures
//! verified; at a rate, for chosen event types only), `--receiver-only`
//! receiving what a `--no-endpoint` run changes, and the error that says
//! so when the broker refuses a loopback receiver.

use std::time::Duration;

use casebroker_loadtest::{Cli, run_cli};
use clap::Parser;
use serde_json::Value;

use super::{LOAD_CONFIG, broker, run};

/// Asserts a webhooks result: every expected delivery arrived once, in
/// order per case, none failed, and the endpoint was deleted.
fn assert_delivered(name: &str, v: &Value) {
    for key in [
        "duplicates",
        "out_of_order",
        "failures",
        "bad_signature",
        "unreadable",
        "unexpected",
        "missing",
        "lost",
    ] {
        assert_eq!(v[key], 0, "{name}: {key} in {v:#}");
    }
    assert_eq!(v["all_arrived"], true, "{name}: {v:#}");
    assert_eq!(v["endpoint_deleted"], true, "{name}: {v:#}");
    assert!(v["deliveries"].as_u64().unwrap() > 0, "{name}: {v:#}");
    assert!(v["delivered_per_sec"].is_number(), "{name}: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_once_and_in_order() {
    let b = broker(LOAD_CONFIG).await;
    let args = [
        "webhooks",
        "--url",
        &b.ws_url(),
        "--drivers",
        "2",
        "--seconds",
        "2",
        "--verify",
        "--drain",
        "20",
    ];
    let v = run("webhooks", &args).await;
    assert_delivered("webhooks", &v);
    assert_eq!(v["deliveries"], v["expected"], "{v:#}");
    // Three changes per case, each one event, each one delivery.
    assert_eq!(v["deliveries"], v["changes"], "{v:#}");
    assert_eq!(v["verify"], true, "{v:#}");
    assert!(v["p99_ms"].is_number(), "{v:#}");
    assert!(
        v["broker_attempts"]["delivered"].as_f64().unwrap() >= v["changes"].as_f64().unwrap(),
        "{v:#}"
    );
    // At a rate, and for chosen types only: closes are not sent.
    let v = run(
        "webhooks-rate",
        &[
            "webhooks",
            "--url",
            &b.ws_url(),
            "--rate",
            "300",
            "--seconds",
            "1",
            "--events",
            "case.created,case.deleted",
        ],
    )
    .await;
    assert_delivered("webhooks-rate", &v);
    assert_eq!(v["deliveries"], v["expected"], "{v:#}");
    let changes = v["changes"].as_u64().unwrap();
    assert_eq!(v["deliveries"].as_u64().unwrap() * 3, changes * 2, "{v:#}");
}

/// `--receiver-only` receives what another run changes (here `webhooks
/// --no-endpoint`, the same changes without an endpoint of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receiver_only_gets_another_runs_changes() {
    let b = broker(LOAD_CONFIG).await;
    // run_cli's future is not Send (bare holds stdout's lock): both runs
    // go on in this task.
    let receiver_args = [
        "webhooks",
        "--url",
        &b.ws_url(),
        "--receiver-only",
        "--seconds",
        "4",
    ];
    let receiver = run("webhooks-receiver", &receiver_args);
    let driver = async {
        // Wait until the receiver's endpoint is registered.
        let addr = casebroker_loadtest::target::loopback_addr(&b.ws_url()).unwrap();
        let mut http = casebroker_loadtest::http::Http::new(addr);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get("/v1/admin/webhooks", "load-admin-token")
                .await
                .unwrap();
            if r.json()["webhooks"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no endpoint registered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run(
            "webhooks-no-endpoint",
            &[
                "webhooks",
                "--url",
                &b.ws_url(),
                "--no-endpoint",
                "--seconds",
                "1",
            ],
        )
        .await
    };
    let (v, driven) = tokio::join!(receiver, driver);
    assert_eq!(driven["driver_errors"], 0, "{driven:#}");
    assert!(driven["deliveries"].is_null(), "{driven:#}");
    let changes = driven["changes"].as_u64().unwrap();
    assert!(changes > 0, "{driven:#}");
    assert_delivered("webhooks-receiver", &v);
    assert_eq!(v["deliveries"].as_u64().unwrap(), changes, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_say_so_when_the_broker_refuses_a_loopback_receiver() {
    let config = LOAD_CONFIG.replace(
        "webhook_allow_private = true",
        "webhook_allow_private = false",
    );
    let b = broker(&config).await;
    let argv = [
        "casebroker-loadtest",
        "webhooks",
        "--url",
        &b.ws_url(),
        "--seconds",
        "1",
        "--no-progress",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    let Err(e) = run_cli(cli).await else {
        panic!("a refused endpoint was not an error")
    };
    assert!(
        format!("{e:#}").contains("webhook_allow_private = true"),
        "{e:#}"
    );
}
