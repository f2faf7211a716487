//! The directory at run time through the admin API: agents added, changed,
//! given a new token, disabled and deleted, with every error code, the
//! effects at once (sign-out with 4500, cases back in the line), and a
//! restart of a journaled broker that keeps every change.

use serde_json::{Value, json};

use crate::util::*;

/// A new agent in `support`; its answer and token.
async fn add(server: &TestServer, id: &str) -> (Value, String) {
    let (st, body) = server
        .http(
            "POST",
            "/v1/admin/agents",
            Some(ALICE),
            Some(json!({"id": id, "name": format!("Agent {id}"), "groups": ["support"]})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let token = body["token"].as_str().expect("a token").to_string();
    assert_eq!(token.len(), 64, "{body}");
    (body["agent"].clone(), token)
}

/// `PATCH /v1/admin/agents/{id}` as alice.
async fn patch(server: &TestServer, id: &str, body: Value) -> (u16, Value) {
    server
        .http(
            "PATCH",
            &format!("/v1/admin/agents/{id}"),
            Some(ALICE),
            Some(body),
        )
        .await
}

/// Signs in with `token`: the welcome, or the error that refused it.
async fn hello(server: &TestServer, token: &str) -> Value {
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": token}))
        .await;
    ws.next().await
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_change_made_through_the_api() {
    let dir = TempDir::new("admin");
    let config = || config_with(&format!("data_dir = \"{}\"", dir.path().display()));
    let server = TestServer::with_config(config()).await;
    let (_, erin) = add(&server, "erin").await;
    let (_, frank) = add(&server, "frank").await;
    let (_, gone) = add(&server, "gone").await;
    let (st, _) = patch(
        &server,
        "erin",
        json!({"name": "Erin Renamed", "admin": true, "max_cases": 9}),
    )
    .await;
    assert_eq!(st, 200);
    patch(&server, "frank", json!({"disabled": true})).await;
    server
        .http("DELETE", "/v1/admin/agents/gone", Some(ALICE), None)
        .await;
    let mut e = server.agent(&erin).await;
    let code = create_case(&mut e, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    drop(e);
    server.stop().await;

    for round in 0..2 {
        let server = TestServer::with_config(config()).await;
        let (_, list) = server
            .http("GET", "/v1/admin/agents", Some(ALICE), None)
            .await;
        let erin_now = list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "erin")
            .unwrap_or_else(|| panic!("round {round}: {list}"))
            .clone();
        assert_eq!(
            erin_now,
            json!({"id": "erin", "name": "Erin Renamed", "groups": ["support"], "admin": true,
                   "max_cases": 9, "disabled": false, "source": "api"})
        );
        assert!(!list.to_string().contains("\"gone\""), "{list}");
        assert_eq!(hello(&server, &erin).await["type"], "welcome");
        assert_eq!(hello(&server, &frank).await["code"], "unauthorized");
        assert_eq!(hello(&server, &gone).await["code"], "unauthorized");
        let (_, case) = server
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(case["created_by"], "erin", "{case}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_applies_a_change_and_a_later_node_has_it() {
    let redis = crate::util::redis::RedisServer::start();
    let node = |name: &'static str| TestServer::node(&redis, name, "");
    let a = node("a").await;
    let b = node("b").await;
    // Added on a, it signs in on b at once.
    let (_, token) = add(&a, "erin").await;
    let mut on_b = b.agent(&token).await;
    // Disabled on a: its connection on b ends with 4500.
    let (st, _) = patch(&a, "erin", json!({"disabled": true})).await;
    assert_eq!(st, 200);
    assert_eq!(on_b.closed().await.0, Closed::Code(4500));
    assert_eq!(hello(&b, &token).await["code"], "unauthorized");
    // A module key added on b works on a at once.
    let (st, _) = b
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"key": "acme-b", "group": "support"})),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(ask_help(&a, "acme-b").await.0, 201);
    // Enabled again on b.
    let (st, _) = patch(&b, "erin", json!({"disabled": false})).await;
    assert_eq!(st, 200);
    assert_eq!(hello(&a, &token).await["type"], "welcome");
    // A case of erin's, then an image past it: a node started now begins
    // from the image and the log after it, and knows erin.
    let mut e = a.agent(&token).await;
    let code = create_case(&mut e, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let until = std::time::Instant::now() + WAIT * 4;
    let head: u64 = loop {
        let client = ::redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let head: Option<u64> = ::redis::cmd("GET")
            .arg("casebroker:{acme}:head")
            .query_async(&mut conn)
            .await
            .unwrap();
        let at: Option<u64> = ::redis::cmd("GET")
            .arg("casebroker:{acme}:image-at")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let (Some(h), Some(at)) = (head, at)
            && at >= h
        {
            break h;
        }
        assert!(std::time::Instant::now() < until, "no image of the head");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(head > 0);
    let c = node("c").await;
    assert_eq!(hello(&c, &token).await["type"], "welcome");
    let (_, case) = c
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["created_by"], "erin", "{case}");
    let (_, list) = c.http("GET", "/v1/admin/agents", Some(ALICE), None).await;
    assert!(list.to_string().contains("\"erin\""), "{list}");
    assert_eq!(
        ask_help(&c, "acme-b").await.0,
        201,
        "the key, from the image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_directory_exports_as_a_config_another_broker_starts_on() {
    let server = TestServer::start().await;
    let (_, token) = add(&server, "erin").await;
    let (_, disabled) = add(&server, "frank").await;
    patch(&server, "frank", json!({"disabled": true})).await;
    let (st, body) = server
        .http("GET", "/v1/admin/export", Some(BOB), None)
        .await;
    assert_eq!((st, &body["code"]), (403, &json!("forbidden")), "{body}");
    let resp = reqwest::Client::new()
        .get(server.url("/v1/admin/export"))
        .bearer_auth(ALICE)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/toml")
    );
    let text = resp.text().await.unwrap();
    for secret in [token.as_str(), disabled.as_str(), ALICE, BOB] {
        assert!(!text.contains(secret), "a token in the export:\n{text}");
    }
    assert!(
        !text.contains("frank"),
        "a disabled agent is left out:\n{text}"
    );
    assert!(
        !text.contains("gina"),
        "another company is left out:\n{text}"
    );
    let erin_hash = hex::encode(casebroker::config::hash_token(&token));
    assert!(text.contains(&erin_hash), "{text}");
    // A broker started on it: erin signs in with her token.
    let config = casebroker::Config::from_toml(&format!("in_memory = true\n{text}"))
        .unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let other = TestServer::with_config(config).await;
    assert_eq!(hello(&other, &token).await["type"], "welcome");
    assert_eq!(hello(&other, ALICE).await["type"], "welcome");
}

/// A help request with `module` over HTTP; the status and the answer.
async fn ask_help(server: &TestServer, module: &str) -> (u16, Value) {
    server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": module, "name": "Ana"})),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_keys_added_changed_and_deleted_work_at_once_and_survive_a_restart() {
    let dir = TempDir::new("modules");
    let config = || config_with(&format!("data_dir = \"{}\"", dir.path().display()));
    let server = TestServer::with_config(config()).await;
    let (st, body) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"key": "acme-new", "group": "sales"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(
        body["module"],
        json!({"key": "acme-new", "group": "sales", "default_assignee": null,
               "help_path": "/help/acme-new", "source": "api"})
    );
    // Works at once for help requests and the help page.
    let (st, made) = ask_help(&server, "acme-new").await;
    assert_eq!(st, 201, "{made}");
    let (st, _) = server.http("GET", "/v1/modules/acme-new", None, None).await;
    assert_eq!(st, 200);
    // A drawn key.
    let (st, drawn) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"group": "support"})),
        )
        .await;
    assert_eq!(st, 201, "{drawn}");
    let drawn_key = drawn["module"]["key"].as_str().unwrap().to_string();
    assert!(drawn_key.starts_with("qs-"), "{drawn}");
    // Changed: its default assignee.
    let (st, changed) = server
        .http(
            "PATCH",
            "/v1/admin/modules/acme-new",
            Some(ALICE),
            Some(json!({"group": "support", "default_assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 200, "{changed}");
    let (_, made) = ask_help(&server, "acme-new").await;
    let code = made["code"].as_str().unwrap().to_string();
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "bob", "{case}");
    // Every error its code.
    for (method, path, body, status, code) in [
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": MODULE, "group": "support"}),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": GLOBEX_MODULE, "group": "support"}),
            409,
            "conflict",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"key": "x y", "group": "support"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "nope"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "sales", "default_assignee": "bob"}),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/modules",
            json!({"group": "support", "default_assignee": "zed"}),
            400,
            "bad_request",
        ),
        (
            "PATCH",
            "/v1/admin/modules/acme-qs",
            json!({"group": "sales"}),
            409,
            "conflict",
        ),
        (
            "PATCH",
            "/v1/admin/modules/globex-qs",
            json!({"group": "support"}),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/admin/modules/nope",
            json!({"group": "support"}),
            404,
            "not_found",
        ),
    ] {
        let (st, got) = server
            .http(method, path, Some(ALICE), Some(body.clone()))
            .await;
        assert_eq!(
            (st, got["code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {path} {body}: {got}"
        );
    }
    let (st, _) = server
        .http(
            "POST",
            "/v1/admin/modules",
            Some(BOB),
            Some(json!({"group": "support"})),
        )
        .await;
    assert_eq!(st, 403);
    // Deleted: help requests with it are refused at once.
    let (st, _) = server
        .http(
            "DELETE",
            &format!("/v1/admin/modules/{drawn_key}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 204);
    let (st, refused) = ask_help(&server, &drawn_key).await;
    assert_eq!(
        (st, refused["code"].clone()),
        (401, json!("unauthorized")),
        "{refused}"
    );
    server.stop().await;

    // A restart keeps what the API did.
    let server = TestServer::with_config(config()).await;
    let (_, list) = server
        .http("GET", "/v1/admin/modules", Some(ALICE), None)
        .await;
    let keys: Vec<&str> = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"acme-new") && !keys.contains(&drawn_key.as_str()),
        "{list}"
    );
    let (_, made) = ask_help(&server, "acme-new").await;
    let code = made["code"].as_str().unwrap().to_string();
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "bob", "{case}");
    assert_eq!(ask_help(&server, &drawn_key).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_keeps_service_levels_offers_and_opening_hours() {
    fn edit(text: String) -> String {
        text.replacen(
            "name = \"ACME\"\n",
            "name = \"ACME\"\nassignment = \"round_robin\"\noffer_timeout = \"45s\"\n",
            1,
        )
        .replacen(
            r#"{ id = "support" }"#,
            r#"{ id = "support", sla_first_response = "5m", sla_resolution = "4h", offer_timeout = "20s", closed_message = "Back at eight.", hours = { tz = "Europe/Berlin", mon = "08:00-12:00, 13:00-18:00", holidays = ["2026-12-25"] } }"#,
            1,
        )
    }
    let server = TestServer::with_text_in(Mode::Memory, "", edit).await;
    let text = reqwest::Client::new()
        .get(server.url("/v1/admin/export"))
        .bearer_auth(ALICE)
        .timeout(WAIT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config = casebroker::Config::from_toml(&format!("in_memory = true\n{text}"))
        .unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let c = &config.companies[0];
    assert_eq!(
        c.offer_timeout,
        Some(std::time::Duration::from_secs(45)),
        "{text}"
    );
    let g = &c.groups[0];
    assert_eq!(
        g.sla_first_response,
        Some(std::time::Duration::from_secs(300))
    );
    assert_eq!(
        g.sla_resolution,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
    assert_eq!(g.offer_timeout, Some(std::time::Duration::from_secs(20)));
    assert_eq!(g.closed_message.as_deref(), Some("Back at eight."));
    let hours = g.hours.as_ref().expect("hours exported");
    assert_eq!(hours.tz, "Europe/Berlin");
    assert_eq!(hours.mon.as_deref(), Some("08:00-12:00, 13:00-18:00"));
    assert_eq!(hours.holidays, ["2026-12-25"]);
    assert!(
        c.groups[1].hours.is_none() && c.groups[1].offer_timeout.is_none(),
        "{text}"
    );
}
