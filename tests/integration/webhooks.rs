//! Webhooks against a real HTTP receiver on loopback: signed Standard
//! Webhooks calls, retries on the schedule with the same `webhook-id`,
//! `Retry-After`, 410, per-case order without head-of-line blocking, the
//! delivery log, replay, the address guard, every error code; in each
//! storage mode, across kill -9, and on a cluster.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::process::Process;
use crate::util::receiver::{Hit, Receiver};
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

async fn every_event_reaches_the_endpoint_signed_and_in_order(mode: Mode) {
    let mut receiver = Receiver::start().await;
    let server = TestServer::with_extra_in(mode, FAST).await;
    let (id, secret) = add_webhook(&server, &receiver.url, json!(["*"])).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    alice
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    let created = receiver.next().await;
    let closed = receiver.next().await;
    assert_eq!(
        (created.kind(), closed.kind()),
        ("case.created", "case.closed")
    );
    for hit in [&created, &closed] {
        verify(hit, &secret);
        assert_eq!(hit.code(), code);
        assert_eq!(hit.json["data"]["company"], "acme");
        let (epoch, seq) = (
            hit.json["data"]["epoch"].as_str().unwrap(),
            hit.json["data"]["seq"].as_u64().unwrap(),
        );
        assert_eq!(hit.id, format!("msg_{epoch}_{seq}"));
        assert!(hit.json["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(
        closed.json["data"]["seq"].as_u64().unwrap(),
        created.json["data"]["seq"].as_u64().unwrap() + 1
    );
    // The log has both, succeeded.
    let (st, log) = server
        .http(
            "GET",
            &format!("/v1/admin/webhooks/{id}/deliveries"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 200, "{log}");
    let wait_until = std::time::Instant::now() + WAIT;
    loop {
        let (_, log) = server
            .http(
                "GET",
                &format!("/v1/admin/webhooks/{id}/deliveries?status=succeeded"),
                Some(ALICE),
                None,
            )
            .await;
        if log["deliveries"].as_array().unwrap().len() == 2 {
            assert_eq!(log["deliveries"][0]["type"], "case.closed", "{log}");
            assert_eq!(log["deliveries"][0]["attempts"], 1, "{log}");
            assert_eq!(log["deliveries"][0]["last_status_code"], 200, "{log}");
            break;
        }
        assert!(std::time::Instant::now() < wait_until, "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new secret: both sign for a while, so receivers can switch.
    let (st, body) = server
        .http(
            "POST",
            &format!("/v1/admin/webhooks/{id}/secret"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let rotated = body["secret"].as_str().unwrap().to_string();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    let third = code_of(&create_case(&mut alice, "support").await);
    let hit = receiver
        .next_where("after the rotation", |h| h.code() == third)
        .await;
    assert_eq!(hit.signature.split(' ').count(), 2, "{}", hit.signature);
    verify(&hit, &rotated);
    verify(&hit, &secret);
    // Only what it asked for: a `case.closed` endpoint gets no `created`.
    let mut closing = Receiver::start().await;
    add_webhook(&server, &closing.url, json!(["case.closed"])).await;
    let other = code_of(&create_case(&mut alice, "support").await);
    alice
        .ok(json!({"type": "close", "code": other}), "case")
        .await;
    let hit = closing.next().await;
    assert_eq!((hit.kind(), hit.code()), ("case.closed", other.as_str()));
}

in_every_mode!(every_event_reaches_the_endpoint_signed_and_in_order);

async fn failures_are_retried_with_the_same_id_and_410_disables(mode: Mode) {
    let mut receiver = Receiver::start().await;
    // Each message fails twice, then succeeds.
    receiver.answer(|_, retry| if retry < 2 { (500, None) } else { (200, None) });
    let server = TestServer::with_extra_in(mode, FAST).await;
    add_webhook(&server, &receiver.url, json!(["case.created"])).await;
    let mut alice = server.agent(ALICE).await;
    create_case(&mut alice, "support").await;
    let hits = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ];
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    assert!(
        hits.iter().all(|h| h.id == hits[0].id),
        "the same webhook-id"
    );

    // 429 with Retry-After: the next attempt waits for it.
    receiver.answer(|_, retry| {
        if retry == 0 {
            (429, Some(1))
        } else {
            (200, None)
        }
    });
    create_case(&mut alice, "support").await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!((first.status, second.status), (429, 200));
    assert!(
        second.at - first.at >= Duration::from_millis(900),
        "Retry-After: 1 honoured, not the 100 ms schedule"
    );

    // Never succeeding: given up after the schedule, listed as failed.
    receiver.answer(|_, _| (503, None));
    let (st, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(st, 200);
    let id = list["webhooks"][0]["id"].as_str().unwrap().to_string();
    create_case(&mut alice, "support").await;
    for _ in 0..4 {
        assert_eq!(receiver.next().await.status, 503);
    }
    let until = std::time::Instant::now() + WAIT;
    loop {
        let (_, log) = server
            .http(
                "GET",
                &format!("/v1/admin/webhooks/{id}/deliveries?status=failed"),
                Some(ALICE),
                None,
            )
            .await;
        if let Some(d) = log["deliveries"].as_array().unwrap().first() {
            assert_eq!(d["attempts"], 4, "{log}");
            assert_eq!(d["last_status_code"], 503, "{log}");
            break;
        }
        assert!(std::time::Instant::now() < until, "never failed: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 410: the endpoint is disabled, with the reason.
    receiver.answer(|_, _| (410, None));
    create_case(&mut alice, "support").await;
    assert_eq!(receiver.next().await.status, 410);
    let until = std::time::Instant::now() + WAIT;
    loop {
        let (_, list) = server
            .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
            .await;
        if list["webhooks"][0]["disabled"] == true {
            assert!(
                list["webhooks"][0]["disabled_reason"]
                    .as_str()
                    .unwrap()
                    .contains("410")
            );
            break;
        }
        assert!(std::time::Instant::now() < until, "not disabled: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

in_every_mode!(failures_are_retried_with_the_same_id_and_410_disables);

async fn a_failing_case_holds_back_only_its_own_events(mode: Mode) {
    let mut receiver = Receiver::start().await;
    // Retries for long enough that the stuck case is still being tried
    // when the other case is done.
    let retry = vec!["\"200ms\""; 20].join(", ");
    let extra = format!("webhook_allow_private = true\nwebhook_retry = [{retry}]");
    let server = TestServer::with_extra_in(mode, &extra).await;
    add_webhook(&server, &receiver.url, json!(["*"])).await;
    // Every call fails until the gate opens, except for the cases let
    // through (the free one, once it exists).
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let through = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (gate, pass) = (open.clone(), through.clone());
    receiver.answer(move |body, _| {
        let code = body["data"]["case"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if gate.load(std::sync::atomic::Ordering::SeqCst) || pass.lock().unwrap().contains(&code) {
            (200, None)
        } else {
            (500, None)
        }
    });
    let mut alice = server.agent(ALICE).await;
    let stuck = code_of(&create_case(&mut alice, "support").await);
    alice
        .ok(json!({"type": "close", "code": stuck}), "case")
        .await;
    // Another case's events all arrive meanwhile, in order.
    let free = code_of(&create_case(&mut alice, "support").await);
    through.lock().unwrap().push(free.clone());
    alice
        .ok(json!({"type": "close", "code": free}), "case")
        .await;
    let created = receiver
        .next_where("the free case created", |h| {
            h.code() == free && h.status == 200
        })
        .await;
    let closed = receiver
        .next_where("the free case closed", |h| {
            h.code() == free && h.status == 200
        })
        .await;
    assert_eq!(
        (created.kind(), closed.kind()),
        ("case.created", "case.closed")
    );
    // The stuck case: only its first event was tried; its close waits.
    let tried: Vec<Hit> = receiver
        .drain()
        .into_iter()
        .filter(|h| h.code() == stuck)
        .collect();
    assert!(
        tried.iter().all(|h| h.kind() == "case.created"),
        "{tried:?}"
    );
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = receiver
        .next_where("the stuck case's first event", |h| {
            h.code() == stuck && h.status == 200
        })
        .await;
    assert_eq!(first.kind(), "case.created");
    let then = receiver
        .next_where("the stuck case's close", |h| h.code() == stuck)
        .await;
    assert_eq!(then.kind(), "case.closed");
}

in_every_mode!(a_failing_case_holds_back_only_its_own_events);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_kill_9() {
    let mut receiver = Receiver::start().await;
    receiver.answer(|_, _| (503, None));
    let config = config_text(
        "webhook_allow_private = true\nwebhook_retry = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]",
    );
    let dir = TempDir::new("hooks-kill");
    let broker = Process::start_in(
        dir,
        Some(&config),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let resp: Value = http
        .post(url("/v1/admin/webhooks"))
        .bearer_auth(ALICE)
        .json(&json!({"url": receiver.url, "events": ["case.created"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(resp["secret"].is_string(), "{resp}");
    let mut codes = Vec::new();
    for _ in 0..3 {
        let case: Value = http
            .post(url("/v1/cases"))
            .bearer_auth(ALICE)
            .json(&json!({"group": "support", "name": "x"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        codes.push(code_of(&case));
    }
    // Each was tried (and refused) at least once: they are pending.
    let mut untried: std::collections::HashSet<String> = codes.iter().cloned().collect();
    while !untried.is_empty() {
        untried.remove(receiver.next().await.code());
    }
    let dir = broker.kill9().await;
    receiver.answer(|_, _| (200, None));
    let broker = Process::start_in(
        dir,
        Some(&config),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    broker.listening().await;
    let mut left: std::collections::HashSet<String> = codes.into_iter().collect();
    while !left.is_empty() {
        let hit = receiver.next().await;
        if hit.status == 200 {
            left.remove(hit.code());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_call_lost_with_its_node_is_taken_over() {
    let redis = crate::util::redis::RedisServer::start();
    let mut receiver = Receiver::start().await;
    // The first call of each message never gets an answer.
    receiver.answer(|_, retry| if retry == 0 { (0, None) } else { (200, None) });
    let cluster = format!(
        "webhook_allow_private = true\nwebhook_timeout = \"1s\"\n[cluster]\nredis_url = \"{}\"\nnode_timeout = \"3s\"\n",
        redis.url()
    );
    let a = Process::start(
        Some(&config_text(&cluster)),
        &["--node-id", "a", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = a.listening().await;
    let http = reqwest::Client::new();
    let (st, _) = {
        let r = http
            .post(format!("http://{addr}/v1/admin/webhooks"))
            .bearer_auth(ALICE)
            .json(&json!({"url": receiver.url, "events": ["case.created"]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(st, 201);
    let case: Value = http
        .post(format!("http://{addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": "support", "name": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = code_of(&case);
    // Node a makes the call, which hangs; then a dies with it.
    let first = receiver.next().await;
    assert_eq!((first.code(), first.retry), (code.as_str(), 0));
    let b = TestServer::with_config(config_with(
        &cluster.replace("[cluster]", "[cluster]\nnode_id = \"b\""),
    ))
    .await;
    a.kill9().await;
    // Node b sends it once a's hold on it runs out, with the same id.
    let again = receiver
        .next_where("the call taken over", |h| h.id == first.id)
        .await;
    assert_eq!((again.status, again.retry), (200, 1));
    // And b sends new events itself.
    let mut alice = b.agent(ALICE).await;
    let next = code_of(&create_case(&mut alice, "support").await);
    receiver
        .next_where("a new event from b", |h| {
            h.code() == next && h.status == 200
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_declared_in_the_file_is_the_files_and_survives_restarts_as_it_says() {
    let mut first = Receiver::start().await;
    let mut second = Receiver::start().await;
    let dir = TempDir::new("hooks-config");
    let secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";
    let config = |url: &str| {
        let mut c = config_with(&format!(
            "webhook_allow_private = true\ndata_dir = \"{}\"",
            dir.path().display()
        ));
        let text = format!(
            "webhook_allow_private = true\n[[companies]]\nid = \"x\"\ngroups = [{{ id = \"g\" }}]\n[[companies.webhooks]]\nid = \"helpdesk\"\nurl = \"{url}\"\nevents = [\"case.created\"]\nsecret = \"{secret}\"\n"
        );
        let extra: casebroker::Config = casebroker::Config::from_toml(&text).unwrap();
        c.companies[0].webhooks = extra.companies[0].webhooks.clone();
        c
    };
    let server = TestServer::with_config(config(&first.url)).await;
    let mut alice = server.agent(ALICE).await;
    create_case(&mut alice, "support").await;
    let hit = first.next().await;
    verify(&hit, secret);
    let path = "/v1/admin/webhooks/helpdesk";
    let (st, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(list["webhooks"][0]["source"], "config", "{list}");
    for (method, p, body) in [
        (
            "PATCH",
            path.to_string(),
            Some(json!({"url": "https://elsewhere.example.com/"})),
        ),
        ("DELETE", path.to_string(), None),
        ("POST", format!("{path}/secret"), None),
    ] {
        let (st, body) = server.http(method, &p, Some(ALICE), body).await;
        assert_eq!(st, 409, "{method} {p}: {body}");
        assert!(body["message"].as_str().unwrap().contains("config file"));
    }
    // Disabling it is the API's to do, and a restart keeps it disabled.
    let (st, _) = server
        .http("PATCH", path, Some(ALICE), Some(json!({"disabled": true})))
        .await;
    assert_eq!(st, 200);
    drop(alice);
    server.stop().await;
    // The file now points it elsewhere: the file's URL is used.
    let server = TestServer::with_config(config(&second.url)).await;
    let (_, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(list["webhooks"][0]["disabled"], true, "{list}");
    assert_eq!(list["webhooks"][0]["url"], second.url.as_str(), "{list}");
    let (st, _) = server
        .http("PATCH", path, Some(ALICE), Some(json!({"disabled": false})))
        .await;
    assert_eq!(st, 200);
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    let hit = second
        .next_where("on the file's new URL", |h| h.code() == code)
        .await;
    verify(&hit, secret);
    assert!(first.drain().is_empty(), "nothing more on the old URL");
    server.stop().await;
}

async fn chat_lines_are_sent_only_to_endpoints_that_name_them(mode: Mode) {
    let mut chat = Receiver::start().await;
    let mut all = Receiver::start().await;
    let server = TestServer::with_extra_in(mode, FAST).await;
    add_webhook(&server, &chat.url, json!(["chat.message"])).await;
    add_webhook(&server, &all.url, json!(["*"])).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    customer
        .ok(
            json!({"type": "chat", "code": code, "text": "my printer is on fire"}),
            "sent",
        )
        .await;
    let hit = chat.next().await;
    assert_eq!(hit.kind(), "chat.message");
    assert_eq!(hit.json["data"]["code"], code.as_str());
    assert_eq!(hit.json["data"]["text"], "my printer is on fire");
    assert_eq!(hit.json["data"]["from"]["role"], "customer");
    // "*" is every case event, not chat lines.
    let created = all.next().await;
    assert_eq!(created.kind(), "case.created");
    let mut alice = server.agent(ALICE).await;
    alice
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    let next = all
        .next_where("the close", |h| h.kind() != "case.updated")
        .await;
    assert_eq!(next.kind(), "case.closed", "no chat.message for \"*\"");
}

in_every_mode!(chat_lines_are_sent_only_to_endpoints_that_name_them);
