//! Webhooks against a real HTTP receiver on loopback: signed Standard
//! Webhooks calls, retries on the schedule with the same `webhook-id`,
//! `Retry-After`, 410, per-case order without head-of-line blocking, an
//! endpoint that hangs slowing no other and disabled at `webhook_pending`,
//! the delivery log, replay, the address guard, every error code; in each
//! storage mode, across kill -9, and on a cluster.

#[path = "webhooks/api.rs"]
mod api;
#[path = "webhooks/delivery.rs"]
mod delivery;
#[path = "webhooks/persistence.rs"]
mod persistence;

use serde_json::{Value, json};

use crate::util::receiver::Hit;
use crate::util::*;

/// Fast retries and loopback receivers, for tests.
const FAST: &str =
    "webhook_allow_private = true\nwebhook_retry = [\"100ms\", \"100ms\", \"100ms\"]";

/// Adds an endpoint for `events`; returns its id and secret.
async fn add_webhook(server: &TestServer, url: &str, events: Value) -> (String, String) {
    let (st, body) = server
        .http(
            "POST",
            "/v1/admin/webhooks",
            Some(ALICE),
            Some(json!({"url": url, "events": events})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{body}");
    (body["webhook"]["id"].as_str().unwrap().to_string(), secret)
}

/// Checks a call's Standard Webhooks signature with the secret.
fn verify(hit: &Hit, secret: &str) {
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", hit.id.parse().unwrap());
    headers.insert("webhook-timestamp", hit.timestamp.parse().unwrap());
    headers.insert("webhook-signature", hit.signature.parse().unwrap());
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(hit.body.as_bytes(), &headers)
        .unwrap_or_else(|e| panic!("the signature does not verify: {e:?}"));
    let mut tampered = hit.body.clone();
    tampered.push(' ');
    assert!(
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(tampered.as_bytes(), &headers)
            .is_err(),
        "a changed body must not verify"
    );
}
