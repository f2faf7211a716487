//! Deliveries: every event reaches the endpoint signed and in order;
//! failures are retried with the same `webhook-id` and 410 disables the
//! endpoint; a failing case holds back only its own events; chat lines go
//! only to endpoints that name them; an endpoint whose calls hang slows no
//! other endpoint and is disabled once `webhook_pending` deliveries wait;
//! a redirect is not followed.

use std::time::Duration;

use crate::util::receiver::Receiver;

use super::*;

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

async fn an_endpoint_that_hangs_slows_no_other_and_is_disabled_at_its_bound(mode: Mode) {
    let mut dead = Receiver::start().await;
    let mut live = Receiver::start().await;
    // Every call to `dead` hangs past the per-attempt timeout.
    dead.answer(|_, _| (0, None));
    let extra = "webhook_allow_private = true\nwebhook_timeout = \"1s\"\n\
                 webhook_retry = [\"10s\"]\nwebhook_pending = 3";
    let server = TestServer::with_extra_in(mode, extra).await;
    let (dead_id, _) = add_webhook(&server, &dead.url, json!(["*"])).await;
    add_webhook(&server, &live.url, json!(["*"])).await;
    let mut alice = server.agent(ALICE).await;
    // Each case's event reaches the live endpoint while the dead one's
    // calls hang (the next case is made once it has: the live endpoint
    // never has more than one delivery waiting, far from its bound).
    for _ in 0..4 {
        let code = code_of(&create_case(&mut alice, "support").await);
        let hit = live
            .next_where("an event for the live endpoint", |h| h.status == 200)
            .await;
        assert_eq!((hit.kind(), hit.code()), ("case.created", code.as_str()));
    }
    // The dead endpoint was called (its calls hang), and the fourth event
    // found three of its deliveries waiting: it is disabled, saying why.
    dead.next_where("a call to the dead endpoint", |_| true)
        .await;
    let (st, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "{list}");
    let hooks = list["webhooks"].as_array().unwrap();
    let d = hooks.iter().find(|w| w["id"] == dead_id.as_str()).unwrap();
    assert_eq!(d["disabled"], true, "{list}");
    let why = d["disabled_reason"].as_str().unwrap();
    assert!(why.contains("webhook_pending"), "{why}");
    let other = hooks.iter().find(|w| w["id"] != dead_id.as_str()).unwrap();
    assert_eq!(other["disabled"], false, "{list}");
}

in_every_mode!(an_endpoint_that_hangs_slows_no_other_and_is_disabled_at_its_bound);

async fn a_redirect_is_not_followed_and_counts_as_a_failure(mode: Mode) {
    let mut elsewhere = Receiver::start().await;
    let mut endpoint = Receiver::start().await;
    endpoint.locate(&elsewhere.url);
    endpoint.answer(|_, retry| if retry == 0 { (307, None) } else { (200, None) });
    let server = TestServer::with_extra_in(mode, FAST).await;
    add_webhook(&server, &endpoint.url, json!(["*"])).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    let first = endpoint.next().await;
    assert_eq!((first.status, first.code()), (307, code.as_str()));
    // Not followed: tried again at the same endpoint, with the same id.
    let again = endpoint.next().await;
    assert_eq!((again.status, again.retry), (200, 1));
    assert_eq!(again.id, first.id);
    // A call that followed the redirect would have reached `elsewhere`
    // before the broker had the answer it retried after.
    assert!(elsewhere.drain().is_empty(), "the redirect was followed");
}

in_every_mode!(a_redirect_is_not_followed_and_counts_as_a_failure);
