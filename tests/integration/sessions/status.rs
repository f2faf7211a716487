//! The status derived from the two seats, through a case's whole life: each
//! change of a seat moves the status, pushes it to the case's connections
//! and moves `updated_at`.

use std::time::Duration;

use serde_json::json;

use super::*;

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

in_every_mode!(status_follows_the_seats_through_the_lifecycle);
