//! Manual assignment: an admin assigns to anyone in the group or back to
//! the line, a plain agent by the rules, and reassigning away from a seated
//! agent ends its session.

use serde_json::json;

use super::*;

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

in_every_mode!(
    an_admin_assigns_to_anyone_in_the_group_or_back_to_the_line,
    a_plain_agent_assigns_by_the_rules,
    reassigning_away_from_a_seated_agent_ends_its_session,
);
