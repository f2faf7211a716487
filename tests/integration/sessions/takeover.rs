//! Takeover and claims: an admin's takeover ends the previous assignee's
//! session, a plain agent can neither join nor take over someone else's
//! case, and of concurrent claims exactly one wins.

use serde_json::json;

use super::*;

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

in_every_mode!(
    admin_takeover_ends_the_previous_assignee_session,
    a_plain_agent_cannot_join_or_take_over_someone_elses_case,
    concurrent_claims_have_exactly_one_winner,
);
