//! How a case's sessions end: a close by its assignee, creator or an admin
//! (or the customer that requested it), only once; closed, unknown and
//! deleted codes alike not found; a delete and an expiry ending both seats
//! and telling subscribers.

use serde_json::json;

use super::*;

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

in_every_mode!(
    close_by_assignee_creator_or_admin_ends_both_seats,
    closed_unknown_and_deleted_codes_are_alike_not_found,
    only_assignee_creator_or_admin_may_close_and_only_once,
    a_customer_closes_only_a_case_it_requested,
    delete_ends_sessions_and_tells_subscribers,
    expiry_ends_sessions_and_marks_the_case_expired,
);
