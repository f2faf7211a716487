//! The webhook admin API: every bad request gets its code, and replay sends
//! the events after a seq again with their ids.

use crate::util::receiver::Receiver;

use super::*;

async fn every_bad_webhook_request_gets_its_code(mode: Mode) {
    let receiver = Receiver::start().await;
    let server = TestServer::start_in(mode).await;
    let post = |token: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .http("POST", "/v1/admin/webhooks", Some(token), Some(body))
                .await
        }
    };
    let ok = json!({"url": "https://hooks.example.com/in", "events": ["*"]});
    assert_error(post(BOB, ok.clone()).await, 403, "forbidden", "admins");
    // Loopback, private, link-local (metadata) and odd URLs are refused.
    for url in [
        receiver.url.as_str(),
        "http://localhost:9/x",
        "http://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[fd00::1]/x",
        "ftp://hooks.example.com/x",
        "not a url",
        "https://user:pw@hooks.example.com/x",
    ] {
        assert_error(
            post(ALICE, json!({"url": url, "events": ["*"]})).await,
            400,
            "bad_request",
            "url",
        );
    }
    for (body, mentions) in [
        (
            json!({"url": "https://hooks.example.com/in", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/in", "events": ["case.nope"]}),
            "events",
        ),
        (json!({"url": "https://hooks.example.com/in"}), "events"),
        (json!({"events": ["*"]}), "url"),
        (
            json!({"url": "https://hooks.example.com/in", "events": ["*"], "secret": "x"}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com/in", "events": ["*"], "description": "d".repeat(201)}),
            "description",
        ),
    ] {
        assert_error(post(ALICE, body).await, 400, "bad_request", mentions);
    }
    let (st, body) = post(ALICE, ok).await;
    assert_eq!(st, 201, "{body}");
    let id = body["webhook"]["id"].as_str().unwrap().to_string();
    assert!(
        !body["webhook"].to_string().contains("whsec_"),
        "no secret in the object"
    );
    let (_, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert!(!list.to_string().contains("whsec_"), "never listed: {list}");
    // Another company's endpoint is not found; so is an unknown one.
    for (token, path) in [
        (GINA, format!("/v1/admin/webhooks/{id}")),
        (ALICE, "/v1/admin/webhooks/wh_nope".to_string()),
    ] {
        assert_error(
            server
                .http("PATCH", &path, Some(token), Some(json!({"disabled": true})))
                .await,
            404,
            "not_found",
            "",
        );
        assert_error(
            server.http("DELETE", &path, Some(token), None).await,
            404,
            "not_found",
            "",
        );
    }
    assert_error(
        server
            .http(
                "GET",
                &format!("/v1/admin/webhooks/{id}/deliveries?status=lost"),
                Some(ALICE),
                None,
            )
            .await,
        400,
        "bad_request",
        "status",
    );
    assert_error(
        server
            .http(
                "POST",
                &format!("/v1/admin/webhooks/{id}/replay"),
                Some(ALICE),
                Some(json!({"after": 1})),
            )
            .await,
        400,
        "bad_request",
        "after",
    );
    let (st, _) = server
        .http(
            "DELETE",
            &format!("/v1/admin/webhooks/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 204);
}

in_every_mode!(every_bad_webhook_request_gets_its_code);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_the_events_after_a_seq_again_with_their_ids() {
    let mut receiver = Receiver::start().await;
    let server = TestServer::with_extra_in(Mode::Journal, FAST).await;
    let (id, _) = add_webhook(&server, &receiver.url, json!(["case.created"])).await;
    let mut alice = server.agent(ALICE).await;
    let a = code_of(&create_case(&mut alice, "support").await);
    let b = code_of(&create_case(&mut alice, "support").await);
    let first = receiver.next_where("a", |h| h.code() == a).await;
    let second = receiver.next_where("b", |h| h.code() == b).await;
    let after = first.json["data"]["seq"].as_u64().unwrap();
    let (st, body) = server
        .http(
            "POST",
            &format!("/v1/admin/webhooks/{id}/replay"),
            Some(ALICE),
            Some(json!({"after_seq": after})),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["queued"], 1, "{body}");
    let again = receiver.next().await;
    assert_eq!(again.code(), b);
    assert_eq!(
        again.id, second.id,
        "the same webhook-id: receivers deduplicate"
    );
}
