//! Sessions and seats: the status derived from the two seats and the pushes
//! it causes, the customer seat and its resume token, chat and signal relay,
//! takeover, concurrent claims, close, delete, expiry, manual assignment and
//! `request_help`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::util::*;

/// Parses a wire time, checking the contract's form: RFC 3339 UTC with `Z`
/// and millisecond precision (`2024-05-01T12:34:56.789Z`).
fn wire_time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    assert_eq!(s.len(), 24, "RFC 3339 with milliseconds: {s}");
    assert!(s.ends_with('Z'), "UTC with Z: {s}");
    assert_eq!(&s[19..20], ".", "millisecond precision: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// Waits until the wall clock is at least one millisecond past `t`, so that
/// the next change gets a later `updated_at` (times have ms precision).
async fn tick_past(t: &Value) {
    let t = wire_time(t) + chrono::Duration::milliseconds(1);
    let deadline = tokio::time::Instant::now() + WAIT;
    while Utc::now() < t {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock did not pass {t}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Checks the case's status and seats over HTTP and that `updated_at` moved
/// past `last`; returns the new `updated_at`.
async fn check_case(
    server: &TestServer,
    code: &str,
    status: &str,
    customer: bool,
    supporter: bool,
    last: &Value,
) -> Value {
    let case = get_case(server, code).await;
    assert_eq!(case["status"], status, "{case}");
    assert_eq!(case["customer_connected"], customer, "{case}");
    assert_eq!(case["supporter_connected"], supporter, "{case}");
    assert!(
        wire_time(&case["updated_at"]) > wire_time(last),
        "updated_at did not change from {last}: {case}"
    );
    case["updated_at"].clone()
}

fn assert_status(v: &Value, code: &str, status: &str, customer: bool, supporter: bool) {
    assert_eq!(v["type"], "status", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert_eq!(v["customer_connected"], customer, "{v}");
    assert_eq!(v["supporter_connected"], supporter, "{v}");
}

/// Waits for a `status` push with this status (earlier ones may precede
/// it), then drops everything received before a `pong`, so that the next
/// `status` read is one caused by what the test does next.
async fn settle_on(ws: &mut WsClient, code: &str, status: &str) {
    let st = ws
        .wait_for(status, |v| v["type"] == "status" && v["status"] == status)
        .await;
    assert_eq!(st["code"], code, "{st}");
    ws.sync().await;
    ws.clear();
}

fn is_ended(v: &Value, code: &str, reason: &str) -> bool {
    v["type"] == "ended" && v["code"] == code && v["reason"] == reason
}

fn is_hex_token(t: &Value) -> bool {
    t.as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn has_type(msgs: &std::collections::VecDeque<Value>, ty: &str) -> bool {
    msgs.iter().any(|m| m["type"] == ty)
}

/// Waits for the customer connection to be closed with 1000 after an `ended`
/// with `reason`.
async fn expect_ended_and_closed(ws: &mut WsClient, code: &str, reason: &str) {
    let (how, seen) = ws.closed().await;
    assert_eq!(how, Closed::Code(1000), "seen before the close: {seen:?}");
    assert!(
        seen.iter().any(|v| is_ended(v, code, reason)),
        "no ended {reason} before the close: {seen:?}"
    );
}

// 1. Status transitions and their pushes.

async fn status_follows_the_seats_through_the_lifecycle(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    let case = create_case(&mut bob, "support").await;
    let code = code_of(&case);
    assert_eq!(case["status"], "new", "{case}");
    assert_eq!(case["customer_connected"], false);
    assert_eq!(case["supporter_connected"], false);
    assert_eq!(case["source"], "manual");
    assert_eq!(case["created_by"], "bob");
    assert_eq!(case["assignee"], Value::Null);
    assert_eq!(case["assigned_at"], Value::Null);
    assert_eq!(get_case(&server, &code).await["status"], "new");
    let mut last = case["updated_at"].clone();

    // new → pending: the customer joins and is told.
    tick_past(&last).await;
    let mut customer = server.customer().await;
    let joined = customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(joined["code"], code);
    assert_eq!(joined["case"]["status"], "pending", "{joined}");
    assert_eq!(joined["case"]["customer_connected"], true);
    assert_eq!(joined["case"]["supporter_connected"], false);
    let token = joined["resume_token"].clone();
    assert!(is_hex_token(&token), "{joined}");
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    last = check_case(&server, &code, "pending", true, false, &last).await;

    // pending → in_progress: the agent joins; both seats are told.
    tick_past(&last).await;
    let j = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(j["code"], code);
    assert_eq!(j["case"]["status"], "in_progress", "{j}");
    assert_eq!(j["case"]["assignee"], "bob");
    assert_eq!(j["case"]["customer_connected"], true);
    assert_eq!(j["case"]["supporter_connected"], true);
    wire_time(&j["case"]["assigned_at"]);
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
    last = check_case(&server, &code, "in_progress", true, true, &last).await;

    // in_progress → pending: the agent leaves.
    tick_past(&last).await;
    let left = bob.ok(json!({"type": "leave", "code": code}), "left").await;
    assert_eq!(left["code"], code);
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    last = check_case(&server, &code, "pending", true, false, &last).await;

    // Back to in_progress, then the agent's connection drops.
    tick_past(&last).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
    last = check_case(&server, &code, "in_progress", true, true, &last).await;
    tick_past(&last).await;
    drop(bob);
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    last = check_case(&server, &code, "pending", true, false, &last).await;

    // Nobody seated, but someone was: still pending, not new.
    tick_past(&last).await;
    customer.ok(json!({"type": "leave"}), "left").await;
    last = check_case(&server, &code, "pending", false, false, &last).await;
    tick_past(&last).await;
    let again = customer
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(again["resume_token"], token);
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    last = check_case(&server, &code, "pending", true, false, &last).await;

    // → closed: the seat gets `ended`, then the customer is closed with 1000.
    tick_past(&last).await;
    let mut alice = server.agent(ALICE).await;
    let closed = alice
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    assert_eq!(closed["case"]["status"], "closed", "{closed}");
    assert_eq!(closed["case"]["closed_by"], "alice");
    wire_time(&closed["case"]["closed_at"]);
    expect_ended_and_closed(&mut customer, &code, "closed").await;
    check_case(&server, &code, "closed", false, false, &last).await;
}

// 2. Code normalisation.

async fn codes_are_accepted_without_dashes_in_any_case_and_with_spaces(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits.len(), 8, "{code}");

    let mut customer = server.customer().await;
    let joined = customer
        .ok(
            json!({"type": "join", "code": format!("S{digits}")}),
            "joined",
        )
        .await;
    assert_eq!(joined["code"], code, "the reply carries the canonical code");
    let token = joined["resume_token"].clone();

    let mut second = server.customer().await;
    let rejoined = second
        .ok(
            json!({"type": "join", "code": format!("s{digits}"), "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(rejoined["code"], code);

    let mut bob = server.agent(BOB).await;
    let spaced = format!("s{} {} {}", &digits[0..2], &digits[2..5], &digits[5..8]);
    let j = bob
        .ok(json!({"type": "join", "code": spaced}), "joined")
        .await;
    assert_eq!(j["code"], code);
    assert_eq!(j["case"]["assignee"], "bob");
    settle_on(&mut customer, &code, "in_progress").await;

    let upper = format!("S{}-{}-{}", &digits[0..2], &digits[2..5], &digits[5..8]);
    let sent = bob
        .ok(json!({"type": "chat", "code": upper, "text": "hi"}), "sent")
        .await;
    assert_eq!(sent["code"], code);
    assert_eq!(customer.wait_type("chat").await["text"], "hi");
    assert_eq!(get_case(&server, &format!("S{digits}")).await["code"], code);
}

// 3. Seat conflict and the resume token.

async fn the_customer_seat_is_held_by_its_resume_token(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);

    let mut c1 = server.customer().await;
    let joined = c1.ok(json!({"type": "join", "code": code}), "joined").await;
    let token = joined["resume_token"].clone();
    assert!(is_hex_token(&token), "128-bit hex resume token: {joined}");

    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );

    // A second connection with the code alone, or a wrong token: conflict.
    let mut c2 = server.customer().await;
    c2.err(json!({"type": "join", "code": code}), "conflict")
        .await;
    c2.err(
        json!({"type": "join", "code": code, "resume_token": "0".repeat(32)}),
        "conflict",
    )
    .await;
    // With the token: joined, and the same token back.
    let again = c2
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(again["resume_token"], token);
    assert_eq!(again["code"], code);

    // One of the two connections leaves: the seat is still held.
    c1.ok(json!({"type": "leave"}), "left").await;
    bob.sync().await;
    assert!(!has_type(bob.pending(), "status"), "{:?}", bob.pending());
    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "in_progress", "{case}");
    assert_eq!(case["customer_connected"], true, "{case}");

    // The last one drops (no close frame): the seat is left at once.
    drop(c2);
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "pending",
        false,
        true,
    );
    let case = get_case(&server, &code).await;
    assert_eq!(case["customer_connected"], false, "{case}");

    // Within seat_grace the code alone is refused; the token still works.
    let mut c3 = server.customer().await;
    c3.err(json!({"type": "join", "code": code}), "conflict")
        .await;
    let back = c3
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(back["resume_token"], token, "unchanged on every rejoin");
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
}

async fn after_seat_grace_the_code_alone_takes_the_seat_with_a_new_token(mode: Mode) {
    let server = TestServer::with_extra_in(mode, "seat_grace = \"200ms\"").await;
    let (c1, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let old = joined["resume_token"].clone();
    assert!(is_hex_token(&old), "{joined}");

    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
    drop(c1);
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "pending",
        false,
        true,
    );

    // Retry until the grace is over (a condition, bounded by a deadline).
    let mut c2 = server.customer().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let joined = loop {
        let reply = c2.request(json!({"type": "join", "code": code})).await;
        if reply["type"] == "joined" {
            break reply;
        }
        assert_eq!(reply["type"], "error", "{reply}");
        assert!(
            reply["code"] == "conflict" || reply["code"] == "rate_limited",
            "{reply}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the seat was still reserved long after seat_grace: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let new = joined["resume_token"].clone();
    assert!(is_hex_token(&new), "{joined}");
    assert_ne!(new, old, "a new token is issued after seat_grace");
    assert_status(
        &bob.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );

    // The seat now belongs to the new token, not the old one.
    let mut c3 = server.customer().await;
    c3.err(
        json!({"type": "join", "code": code, "resume_token": old}),
        "conflict",
    )
    .await;
    let j = c3
        .ok(
            json!({"type": "join", "code": code, "resume_token": new}),
            "joined",
        )
        .await;
    assert_eq!(j["resume_token"], new);
}

// 4. Several connections hold one seat.

async fn one_agent_tab_closing_keeps_the_supporter_seat(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let a = code_of(&create_case(&mut alice, "support").await);
    let b = code_of(&create_case(&mut alice, "support").await);
    let mut ca = server.customer().await;
    ca.ok(json!({"type": "join", "code": a}), "joined").await;
    let mut cb = server.customer().await;
    cb.ok(json!({"type": "join", "code": b}), "joined").await;

    let mut tab1 = server.agent(BOB).await;
    let mut tab2 = server.agent(BOB).await;
    tab1.ok(json!({"type": "join", "code": a}), "joined").await;
    tab1.ok(json!({"type": "join", "code": b}), "joined").await;
    let j = tab2.ok(json!({"type": "join", "code": a}), "joined").await;
    assert_eq!(j["case"]["assignee"], "bob");
    ca.wait_for("in_progress", |v| {
        v["type"] == "status" && v["status"] == "in_progress"
    })
    .await;
    cb.wait_for("in_progress", |v| {
        v["type"] == "status" && v["status"] == "in_progress"
    })
    .await;
    ca.sync().await;
    ca.clear();

    // tab1 closes. It was the only supporter connection in b, so b's
    // customer is told; its disconnect was handled in one step for a and b.
    tab1.close().await;
    assert_status(&cb.wait_type("status").await, &b, "pending", true, false);
    ca.sync().await;
    assert!(
        !has_type(ca.pending(), "status"),
        "the supporter seat of a is still held by tab2: {:?}",
        ca.pending()
    );
    let case = get_case(&server, &a).await;
    assert_eq!(case["status"], "in_progress", "{case}");
    assert_eq!(case["supporter_connected"], true, "{case}");

    // tab2 still speaks for the seat; when it leaves, the seat is empty.
    tab2.ok(
        json!({"type": "chat", "code": a, "text": "still here"}),
        "sent",
    )
    .await;
    assert_eq!(ca.wait_type("chat").await["text"], "still here");
    tab2.ok(json!({"type": "leave", "code": a}), "left").await;
    assert_status(&ca.wait_type("status").await, &a, "pending", true, false);
}

// 5. Chat and signal.

/// A MODULE case with two customer connections and two bob tabs, all seated.
async fn two_by_two(server: &TestServer) -> (String, [WsClient; 2], [WsClient; 2]) {
    let (mut c1, joined) = request_help(server, MODULE).await;
    let code = code_of(&joined);
    let mut c2 = server.customer().await;
    c2.ok(
        json!({"type": "join", "code": code, "resume_token": joined["resume_token"]}),
        "joined",
    )
    .await;
    let mut b1 = server.agent(BOB).await;
    let mut b2 = server.agent(BOB).await;
    b1.ok(json!({"type": "join", "code": code}), "joined").await;
    b2.ok(json!({"type": "join", "code": code}), "joined").await;
    for ws in [&mut c1, &mut c2, &mut b1, &mut b2] {
        ws.sync().await;
        ws.clear();
    }
    (code, [c1, c2], [b1, b2])
}

async fn chat_is_relayed_both_ways_and_not_echoed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (code, [mut c1, mut c2], [mut b1, mut b2]) = two_by_two(&server).await;

    let sent = b1
        .ok(
            json!({"type": "chat", "code": code, "text": "Olá Ana ✓"}),
            "sent",
        )
        .await;
    assert_eq!(sent["code"], code);
    for c in [&mut c1, &mut c2] {
        let chat = c.wait_type("chat").await;
        assert_eq!(chat["code"], code, "{chat}");
        assert_eq!(chat["text"], "Olá Ana ✓", "{chat}");
        assert_eq!(chat["from"]["role"], "agent", "{chat}");
        assert_eq!(chat["from"]["name"], "Bob", "{chat}");
        let at = wire_time(&chat["at"]);
        assert!((Utc::now() - at).num_seconds().abs() < 60, "{chat}");
    }
    for b in [&mut b1, &mut b2] {
        b.sync().await;
        assert!(!has_type(b.pending(), "chat"), "echoed: {:?}", b.pending());
    }

    let sent = c1
        .ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    assert_eq!(sent["code"], code);
    for b in [&mut b1, &mut b2] {
        let chat = b.wait_type("chat").await;
        assert_eq!(chat["code"], code, "{chat}");
        assert_eq!(chat["text"], "Thanks", "{chat}");
        assert_eq!(chat["from"]["role"], "customer", "{chat}");
        assert_eq!(chat["from"]["name"], "Ana", "{chat}");
        wire_time(&chat["at"]);
    }
    for c in [&mut c1, &mut c2] {
        c.sync().await;
        assert!(!has_type(c.pending(), "chat"), "echoed: {:?}", c.pending());
    }
}

async fn signal_relays_any_json_unchanged_both_ways_and_is_not_echoed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (code, [mut c1, mut c2], [mut b1, mut b2]) = two_by_two(&server).await;

    let offer = json!({
        "type": "offer",
        "sdp": "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\n",
        "candidates": [{"port": 9, "tcp": true}, null, 1.5, -3],
        "nested": {"ü": "✓", "empty": {}, "list": []}
    });
    b1.send(json!({"type": "signal", "code": code, "data": offer}))
        .await;
    for c in [&mut c1, &mut c2] {
        let sig = c.wait_type("signal").await;
        assert_eq!(sig["code"], code, "{sig}");
        assert_eq!(sig["from"]["role"], "agent", "{sig}");
        assert_eq!(sig["data"], offer, "data relayed unchanged");
    }
    for b in [&mut b1, &mut b2] {
        b.sync().await;
        assert!(
            !has_type(b.pending(), "signal"),
            "echoed: {:?}",
            b.pending()
        );
    }

    for answer in [json!(["answer", 2, {"x": null}]), json!("just a string")] {
        c2.send(json!({"type": "signal", "data": answer})).await;
        for b in [&mut b1, &mut b2] {
            let sig = b.wait_type("signal").await;
            assert_eq!(sig["code"], code, "{sig}");
            assert_eq!(sig["from"]["role"], "customer", "{sig}");
            assert_eq!(sig["data"], answer, "data relayed unchanged");
        }
        for c in [&mut c1, &mut c2] {
            c.sync().await;
            assert!(
                !has_type(c.pending(), "signal"),
                "echoed: {:?}",
                c.pending()
            );
        }
    }
}

// 6. Takeover.

async fn admin_takeover_ends_the_previous_assignee_session(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE_BOB).await;
    let code = code_of(&joined);
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    settle_on(&mut customer, &code, "in_progress").await;

    let mut alice = server.agent(ALICE).await;
    alice
        .err(json!({"type": "join", "code": code}), "conflict")
        .await;
    customer.sync().await;
    customer.clear();

    let j = alice
        .ok(
            json!({"type": "join", "code": code, "takeover": true}),
            "joined",
        )
        .await;
    assert_eq!(j["case"]["assignee"], "alice", "{j}");
    assert_eq!(j["case"]["status"], "in_progress", "{j}");
    assert_eq!(j["case"]["supporter_connected"], true, "{j}");
    let ended = bob.wait_type("ended").await;
    assert!(is_ended(&ended, &code, "reassigned"), "{ended}");

    // Bob's connection stays open but he is out of the session.
    bob.sync().await;
    let r = bob
        .request(json!({"type": "chat", "code": code, "text": "me?"}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    bob.err(json!({"type": "join", "code": code}), "conflict")
        .await;

    // The customer stays, talks to alice, and was told about the change.
    alice
        .ok(
            json!({"type": "chat", "code": code, "text": "Alice here"}),
            "sent",
        )
        .await;
    let chat = customer.wait_type("chat").await;
    assert_eq!(chat["from"]["name"], "Alice", "{chat}");
    assert!(
        !has_type(customer.pending(), "ended"),
        "{:?}",
        customer.pending()
    );
    let case = get_case(&server, &code).await;
    assert_eq!(case["assignee"], "alice", "{case}");
    assert_eq!(case["status"], "in_progress", "{case}");
    // PROTOCOL.md: on reassignment "the customer stays and gets `status`".
    let st = customer.wait_type("status").await;
    assert_status(&st, &code, "in_progress", true, true);
}

async fn a_plain_agent_cannot_join_or_take_over_someone_elses_case(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE_BOB).await;
    let code = code_of(&joined);
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;

    let mut dave = server.agent(DAVE).await;
    dave.err(json!({"type": "join", "code": code}), "conflict")
        .await;
    dave.err(
        json!({"type": "join", "code": code, "takeover": true}),
        "forbidden",
    )
    .await;
    let mut carol = server.agent(CAROL).await;
    carol
        .err(json!({"type": "join", "code": code}), "not_found")
        .await;

    bob.sync().await;
    assert!(!has_type(bob.pending(), "ended"), "{:?}", bob.pending());
    let case = get_case(&server, &code).await;
    assert_eq!(case["assignee"], "bob", "{case}");
    assert_eq!(case["supporter_connected"], true, "{case}");
    bob.ok(
        json!({"type": "chat", "code": code, "text": "still mine"}),
        "sent",
    )
    .await;
    assert_eq!(customer.wait_type("chat").await["text"], "still mine");
}

// 7. Concurrent claims.

async fn concurrent_claims_have_exactly_one_winner(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;
    for round in 0..20 {
        let code = code_of(&create_case(&mut alice, "support").await);
        let (bid, did) = (format!("bob-{round}"), format!("dave-{round}"));
        tokio::join!(
            bob.send(json!({"type": "join", "code": code, "id": bid})),
            dave.send(json!({"type": "join", "code": code, "id": did})),
        );
        let rb = bob.wait_for("bob's reply", |v| v["id"] == bid).await;
        let rd = dave.wait_for("dave's reply", |v| v["id"] == did).await;
        let winner = match (rb["type"].as_str(), rd["type"].as_str()) {
            (Some("joined"), Some("error")) => {
                assert_eq!(rd["code"], "conflict", "{rd}");
                "bob"
            }
            (Some("error"), Some("joined")) => {
                assert_eq!(rb["code"], "conflict", "{rb}");
                "dave"
            }
            _ => panic!("round {round}: not exactly one winner: {rb} / {rd}"),
        };
        let case = get_case(&server, &code).await;
        assert_eq!(case["assignee"], winner, "round {round}: {case}");
        assert_eq!(case["supporter_connected"], true, "round {round}: {case}");
        bob.clear();
        dave.clear();
    }
}

// 8. Close.

async fn close_by_assignee_creator_or_admin_ends_both_seats(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;
    let mut alice = server.agent(ALICE).await;

    // The assignee (a customer-created case routed to bob).
    let (mut customer, joined) = request_help(&server, MODULE_BOB).await;
    let code = code_of(&joined);
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let closed = bob.ok(json!({"type": "close", "code": code}), "case").await;
    assert_eq!(closed["case"]["status"], "closed", "{closed}");
    assert_eq!(closed["case"]["closed_by"], "bob", "{closed}");
    assert_eq!(closed["case"]["customer_connected"], false, "{closed}");
    assert_eq!(closed["case"]["supporter_connected"], false, "{closed}");
    wire_time(&closed["case"]["closed_at"]);
    let ended = bob
        .wait_for("ended", |v| v["type"] == "ended" && v["code"] == code)
        .await;
    assert!(is_ended(&ended, &code, "closed"), "{ended}");
    expect_ended_and_closed(&mut customer, &code, "closed").await;
    bob.sync().await; // the agent connection stays open

    // The creator, who is not the assignee.
    let code = code_of(&create_case(&mut dave, "support").await);
    let mut customer = server.customer().await;
    customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let closed = dave
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    assert_eq!(closed["case"]["closed_by"], "dave", "{closed}");
    let ended = bob
        .wait_for("ended", |v| v["type"] == "ended" && v["code"] == code)
        .await;
    assert!(is_ended(&ended, &code, "closed"), "{ended}");
    expect_ended_and_closed(&mut customer, &code, "closed").await;

    // An admin, who is neither.
    let code = code_of(&create_case(&mut bob, "support").await);
    let mut customer = server.customer().await;
    customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let closed = alice
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    assert_eq!(closed["case"]["closed_by"], "alice", "{closed}");
    assert_eq!(closed["case"]["assignee"], "bob", "{closed}");
    let ended = bob
        .wait_for("ended", |v| v["type"] == "ended" && v["code"] == code)
        .await;
    assert!(is_ended(&ended, &code, "closed"), "{ended}");
    expect_ended_and_closed(&mut customer, &code, "closed").await;
    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "closed", "{case}");
    assert_eq!(case["closed_by"], "alice", "{case}");

    // A closed case can no longer be joined by agents either.
    bob.err(json!({"type": "join", "code": code}), "conflict")
        .await;
}

async fn closed_unknown_and_deleted_codes_are_alike_not_found(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let closed = code_of(&create_case(&mut alice, "support").await);
    alice
        .ok(json!({"type": "close", "code": closed}), "case")
        .await;
    let deleted = code_of(&create_case(&mut alice, "support").await);
    alice
        .ok(json!({"type": "delete", "code": deleted}), "deleted")
        .await;
    let unknown = ["s00-000-000", "s99-999-999", "s12-345-678"]
        .into_iter()
        .find(|c| *c != closed && *c != deleted)
        .unwrap();
    let (status, _) = server
        .http("GET", &format!("/v1/cases/{unknown}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 404, "{unknown} must not exist");

    let mut customer = server.customer().await;
    let mut errors = Vec::new();
    for code in [&closed, &deleted, unknown] {
        errors.push(
            customer
                .err(json!({"type": "join", "code": code}), "not_found")
                .await,
        );
    }
    for e in &errors[1..] {
        assert_eq!(e["message"], errors[0]["message"], "alike: {errors:?}");
    }
}

async fn only_assignee_creator_or_admin_may_close_and_only_once(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;
    let mut carol = server.agent(CAROL).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut bob, "support").await);

    dave.err(json!({"type": "close", "code": code}), "forbidden")
        .await;
    carol
        .err(json!({"type": "close", "code": code}), "not_found")
        .await;
    assert_eq!(get_case(&server, &code).await["status"], "new");

    bob.ok(json!({"type": "close", "code": code}), "case").await;
    bob.err(json!({"type": "close", "code": code}), "conflict")
        .await;
    alice
        .err(json!({"type": "close", "code": code}), "conflict")
        .await;
    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "closed", "{case}");
    assert_eq!(case["closed_by"], "bob", "{case}");
}

async fn a_customer_closes_only_a_case_it_requested(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let closed = customer.ok(json!({"type": "close"}), "case").await;
    assert_eq!(closed["case"]["code"], code, "{closed}");
    assert_eq!(closed["case"]["status"], "closed", "{closed}");
    expect_ended_and_closed(&mut customer, &code, "closed").await;
    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "closed", "{case}");
    assert_eq!(case["closed_by"], "customer", "{case}");
    wire_time(&case["closed_at"]);

    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    let mut customer = server.customer().await;
    customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    customer.err(json!({"type": "close"}), "forbidden").await;
    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "pending", "{case}");
    assert_eq!(case["closed_by"], Value::Null, "{case}");
    customer.sync().await; // still connected
}

// 9. Delete.

async fn delete_ends_sessions_and_tells_subscribers(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let mut dave = server.agent(DAVE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    dave.ok(json!({"type": "subscribe"}), "snapshot").await;

    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;

    dave.err(json!({"type": "delete", "code": code}), "forbidden")
        .await;
    let deleted = alice
        .ok(json!({"type": "delete", "code": code}), "deleted")
        .await;
    assert_eq!(deleted["code"], code);

    let ended = bob.wait_type("ended").await;
    assert!(is_ended(&ended, &code, "deleted"), "{ended}");
    bob.sync().await;
    expect_ended_and_closed(&mut customer, &code, "deleted").await;
    for sub in [&mut alice, &mut dave] {
        let ev = sub
            .wait_for("deleted event", |v| {
                v["type"] == "event" && v["action"] == "deleted"
            })
            .await;
        assert_eq!(ev["case"]["code"], code, "{ev}");
    }

    let (status, _) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 404);
    bob.err(json!({"type": "join", "code": code}), "not_found")
        .await;
    let mut again = server.customer().await;
    again
        .err(json!({"type": "join", "code": code}), "not_found")
        .await;
}

// 10. Expiry.

async fn expiry_ends_sessions_and_marks_the_case_expired(mode: Mode) {
    let server = TestServer::with_extra_in(mode, "case_ttl = \"1s\"").await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    let idle = code_of(&create_case(&mut alice, "support").await);

    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;

    let ended = customer.wait_for("ended", |v| v["type"] == "ended").await;
    assert!(is_ended(&ended, &code, "expired"), "{ended}");
    let (how, _) = customer.closed().await;
    assert_eq!(how, Closed::Code(1000));
    let ended = bob.wait_for("ended", |v| v["type"] == "ended").await;
    assert!(is_ended(&ended, &code, "expired"), "{ended}");
    bob.sync().await;

    let case = get_case(&server, &code).await;
    assert_eq!(case["status"], "expired", "{case}");
    assert_eq!(case["closed_at"], Value::Null, "{case}");
    assert_eq!(case["closed_by"], Value::Null, "{case}");
    assert_eq!(case["customer_connected"], false, "{case}");
    assert_eq!(case["supporter_connected"], false, "{case}");

    // A case nobody joined expires too, and dashboards see it.
    let ev = alice
        .wait_for("idle case expired", |v| {
            v["type"] == "event" && v["case"]["code"] == idle && v["case"]["status"] == "expired"
        })
        .await;
    assert_eq!(ev["action"], "updated", "{ev}");

    let mut late = server.customer().await;
    late.err(json!({"type": "join", "code": code}), "not_found")
        .await;
    bob.err(json!({"type": "join", "code": code}), "conflict")
        .await;
    alice
        .err(json!({"type": "close", "code": code}), "conflict")
        .await;
}

// 11. Manual assignment.

async fn an_admin_assigns_to_anyone_in_the_group_or_back_to_the_line(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);

    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "dave"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "dave", "{r}");
    wire_time(&r["case"]["assigned_at"]);
    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "bob"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "bob", "{r}");

    // Carol is not in the case's group: anything else is forbidden.
    alice
        .err(
            json!({"type": "assign", "code": code, "assignee": "carol"}),
            "forbidden",
        )
        .await;
    alice
        .err(
            json!({"type": "assign", "code": code, "assignee": "zed"}),
            "bad_request",
        )
        .await;
    alice
        .err(
            json!({"type": "assign", "code": code, "assignee": "gina"}),
            "bad_request",
        )
        .await;

    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": null}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], Value::Null, "{r}");
    assert_eq!(r["case"]["assigned_at"], Value::Null, "{r}");
    let case = get_case(&server, &code).await;
    assert_eq!(case["assignee"], Value::Null, "{case}");

    let sales = code_of(&create_case(&mut alice, "sales").await);
    let r = alice
        .ok(
            json!({"type": "assign", "code": sales, "assignee": "carol"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "carol", "{r}");
}

async fn a_plain_agent_assigns_by_the_rules(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let mut carol = server.agent(CAROL).await;

    // An unassigned case of his group: to himself, or to a member.
    let k1 = code_of(&create_case(&mut alice, "support").await);
    let r = bob
        .ok(
            json!({"type": "assign", "code": k1, "assignee": "bob"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "bob", "{r}");
    let k2 = code_of(&create_case(&mut alice, "support").await);
    let r = bob
        .ok(
            json!({"type": "assign", "code": k2, "assignee": "dave"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "dave", "{r}");

    // Carol's sales case is not visible to him.
    let k3 = code_of(&create_case(&mut carol, "sales").await);
    carol
        .ok(
            json!({"type": "assign", "code": k3, "assignee": "carol"}),
            "case",
        )
        .await;
    bob.err(
        json!({"type": "assign", "code": k3, "assignee": "bob"}),
        "not_found",
    )
    .await;

    // A case assigned to dave is not his to give.
    bob.err(
        json!({"type": "assign", "code": k2, "assignee": "bob"}),
        "forbidden",
    )
    .await;
    bob.err(
        json!({"type": "assign", "code": k2, "assignee": null}),
        "forbidden",
    )
    .await;
    assert_eq!(get_case(&server, &k2).await["assignee"], "dave");

    // Not a member of the group: forbidden, like anything else the rules
    // do not allow.
    let k4 = code_of(&create_case(&mut alice, "support").await);
    bob.err(
        json!({"type": "assign", "code": k4, "assignee": "carol"}),
        "forbidden",
    )
    .await;
    assert_eq!(get_case(&server, &k4).await["assignee"], Value::Null);

    // His own case he may hand over.
    let r = bob
        .ok(
            json!({"type": "assign", "code": k1, "assignee": "dave"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "dave", "{r}");
}

async fn reassigning_away_from_a_seated_agent_ends_its_session(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    settle_on(&mut customer, &code, "in_progress").await;

    let mut alice = server.agent(ALICE).await;
    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "dave"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "dave", "{r}");
    assert_eq!(r["case"]["supporter_connected"], false, "{r}");
    let ended = bob.wait_type("ended").await;
    assert!(is_ended(&ended, &code, "reassigned"), "{ended}");
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    customer.sync().await;
    assert!(
        !has_type(customer.pending(), "ended"),
        "{:?}",
        customer.pending()
    );

    // Dave takes the seat; `assign null` puts the case back on the line,
    // ending dave's session, and then anyone of the group may take it.
    let mut dave = server.agent(DAVE).await;
    dave.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "in_progress",
        true,
        true,
    );
    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": null}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], Value::Null, "{r}");
    let ended = dave.wait_type("ended").await;
    assert!(is_ended(&ended, &code, "reassigned"), "{ended}");
    assert_status(
        &customer.wait_type("status").await,
        &code,
        "pending",
        true,
        false,
    );
    let j = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(j["case"]["assignee"], "bob", "{j}");
}

// 12. request_help and role checks.

async fn request_help_fills_the_case(mode: Mode) {
    let server = TestServer::start_in(mode).await;

    let mut sos = server.customer().await;
    let joined = sos
        .ok(
            json!({"type": "request_help", "module": MODULE, "via": "sos",
                   "name": "Ana", "email": "ana@example.com", "description": "Screen is black"}),
            "joined",
        )
        .await;
    assert!(is_hex_token(&joined["resume_token"]), "{joined}");
    let view = &joined["case"];
    assert_eq!(view["code"], joined["code"], "{joined}");
    assert_eq!(view["status"], "pending", "{joined}");
    assert_eq!(view["customer_connected"], true, "{joined}");
    assert_eq!(view["supporter_connected"], false, "{joined}");
    assert_eq!(view["supporter"], Value::Null, "{joined}");
    wire_time(&view["expires_at"]);
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["source"], "sos", "{case}");
    assert_eq!(case["created_by"], "customer", "{case}");
    assert_eq!(case["company"], "acme", "{case}");
    assert_eq!(case["group"], "support", "{case}");
    assert_eq!(case["assignee"], Value::Null, "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");
    assert_eq!(case["customer"]["email"], "ana@example.com", "{case}");
    assert_eq!(case["description"], "Screen is black", "{case}");

    let (_qs, joined) = request_help(&server, MODULE).await;
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["source"], "quicksupport", "{case}");
    assert_eq!(case["created_by"], "customer", "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");

    let (_routed, joined) = request_help(&server, MODULE_BOB).await;
    assert_eq!(joined["case"]["supporter"]["name"], "Bob", "{joined}");
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["assignee"], "bob", "{case}");
    wire_time(&case["assigned_at"]);
    assert_eq!(case["status"], "pending", "{case}");

    let (_sales, joined) = request_help(&server, MODULE_SALES).await;
    assert_eq!(get_case(&server, &code_of(&joined)).await["group"], "sales");

    // A customer `join` with a name fills an empty customer.name only.
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    assert_eq!(
        get_case(&server, &code).await["customer"]["name"],
        Value::Null
    );
    let mut zoe = server.customer().await;
    let j = zoe
        .ok(
            json!({"type": "join", "code": code, "name": "Zoe"}),
            "joined",
        )
        .await;
    assert_eq!(get_case(&server, &code).await["customer"]["name"], "Zoe");
    let mut other = server.customer().await;
    other
        .ok(
            json!({"type": "join", "code": code, "name": "Other",
                   "resume_token": j["resume_token"]}),
            "joined",
        )
        .await;
    assert_eq!(get_case(&server, &code).await["customer"]["name"], "Zoe");
}

async fn one_customer_connection_serves_one_case(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let token = joined["resume_token"].clone();
    let mut alice = server.agent(ALICE).await;
    let other = code_of(&create_case(&mut alice, "support").await);

    customer
        .err(
            json!({"type": "request_help", "module": MODULE}),
            "conflict",
        )
        .await;
    customer
        .err(json!({"type": "join", "code": code}), "conflict")
        .await;
    customer
        .err(
            json!({"type": "join", "code": code, "resume_token": token}),
            "conflict",
        )
        .await;
    customer
        .err(json!({"type": "join", "code": other}), "conflict")
        .await;

    // Nothing was created or taken by the refused commands.
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"].as_array().unwrap().len(), 2, "{list}");
    let o = get_case(&server, &other).await;
    assert_eq!(o["status"], "new", "{o}");
    assert_eq!(o["customer_connected"], false, "{o}");

    // The connection still serves its first case.
    let sent = customer
        .ok(json!({"type": "chat", "text": "hello?"}), "sent")
        .await;
    assert_eq!(sent["code"], code);
}

async fn commands_of_the_other_role_are_forbidden(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    bob.err(
        json!({"type": "request_help", "module": MODULE}),
        "forbidden",
    )
    .await;

    let (mut seated, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let mut fresh = server.customer().await;
    let agent_commands = [
        json!({"type": "create_case", "group": "support", "name": "x"}),
        json!({"type": "subscribe"}),
        json!({"type": "assign", "code": code, "assignee": "bob"}),
        json!({"type": "delete", "code": code}),
        json!({"type": "presence", "state": "away"}),
    ];
    for customer in [&mut seated, &mut fresh] {
        for cmd in &agent_commands {
            customer.err(cmd.clone(), "forbidden").await;
        }
    }

    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    let cases = list["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "no case was created: {list}");
    assert_eq!(cases[0]["code"], code, "{list}");
    assert_eq!(cases[0]["assignee"], Value::Null, "{list}");
    seated.sync().await;
    assert!(
        !has_type(seated.pending(), "snapshot"),
        "{:?}",
        seated.pending()
    );
}

// 13. Every command's reply comes before its connection is closed.

/// The messages a connection received, in order, until it closed, and how.
async fn until_closed(ws: &mut WsClient) -> (Closed, Vec<Value>) {
    tokio::time::timeout(WAIT, ws.closed())
        .await
        .expect("the connection closes")
}

async fn every_reply_comes_before_the_close(mode: Mode) {
    let server = TestServer::start_in(mode).await;

    // request_help: the reply comes before the pushes it causes.
    let mut customer = server.customer().await;
    customer
        .send(json!({"type": "request_help", "module": MODULE, "name": "Ana", "id": 1}))
        .await;
    let first = customer.next().await;
    assert_eq!(first["type"], "joined", "the reply first: {first}");
    assert_eq!(first["id"], 1, "{first}");
    let code = code_of(&first);

    // The customer closes its case: the reply, then `ended`, then 1000.
    customer.send(json!({"type": "close", "id": 2})).await;
    let (how, seen) = until_closed(&mut customer).await;
    assert_eq!(how, Closed::Code(1000), "{seen:?}");
    let reply = seen
        .iter()
        .position(|m| m["id"] == 2)
        .unwrap_or_else(|| panic!("no reply to the close: {seen:?}"));
    assert_eq!(seen[reply]["type"], "case", "{seen:?}");
    assert_eq!(seen[reply]["case"]["status"], "closed", "{seen:?}");
    let ended = seen
        .iter()
        .position(|m| is_ended(m, &code, "closed"))
        .unwrap_or_else(|| panic!("no ended: {seen:?}"));
    assert!(reply < ended, "the reply before ended: {seen:?}");

    // An agent closes, and deletes, a case it is seated in: both replies
    // come, before the pushes they cause to its own connection.
    let mut bob = server.agent(BOB).await;
    for (command, reply) in [("close", "case"), ("delete", "deleted")] {
        let code = code_of(&create_case(&mut bob, "support").await);
        let mut customer = server.customer().await;
        customer
            .ok(json!({"type": "join", "code": code}), "joined")
            .await;
        bob.send(json!({"type": "join", "code": code, "id": "j"}))
            .await;
        let first = bob.next().await;
        assert_eq!(first["type"], "joined", "the reply first: {first}");
        bob.sync().await;
        bob.clear();
        bob.send(json!({"type": command, "code": code, "id": "c"}))
            .await;
        let first = bob.next().await;
        assert_eq!(first["type"], reply, "{command}: the reply first: {first}");
        assert_eq!(first["id"], "c", "{first}");
        bob.sync().await;
        bob.clear();
        let (how, seen) = until_closed(&mut customer).await;
        assert_eq!(how, Closed::Code(1000), "{seen:?}");
    }

    // Shutdown: the commands read before it are all answered, in order,
    // before the close with 4000.
    let (mut customer, _) = request_help(&server, MODULE).await;
    for i in 0..5 {
        customer
            .send(json!({"type": "chat", "text": format!("line {i}"), "id": i}))
            .await;
    }
    // The first reply shows the commands are being read.
    let first = customer.wait_for("the first reply", |m| m["id"] == 0).await;
    assert_eq!(first["type"], "sent", "{first}");
    let stopping = tokio::spawn(server.shutdown());
    let (how, seen) = until_closed(&mut customer).await;
    assert_eq!(how, Closed::Code(4000), "{seen:?}");
    let ids: Vec<i64> = seen.iter().filter_map(|m| m["id"].as_i64()).collect();
    let want: Vec<i64> = (1..=ids.len() as i64).collect();
    assert_eq!(ids, want, "replies in order, none lost: {seen:?}");
    assert!(
        seen.iter()
            .all(|m| m["id"].is_null() || m["type"] == "sent"),
        "{seen:?}"
    );
    stopping.await.expect("the broker stops");
}

in_every_mode!(
    every_reply_comes_before_the_close,
    status_follows_the_seats_through_the_lifecycle,
    codes_are_accepted_without_dashes_in_any_case_and_with_spaces,
    the_customer_seat_is_held_by_its_resume_token,
    after_seat_grace_the_code_alone_takes_the_seat_with_a_new_token,
    one_agent_tab_closing_keeps_the_supporter_seat,
    chat_is_relayed_both_ways_and_not_echoed,
    signal_relays_any_json_unchanged_both_ways_and_is_not_echoed,
    admin_takeover_ends_the_previous_assignee_session,
    a_plain_agent_cannot_join_or_take_over_someone_elses_case,
    concurrent_claims_have_exactly_one_winner,
    close_by_assignee_creator_or_admin_ends_both_seats,
    closed_unknown_and_deleted_codes_are_alike_not_found,
    only_assignee_creator_or_admin_may_close_and_only_once,
    a_customer_closes_only_a_case_it_requested,
    delete_ends_sessions_and_tells_subscribers,
    expiry_ends_sessions_and_marks_the_case_expired,
    an_admin_assigns_to_anyone_in_the_group_or_back_to_the_line,
    a_plain_agent_assigns_by_the_rules,
    reassigning_away_from_a_seated_agent_ends_its_session,
    request_help_fills_the_case,
    one_customer_connection_serves_one_case,
    commands_of_the_other_role_are_forbidden,
);
