//! `transfer` to another group and/or agent, over WebSocket and HTTP, in
//! each storage mode, across a restart (and kill -9 with the groups
//! reordered) and across the nodes of a cluster.

use serde_json::{Value, json};

use crate::util::process::{BROKER, Process};
use crate::util::*;

/// A subscribed dashboard of `token`.
pub(crate) async fn dashboard(server: &TestServer, token: &str) -> WsClient {
    let mut ws = server.agent(token).await;
    ws.ok(json!({"type": "subscribe"}), "snapshot").await;
    ws
}

/// The next `event` about `code`.
async fn event_of(ws: &mut WsClient, code: &str) -> Value {
    let code = code.to_string();
    ws.wait_for(&format!("an event of {code}"), move |m| {
        m["type"] == "event" && m["case"]["code"] == code.as_str()
    })
    .await
}

/// A case of `module`'s group that bob joined, with its customer
/// connected: returns the customer, bob's session connection and the code.
pub(crate) async fn in_progress_with_bob(server: &TestServer) -> (WsClient, WsClient, String) {
    let (customer, joined) = request_help(server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut bob = server.agent(BOB).await;
    let reply = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(reply["case"]["status"], "in_progress", "{reply}");
    (customer, bob, code)
}

async fn a_case_moves_to_another_group_and_agent(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&server).await;
    let mut support = dashboard(&server, DAVE).await;
    let mut sales = dashboard(&server, CAROL).await;

    // Bob, the assignee, hands the case to Carol in sales.
    let reply = bob
        .ok(
            json!({"type": "transfer", "code": code, "group": "sales", "assignee": "carol"}),
            "case",
        )
        .await;
    assert_eq!(reply["case"]["group"], "sales", "{reply}");
    assert_eq!(reply["case"]["assignee"], "carol", "{reply}");
    assert_eq!(reply["case"]["assigned_by"], "bob", "{reply}");
    assert_eq!(reply["case"]["status"], "pending", "{reply}");

    // Bob's seat ends; the customer is told who helps now.
    let ended = bob.wait_type("ended").await;
    assert_eq!(
        ended,
        json!({"type": "ended", "code": code, "reason": "reassigned"})
    );
    let status = customer
        .wait_for("status naming Carol", |m| {
            m["type"] == "status" && m["supporter"]["name"] == "Carol"
        })
        .await;
    assert_eq!(status["supporter_connected"], false, "{status}");

    // One event for the command: the support dashboard sees the case leave
    // (it is in sales now) and nothing of it after; the sales dashboard
    // sees it arrive, assigned to Carol.
    let moved = event_of(&mut support, &code).await;
    assert_eq!(moved["action"], "updated", "{moved}");
    assert_eq!(moved["case"]["group"], "sales", "{moved}");
    assert_eq!(moved["case"]["assignee"], "carol", "{moved}");
    let arrived = event_of(&mut sales, &code).await;
    assert_eq!(arrived, moved);
    support.sync().await;
    assert!(
        support
            .pending()
            .iter()
            .all(|m| m["case"]["code"] != code.as_str()),
        "{:?}",
        support.pending()
    );

    // Bob no longer sees it; Carol does, and joins.
    let path = format!("/v1/cases/{code}");
    assert_error(
        server.http("GET", &path, Some(BOB), None).await,
        404,
        "not_found",
        "",
    );
    let (st, case) = server.http("GET", &path, Some(CAROL), None).await;
    assert_eq!((st, &case["group"]), (200, &json!("sales")), "{case}");
    let mut carol = server.agent(CAROL).await;
    carol
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    customer
        .wait_for("in_progress with Carol", |m| {
            m["type"] == "status" && m["status"] == "in_progress"
        })
        .await;
}

async fn without_an_assignee_a_member_stays_and_others_line_up(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;

    // Alice (in support and sales) keeps her case when it moves to sales.
    let case = alice
        .ok(
            json!({"type": "create_case", "group": "support", "name": "A", "assignee": "alice"}),
            "case",
        )
        .await["case"]
        .clone();
    let code = case["code"].as_str().unwrap();
    let reply = alice
        .ok(
            json!({"type": "transfer", "code": code, "group": "sales"}),
            "case",
        )
        .await;
    assert_eq!(reply["case"]["group"], "sales", "{reply}");
    assert_eq!(reply["case"]["assignee"], "alice", "{reply}");

    // Bob's case moved by an admin to sales waits in sales's line: bob is
    // not a member there.
    let (_customer, _bob, code) = in_progress_with_bob(&server).await;
    let reply = alice
        .ok(
            json!({"type": "transfer", "code": code, "group": "sales"}),
            "case",
        )
        .await;
    assert_eq!(reply["case"]["group"], "sales", "{reply}");
    assert_eq!(reply["case"]["assignee"], Value::Null, "{reply}");
    let (st, list) = server
        .http("GET", "/v1/cases?group=sales", Some(CAROL), None)
        .await;
    assert_eq!(st, 200, "{list}");
    assert!(
        list["cases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == code.as_str() && c["assignee"].is_null()),
        "{list}"
    );

    // Over HTTP: back to the line of the same group with `assignee: null`,
    // then to Carol.
    let path = format!("/v1/cases/{code}/transfer");
    let (st, body) = server
        .http(
            "POST",
            &path,
            Some(ALICE),
            Some(json!({"assignee": "carol"})),
        )
        .await;
    assert_eq!((st, &body["assignee"]), (200, &json!("carol")), "{body}");
    let (st, body) = server
        .http("POST", &path, Some(CAROL), Some(json!({"assignee": null})))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        (&body["group"], &body["assignee"]),
        (&json!("sales"), &Value::Null)
    );
    // Moving a case to the group it is in changes nothing.
    let (st, same) = server
        .http("POST", &path, Some(ALICE), Some(json!({"group": "sales"})))
        .await;
    assert_eq!(st, 200, "{same}");
    assert_eq!(same["updated_at"], body["updated_at"], "{same}");
}

async fn every_bad_transfer_gets_its_code(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&server).await;
    let mut dave = server.agent(DAVE).await;
    let transfer = |extra: Value| {
        let mut v = json!({"type": "transfer", "code": code});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let cases = [
        (json!({}), "bad_request", "group, an assignee"),
        (
            json!({"group": "billing"}),
            "bad_request",
            "unknown group \"billing\"",
        ),
        (
            json!({"assignee": "zed"}),
            "bad_request",
            "unknown agent \"zed\"",
        ),
        (json!({"group": 7}), "bad_request", "invalid type"),
        (
            json!({"group": "sales", "assignee": "dave"}),
            "forbidden",
            "not a member of group \"sales\"",
        ),
    ];
    for (extra, code_, says) in &cases {
        let e = bob.err(transfer(extra.clone()), code_).await;
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{extra}: {e}"
        );
    }
    // Only the assignee and admins.
    let e = dave
        .err(transfer(json!({"group": "sales"})), "forbidden")
        .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("assignee or an admin"),
        "{e}"
    );
    // Another company's case, an unknown code, a bad code.
    let mut gina = server.agent(GINA).await;
    gina.err(transfer(json!({"group": "support"})), "not_found")
        .await;
    bob.err(
        json!({"type": "transfer", "code": "s99-999-999", "group": "sales"}),
        "not_found",
    )
    .await;
    bob.err(
        json!({"type": "transfer", "code": "nope", "group": "sales"}),
        "bad_request",
    )
    .await;
    bob.err(json!({"type": "transfer", "group": "sales"}), "bad_request")
        .await;
    // Customers may not.
    customer
        .err(transfer(json!({"group": "sales"})), "forbidden")
        .await;
    // Over HTTP, the same codes.
    let path = format!("/v1/cases/{code}/transfer");
    assert_error(
        server.http("POST", &path, Some(BOB), Some(json!({}))).await,
        400,
        "bad_request",
        "group, an assignee",
    );
    assert_error(
        server
            .http("POST", &path, Some(BOB), Some(json!({"group": "billing"})))
            .await,
        400,
        "bad_request",
        "unknown group",
    );
    assert_error(
        server
            .http("POST", &path, Some(DAVE), Some(json!({"group": "sales"})))
            .await,
        403,
        "forbidden",
        "assignee or an admin",
    );
    assert_error(
        server
            .http("POST", &path, None, Some(json!({"group": "sales"})))
            .await,
        401,
        "unauthorized",
        "",
    );
    // Nothing moved.
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
        .await;
    assert_eq!(
        (&case["group"], &case["assignee"]),
        (&json!("support"), &json!("bob"))
    );
    // A closed case stays where it is.
    bob.ok(json!({"type": "close", "code": code}), "case").await;
    bob.err(transfer(json!({"group": "sales"})), "conflict")
        .await;
}

in_every_mode!(
    a_case_moves_to_another_group_and_agent,
    without_an_assignee_a_member_stays_and_others_line_up,
    every_bad_transfer_gets_its_code,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_survives_a_restart() {
    let dir = TempDir::new("transfer");
    let extra = format!("data_dir = \"{}\"", dir.path().display());
    let server = TestServer::with_config(config_with(&extra)).await;
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let code = case["code"].as_str().unwrap().to_string();
    alice
        .ok(
            json!({"type": "transfer", "code": code, "group": "sales", "assignee": "carol"}),
            "case",
        )
        .await;
    drop(alice);
    server.stop().await;

    let server = TestServer::with_config(config_with(&extra)).await;
    let (st, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(CAROL), None)
        .await;
    assert_eq!(st, 200, "{case}");
    assert_eq!(
        (&case["group"], &case["assignee"]),
        (&json!("sales"), &json!("carol"))
    );
    // And it waits in the right line once back there.
    let (st, _) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/transfer"),
            Some(CAROL),
            Some(json!({"assignee": null})),
        )
        .await;
    assert_eq!(st, 200);
    let (_, list) = server
        .http("GET", "/v1/cases?group=sales&status=new", Some(CAROL), None)
        .await;
    assert_eq!(list["cases"][0]["code"], code.as_str(), "{list}");
    assert_eq!(list["cases"][0]["assignee"], Value::Null, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_on_one_node_reaches_a_dashboard_on_another() {
    let redis = redis::RedisServer::start();
    let a = TestServer::node(&redis, "a", "").await;
    let b = TestServer::node(&redis, "b", "").await;
    let mut support_on_b = dashboard(&b, DAVE).await;
    let mut sales_on_b = dashboard(&b, CAROL).await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&a).await;
    bob.ok(
        json!({"type": "transfer", "code": code, "group": "sales", "assignee": "carol"}),
        "case",
    )
    .await;
    // Node b's dashboards get the move: support's as the case leaving.
    for ws in [&mut support_on_b, &mut sales_on_b] {
        let c = code.clone();
        let moved = ws
            .wait_for("the move", move |m| {
                m["type"] == "event"
                    && m["case"]["code"] == c.as_str()
                    && m["case"]["group"] == "sales"
            })
            .await;
        assert_eq!(moved["case"]["assignee"], "carol", "{moved}");
    }
    customer
        .wait_for("status naming Carol", |m| {
            m["type"] == "status" && m["supporter"]["name"] == "Carol"
        })
        .await;
    // Carol joins on node b.
    let mut carol = b.agent(CAROL).await;
    carol
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaled_transfer_survives_kill_9_and_a_reordered_config() {
    let config = config_text("");
    let broker = Process::start_in(
        BROKER,
        TempDir::new("transfer-kill"),
        Some(&config),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let case: Value = http
        .post(url("/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": "support", "name": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = case["code"].as_str().unwrap().to_string();
    let moved = http
        .post(url(&format!("/v1/cases/{code}/transfer")))
        .bearer_auth(ALICE)
        .json(&json!({"group": "sales"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    // Only the journal has the move; the groups come back in another order.
    let dir = broker.kill9().await;
    let reordered = config.replace(
        r#"groups = [{ id = "support" }, { id = "sales" }]"#,
        r#"groups = [{ id = "sales" }, { id = "support" }]"#,
    );
    assert_ne!(reordered, config);
    let broker = Process::start_in(
        BROKER,
        dir,
        Some(&reordered),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    let case: Value = http
        .get(format!("http://{addr}/v1/cases/{code}"))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(case["group"], "sales", "{case}");
}
