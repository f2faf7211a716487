//! Agents through the admin API: one added by an admin signs in and works
//! at once; every bad request gets its code; disabling, a new token and
//! deleting sign the agent out at once (4500) and free its cases.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_added_by_an_admin_signs_in_and_works_at_once() {
    for mode in [Mode::Memory, Mode::Journal, Mode::Cluster] {
        let server = TestServer::start_in(mode).await;
        let (agent, token) = add(&server, "erin").await;
        assert_eq!(
            agent,
            json!({"id": "erin", "name": "Agent erin", "groups": ["support"], "admin": false,
                   "max_cases": 5, "disabled": false, "source": "api"})
        );
        let welcome = hello(&server, &token).await;
        assert_eq!(welcome["type"], "welcome", "{mode:?}: {welcome}");
        assert_eq!(welcome["agent"]["id"], "erin");
        // Listed for admins, with the file's agents marked as such.
        let (st, list) = server
            .http("GET", "/v1/admin/agents", Some(ALICE), None)
            .await;
        assert_eq!(st, 200);
        let agents = list["agents"].as_array().unwrap();
        assert!(
            agents
                .iter()
                .any(|a| a["id"] == "erin" && a["source"] == "api")
        );
        assert!(
            agents
                .iter()
                .any(|a| a["id"] == "bob" && a["source"] == "config")
        );
        assert!(!list.to_string().contains(&token), "no token in the list");
        // Assignable, and able to take a case.
        let mut bob = server.agent(BOB).await;
        let code = create_case(&mut bob, "support").await["code"]
            .as_str()
            .unwrap()
            .to_string();
        let (st, case) = server
            .http(
                "POST",
                &format!("/v1/cases/{code}/assign"),
                Some(ALICE),
                Some(json!({"assignee": "erin"})),
            )
            .await;
        assert_eq!(st, 200, "{case}");
        let mut erin = server.agent(&token).await;
        erin.ok(json!({"type": "join", "code": code}), "joined")
            .await;
        // Everyone's agents panel knows the new agent.
        let (_, panel) = server.http("GET", "/v1/agents", Some(BOB), None).await;
        assert!(panel.to_string().contains("\"erin\""), "{panel}");
    }
}

async fn every_bad_admin_request_gets_its_code(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    add(&server, "erin").await;
    let post = |token: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .http("POST", "/v1/admin/agents", Some(token), Some(body))
                .await
        }
    };
    let ok = json!({"id": "frank", "name": "Frank", "groups": ["support"]});
    assert_error(post(BOB, ok.clone()).await, 403, "forbidden", "admins");
    assert_error(
        server
            .http("GET", "/v1/admin/agents", Some(BOB), None)
            .await,
        403,
        "forbidden",
        "admins",
    );
    assert_error(
        server.http("GET", "/v1/admin/agents", None, None).await,
        401,
        "unauthorized",
        "token",
    );
    for (body, mentions) in [
        (
            json!({"id": "erin", "name": "E", "groups": ["support"]}),
            "erin",
        ),
        (
            json!({"id": "bob", "name": "B", "groups": ["support"]}),
            "bob",
        ),
    ] {
        assert_error(post(ALICE, body).await, 409, "conflict", mentions);
    }
    for (body, mentions) in [
        (
            json!({"id": "a b", "name": "X", "groups": ["support"]}),
            "id",
        ),
        (
            json!({"id": "customer", "name": "X", "groups": ["support"]}),
            "id",
        ),
        (
            json!({"id": "x1", "name": "", "groups": ["support"]}),
            "name",
        ),
        (json!({"id": "x2", "name": "X", "groups": []}), "groups"),
        (
            json!({"id": "x3", "name": "X", "groups": ["nope"]}),
            "groups",
        ),
        (
            json!({"id": "x4", "name": "X", "groups": ["support"], "max_cases": 5000}),
            "max_cases",
        ),
        (
            json!({"id": "x5", "name": "X", "groups": ["support"], "token": "mine"}),
            "token",
        ),
        (json!({"name": "X", "groups": ["support"]}), "id"),
        (
            json!({"id": "x6", "name": "X", "groups": "support"}),
            "groups",
        ),
    ] {
        assert_error(post(ALICE, body).await, 400, "bad_request", mentions);
    }
    // Another company's agent, an unknown one, a deleted one: not found.
    for id in ["gina", "nobody"] {
        assert_error(
            server
                .http(
                    "PATCH",
                    &format!("/v1/admin/agents/{id}"),
                    Some(ALICE),
                    Some(json!({"name": "X"})),
                )
                .await,
            404,
            "not_found",
            "",
        );
        assert_error(
            server
                .http(
                    "POST",
                    &format!("/v1/admin/agents/{id}/token"),
                    Some(ALICE),
                    None,
                )
                .await,
            404,
            "not_found",
            "",
        );
    }
    // The file's agents are changed in the file.
    assert_error(
        patch(&server, "bob", json!({"disabled": true})).await,
        409,
        "conflict",
        "config file",
    );
    assert_error(
        server
            .http("DELETE", "/v1/admin/agents/bob", Some(ALICE), None)
            .await,
        409,
        "conflict",
        "config file",
    );
    assert_error(
        patch(&server, "erin", json!({"groups": ["nope"]})).await,
        400,
        "bad_request",
        "groups",
    );
    assert_error(
        patch(&server, "erin", json!({"colour": "red"})).await,
        400,
        "bad_request",
        "colour",
    );
    // Nothing of the refused requests was added.
    let (_, list) = server
        .http("GET", "/v1/admin/agents", Some(ALICE), None)
        .await;
    let ids: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol", "dave", "erin"], "{list}");
}

in_every_mode!(every_bad_admin_request_gets_its_code);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_retokening_and_deleting_sign_out_at_once_and_free_the_cases() {
    for mode in [Mode::Memory, Mode::Journal, Mode::Cluster] {
        let server = TestServer::start_in(mode).await;
        let (_, token) = add(&server, "erin").await;
        let mut dash = server.agent(ALICE).await;
        dash.ok(json!({"type": "subscribe"}), "snapshot").await;
        let mut erin = server.agent(&token).await;
        let code = create_case(&mut erin, "support").await["code"]
            .as_str()
            .unwrap()
            .to_string();
        erin.ok(json!({"type": "join", "code": code}), "joined")
            .await;
        let c = code.clone();
        dash.wait_for("the case taken by erin", move |m| {
            m["type"] == "event"
                && m["case"]["code"] == c.as_str()
                && m["case"]["assignee"] == "erin"
        })
        .await;
        dash.sync().await;
        dash.clear();

        // Disabled: its connection ends with 4500, its case goes back.
        let (st, body) = patch(&server, "erin", json!({"disabled": true})).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["agent"]["disabled"], true);
        let (how, _) = erin.closed().await;
        assert_eq!(how, Closed::Code(4500), "{mode:?}");
        let c = code.clone();
        let ev = dash
            .wait_for("the case back in the line", move |m| {
                m["type"] == "event"
                    && m["case"]["code"] == c.as_str()
                    && m["case"]["assignee"].is_null()
            })
            .await;
        assert_eq!(ev["action"], "updated", "{ev}");
        assert_eq!(hello(&server, &token).await["code"], "unauthorized");
        // Enabled again: the same token works.
        let (st, _) = patch(&server, "erin", json!({"disabled": false})).await;
        assert_eq!(st, 200);
        let mut erin = server.agent(&token).await;
        // A change of rights: its connections resume (4001) with them.
        let (st, body) = patch(&server, "erin", json!({"groups": ["support", "sales"]})).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(erin.closed().await.0, Closed::Code(4001));
        let welcome = hello(&server, &token).await;
        assert_eq!(
            welcome["agent"]["groups"],
            json!(["support", "sales"]),
            "{welcome}"
        );
        let mut erin = server.agent(&token).await;

        // A new token: the old one stops at once, the new one works.
        let (st, body) = server
            .http("POST", "/v1/admin/agents/erin/token", Some(ALICE), None)
            .await;
        assert_eq!(st, 200, "{body}");
        let fresh = body["token"].as_str().unwrap().to_string();
        assert_ne!(fresh, token);
        assert_eq!(erin.closed().await.0, Closed::Code(4500));
        assert_eq!(hello(&server, &token).await["code"], "unauthorized");
        let mut erin = server.agent(&fresh).await;

        // Deleted: signed out, not listed, not assignable; the history
        // keeps the id.
        let (st, _) = server
            .http("DELETE", "/v1/admin/agents/erin", Some(ALICE), None)
            .await;
        assert_eq!(st, 204);
        assert_eq!(erin.closed().await.0, Closed::Code(4500));
        assert_eq!(hello(&server, &fresh).await["code"], "unauthorized");
        let (_, list) = server
            .http("GET", "/v1/admin/agents", Some(ALICE), None)
            .await;
        assert!(!list.to_string().contains("erin"), "{list}");
        let (st, _) = server
            .http(
                "POST",
                &format!("/v1/cases/{code}/assign"),
                Some(ALICE),
                Some(json!({"assignee": "erin"})),
            )
            .await;
        assert_eq!(st, 400);
        let (_, case) = server
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(case["created_by"], "erin", "{case}");
        // Every change is counted.
        let text = scrape(&server).await;
        for (change, n) in [
            ("agent_added", 1.0),
            ("agent_changed", 3.0),
            ("agent_token", 1.0),
            ("agent_deleted", 1.0),
        ] {
            let series = format!("casebroker_directory_changes_total{{change=\"{change}\"}}");
            assert_eq!(value(&text, &series), n, "{series}");
        }
        // And a deleted id cannot be changed any more.
        let (st, _) = server
            .http("DELETE", "/v1/admin/agents/erin", Some(ALICE), None)
            .await;
        assert_eq!(st, 404);
    }
}
