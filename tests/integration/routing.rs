//! Why this agent: every automatic assignment keeps its decision (policy,
//! each member of the group with its eligibility, reason and load, the one
//! chosen), served by `GET /v1/cases/{code}/routing`, in each storage mode.

use serde_json::{Value, json};

use crate::util::*;

/// The test config with automated assignment by load.
fn least_loaded(text: String) -> String {
    text.replacen(
        "name = \"ACME\"\n",
        "name = \"ACME\"\nassignment = \"least_loaded\"\n",
        1,
    )
}

async fn routing(server: &TestServer, code: &str, token: &str) -> (u16, Value) {
    server
        .http(
            "GET",
            &format!("/v1/cases/{code}/routing"),
            Some(token),
            None,
        )
        .await
}

async fn each_automatic_assignment_says_why(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", least_loaded).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;
    dave.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    bob.sync().await;
    let (_ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    assert_eq!(joined["case"]["supporter"]["name"], "Bob", "{joined}");

    let (st, body) = routing(&server, &code, BOB).await;
    assert_eq!(st, 200, "{body}");
    let d = &body["decisions"][0];
    assert_eq!(body["decisions"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(d["policy"], "least_loaded", "{d}");
    assert_eq!(d["chosen"], "bob", "{d}");
    assert!(d["at"].is_string(), "{d}");
    assert_eq!(
        d["candidates"],
        json!([
            {"agent": "alice", "eligible": false, "reason": "offline", "open_cases": 0},
            {"agent": "bob", "eligible": true,
             "reason": "picked: fewest open cases, then longest since its last case", "open_cases": 0},
            {"agent": "dave", "eligible": false, "reason": "away", "open_cases": 0},
        ]),
        "{d}"
    );
    // A case assigned by hand has no decision.
    let mut alice = server.agent(ALICE).await;
    let manual = alice
        .ok(
            json!({"type": "create_case", "group": "sales", "name": "x", "assignee": "carol"}),
            "case",
        )
        .await;
    let manual = manual["case"]["code"].as_str().unwrap().to_string();
    let (st, body) = routing(&server, &manual, ALICE).await;
    assert_eq!((st, body), (200, json!({"decisions": []})));

    // Who may not see the case gets 404, as for the case itself.
    assert_error(routing(&server, &code, CAROL).await, 404, "not_found", "");
    assert_error(routing(&server, &code, GINA).await, 404, "not_found", "");
    assert_error(
        routing(&server, "s99-999-999", BOB).await,
        404,
        "not_found",
        "",
    );
    assert_error(routing(&server, "nope", BOB).await, 400, "bad_request", "");
    assert_error(
        server
            .http("GET", &format!("/v1/cases/{code}/routing"), None, None)
            .await,
        401,
        "unauthorized",
        "",
    );
}

in_every_mode!(each_automatic_assignment_says_why);
