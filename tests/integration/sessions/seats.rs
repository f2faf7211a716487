//! The seats: codes accepted without dashes, in any case and with spaces;
//! the customer seat held by its resume token, and taken by the code alone
//! once `seat_grace` has passed; several agent tabs holding one supporter
//! seat.

use std::time::Duration;

use serde_json::json;

use super::*;

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

in_every_mode!(
    codes_are_accepted_without_dashes_in_any_case_and_with_spaces,
    the_customer_seat_is_held_by_its_resume_token,
    after_seat_grace_the_code_alone_takes_the_seat_with_a_new_token,
    one_agent_tab_closing_keeps_the_supporter_seat,
);
