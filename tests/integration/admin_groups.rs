//! Groups at run time through the admin API: added, renamed and deleted
//! (409 while in use), dashboards told live with the `groups` push (and of
//! a deleted agent), in each storage mode, across a restart and across the
//! nodes of a cluster.

use serde_json::{Value, json};

use crate::util::*;

/// `method path` as alice, with a body.
async fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    server.http(method, path, Some(ALICE), body).await
}

/// A new group; asserts the 201 and returns the group.
async fn add_group(server: &TestServer, id: &str, name: &str) -> Value {
    let (st, body) = admin(
        server,
        "POST",
        "/v1/admin/groups",
        Some(json!({"id": id, "name": name})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    body["group"].clone()
}

/// A subscribed dashboard of `token`.
async fn dashboard(server: &TestServer, token: &str) -> WsClient {
    let mut ws = server.agent(token).await;
    ws.ok(json!({"type": "subscribe"}), "snapshot").await;
    ws
}

/// The ids of the next `groups` push.
async fn pushed_groups(ws: &mut WsClient) -> Vec<String> {
    let push = ws.wait_type("groups").await;
    push["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{push}"))
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

/// The ids `GET /v1/groups` gives `token`.
async fn visible_groups(server: &TestServer, token: &str) -> Vec<String> {
    let (st, body) = server.http("GET", "/v1/groups", Some(token), None).await;
    assert_eq!(st, 200, "{body}");
    body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

async fn a_group_is_added_used_refused_while_in_use_and_deleted(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = dashboard(&server, ALICE).await;
    let mut bob = dashboard(&server, BOB).await;
    let vip = add_group(&server, "vip", "VIP customers").await;
    assert_eq!(
        vip,
        json!({"id": "vip", "name": "VIP customers", "source": "api"})
    );
    // Dashboards are told the groups they see, live: an admin all of them,
    // bob his own.
    assert_eq!(pushed_groups(&mut alice).await, ["support", "sales", "vip"]);
    assert_eq!(pushed_groups(&mut bob).await, ["support"]);
    assert_eq!(
        visible_groups(&server, ALICE).await,
        ["support", "sales", "vip"]
    );
    assert_eq!(visible_groups(&server, BOB).await, ["support"]);
    let (_, list) = admin(&server, "GET", "/v1/admin/groups", None).await;
    assert_eq!(
        list["groups"],
        json!([{"id": "support", "name": "support", "source": "config"},
               {"id": "sales", "name": "sales", "source": "config"},
               {"id": "vip", "name": "VIP customers", "source": "api"}])
    );

    // Used at once: an agent, a case and a module key in it.
    let (st, body) = admin(
        &server,
        "POST",
        "/v1/admin/agents",
        Some(json!({"id": "erin", "name": "Erin", "groups": ["vip"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let erin = body["token"].as_str().unwrap().to_string();
    let mut erin_ws = dashboard(&server, &erin).await;
    let case = create_case(&mut alice, "vip").await;
    let code = case["code"].as_str().unwrap().to_string();
    assert_eq!(case["group"], "vip");
    let event = erin_ws
        .wait_for("the vip case", |m| m["type"] == "event")
        .await;
    assert_eq!(event["case"]["code"], code.as_str());
    let (st, body) = admin(
        &server,
        "POST",
        "/v1/admin/modules",
        Some(json!({"key": "acme-vip", "group": "vip"})),
    )
    .await;
    assert_eq!(st, 201, "{body}");

    // In use: refused with what still uses it, one thing at a time.
    let delete = || admin(&server, "DELETE", "/v1/admin/groups/vip", None);
    assert_error(delete().await, 409, "conflict", "open cases");
    alice
        .ok(json!({"type": "close", "code": code}), "case")
        .await;
    assert_error(delete().await, 409, "conflict", "erin");
    let (st, body) = admin(
        &server,
        "PATCH",
        "/v1/admin/agents/erin",
        Some(json!({"groups": ["support"]})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_error(delete().await, 409, "conflict", "acme-vip");
    let (st, _) = admin(&server, "DELETE", "/v1/admin/modules/acme-vip", None).await;
    assert_eq!(st, 204);
    alice.clear();
    let (st, body) = delete().await;
    assert_eq!(st, 204, "{body}");

    // Gone for new work, kept for the history.
    assert_eq!(pushed_groups(&mut alice).await, ["support", "sales"]);
    assert_eq!(visible_groups(&server, ALICE).await, ["support", "sales"]);
    alice
        .err(
            json!({"type": "create_case", "group": "vip", "name": "x"}),
            "bad_request",
        )
        .await;
    assert_error(
        admin(
            &server,
            "POST",
            "/v1/admin/agents",
            Some(json!({"id": "fay", "name": "Fay", "groups": ["vip"]})),
        )
        .await,
        400,
        "bad_request",
        "groups",
    );
    assert_error(
        admin(
            &server,
            "POST",
            "/v1/admin/modules",
            Some(json!({"group": "vip"})),
        )
        .await,
        400,
        "bad_request",
        "group",
    );
    let (st, body) = admin(&server, "GET", &format!("/v1/cases/{code}"), None).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["group"], "vip");
    assert_eq!(body["status"], "closed");

    // Renamed and added again: the same id comes back.
    let back = add_group(&server, "vip", "VIP again").await;
    assert_eq!(back["name"], "VIP again");
    let (st, body) = admin(
        &server,
        "PATCH",
        "/v1/admin/groups/vip",
        Some(json!({"name": "Very important"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body["group"],
        json!({"id": "vip", "name": "Very important", "source": "api"})
    );
    let renamed = alice
        .wait_for("the rename", |m| {
            m["type"] == "groups" && m.to_string().contains("Very important")
        })
        .await;
    assert_eq!(renamed["groups"][2]["id"], "vip");
    let metrics = scrape(&server).await;
    for change in ["group_added", "group_changed", "group_deleted"] {
        let series = format!("casebroker_directory_changes_total{{change=\"{change}\"}}");
        assert!(value(&metrics, &series) >= 1.0, "{series}");
    }
}

in_every_mode!(a_group_is_added_used_refused_while_in_use_and_deleted);

async fn every_bad_group_request_gets_its_code(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let post = |token: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .http("POST", "/v1/admin/groups", Some(token), Some(body))
                .await
        }
    };
    let ok = json!({"id": "vip", "name": "VIP"});
    assert_error(post(BOB, ok.clone()).await, 403, "forbidden", "admins");
    assert_error(
        server
            .http("GET", "/v1/admin/groups", Some(BOB), None)
            .await,
        403,
        "forbidden",
        "admins",
    );
    assert_error(
        server.http("GET", "/v1/admin/groups", None, None).await,
        401,
        "unauthorized",
        "token",
    );
    assert_error(
        server.http("GET", "/v1/groups", None, None).await,
        401,
        "unauthorized",
        "token",
    );
    for (body, mentions) in [
        (json!({"id": "", "name": "x"}), "id"),
        (json!({"id": "has space", "name": "x"}), "id"),
        (json!({"id": "x".repeat(65), "name": "x"}), "id"),
        (json!({"id": "vip", "name": ""}), "name"),
        (json!({"id": "vip", "name": "n".repeat(101)}), "name"),
        (json!({"id": "vip"}), "name"),
        (json!({"name": "VIP"}), "id"),
        (json!({"id": 7, "name": "VIP"}), "id"),
        (
            json!({"id": "vip", "name": "VIP", "colour": "red"}),
            "colour",
        ),
        (json!(["vip"]), "expected"),
    ] {
        assert_error(
            post(ALICE, body.clone()).await,
            400,
            "bad_request",
            mentions,
        );
    }
    // Exists: the file's group, then one the API added.
    assert_error(
        post(ALICE, json!({"id": "support", "name": "S"})).await,
        409,
        "conflict",
        "support",
    );
    add_group(&server, "vip", "VIP").await;
    assert_error(post(ALICE, ok.clone()).await, 409, "conflict", "vip");
    // The file's groups are changed in the file.
    assert_error(
        admin(
            &server,
            "PATCH",
            "/v1/admin/groups/support",
            Some(json!({"name": "S"})),
        )
        .await,
        409,
        "conflict",
        "config file",
    );
    assert_error(
        admin(&server, "DELETE", "/v1/admin/groups/sales", None).await,
        409,
        "conflict",
        "config file",
    );
    // Unknown, and another company's: not found.
    let (st, _) = server
        .http(
            "POST",
            "/v1/admin/groups",
            Some(GINA),
            Some(json!({"id": "gx", "name": "Globex only"})),
        )
        .await;
    assert_eq!(st, 201);
    for path in ["/v1/admin/groups/nope", "/v1/admin/groups/gx"] {
        assert_error(
            admin(&server, "PATCH", path, Some(json!({"name": "n"}))).await,
            404,
            "not_found",
            "",
        );
        assert_error(
            admin(&server, "DELETE", path, None).await,
            404,
            "not_found",
            "",
        );
    }
    assert_error(
        admin(
            &server,
            "PATCH",
            "/v1/admin/groups/vip",
            Some(json!({"name": ""})),
        )
        .await,
        400,
        "bad_request",
        "name",
    );
    assert_error(
        admin(
            &server,
            "PATCH",
            "/v1/admin/groups/vip",
            Some(json!({"id": "other"})),
        )
        .await,
        400,
        "bad_request",
        "id",
    );
    // Nothing of this touched globex, or acme's groups beyond vip.
    assert_eq!(visible_groups(&server, GINA).await, ["support", "gx"]);
    assert_eq!(
        visible_groups(&server, ALICE).await,
        ["support", "sales", "vip"]
    );
}

in_every_mode!(every_bad_group_request_gets_its_code);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_groups_added_and_deleted_and_their_history() {
    let dir = TempDir::new("groups");
    let config = || config_with(&format!("data_dir = \"{}\"", dir.path().display()));
    let server = TestServer::with_config(config()).await;
    add_group(&server, "vip", "VIP").await;
    add_group(&server, "old", "Old queue").await;
    let (_, body) = admin(
        &server,
        "POST",
        "/v1/admin/agents",
        Some(json!({"id": "erin", "name": "Erin", "groups": ["vip"]})),
    )
    .await;
    let erin = body["token"].as_str().unwrap().to_string();
    let mut alice = server.agent(ALICE).await;
    let open = create_case(&mut alice, "vip").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let ended = create_case(&mut alice, "old").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .ok(json!({"type": "close", "code": ended}), "case")
        .await;
    let (st, _) = admin(&server, "DELETE", "/v1/admin/groups/old", None).await;
    assert_eq!(st, 204);
    drop(alice);
    server.stop().await;

    for round in 0..2 {
        let server = TestServer::with_config(config()).await;
        assert_eq!(
            visible_groups(&server, ALICE).await,
            ["support", "sales", "vip"],
            "round {round}"
        );
        let (_, case) = admin(&server, "GET", &format!("/v1/cases/{open}"), None).await;
        assert_eq!(case["group"], "vip", "round {round}: {case}");
        let (_, case) = admin(&server, "GET", &format!("/v1/cases/{ended}"), None).await;
        assert_eq!(case["group"], "old", "round {round}: {case}");
        let mut e = server.agent(&erin).await;
        e.ok(json!({"type": "join", "code": open}), "joined").await;
        drop(e);
        // The deleted group can come back under its id.
        if round == 1 {
            add_group(&server, "old", "Old queue, again").await;
        }
        server.stop().await;
    }
    let server = TestServer::with_config(config()).await;
    assert_eq!(
        visible_groups(&server, ALICE).await,
        ["support", "sales", "vip", "old"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_applies_a_group_change_and_a_later_node_has_it() {
    let redis = crate::util::redis::RedisServer::start();
    let node = |name: &'static str| TestServer::node(&redis, name, "");
    let a = node("a").await;
    let b = node("b").await;
    let mut on_b = dashboard(&b, ALICE).await;
    add_group(&a, "vip", "VIP").await;
    assert_eq!(pushed_groups(&mut on_b).await, ["support", "sales", "vip"]);
    // Used on b at once.
    let code = create_case(&mut on_b, "vip").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        admin(&a, "DELETE", "/v1/admin/groups/vip", None).await,
        409,
        "conflict",
        "open cases",
    );
    add_group(&b, "gone", "Gone").await;
    let (st, _) = admin(&a, "DELETE", "/v1/admin/groups/gone", None).await;
    assert_eq!(st, 204);
    assert_eq!(visible_groups(&b, ALICE).await, ["support", "sales", "vip"]);
    // A node started later has the groups, from the log or the image.
    let c = node("c").await;
    assert_eq!(visible_groups(&c, ALICE).await, ["support", "sales", "vip"]);
    let (_, case) = admin(&c, "GET", &format!("/v1/cases/{code}"), None).await;
    assert_eq!(case["group"], "vip", "{case}");
}

async fn a_deleted_agent_is_pushed_once_more_as_removed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (st, body) = admin(
        &server,
        "POST",
        "/v1/admin/agents",
        Some(json!({"id": "erin", "name": "Erin", "groups": ["support"]})),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let mut bob = dashboard(&server, BOB).await;
    let (st, _) = admin(&server, "DELETE", "/v1/admin/agents/erin", None).await;
    assert_eq!(st, 204);
    let push = bob
        .wait_for("erin's last push", |m| {
            m["type"] == "agent" && m["agent"]["id"] == "erin"
        })
        .await;
    assert_eq!(push["agent"]["removed"], true, "{push}");
    // Gone from the list; the others' pushes carry no `removed`.
    let (_, list) = server.http("GET", "/v1/agents", Some(BOB), None).await;
    assert!(!list.to_string().contains("\"erin\""), "{list}");
    let mut dave = server.agent(DAVE).await;
    dave.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    let push = bob
        .wait_for("dave's push", |m| {
            m["type"] == "agent" && m["agent"]["id"] == "dave"
        })
        .await;
    assert!(push["agent"].get("removed").is_none(), "{push}");
}

in_every_mode!(a_deleted_agent_is_pushed_once_more_as_removed);
