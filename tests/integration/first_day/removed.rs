//! A person or a group removed from the config: a removed agent keeps its
//! history and its open cases return to the line; a removed group that
//! still has cases is refused before listening, with exit code 64.

use serde_json::Value;

use crate::util::process::{BROKER, Process};

use super::*;

/// A config with bob, a journaled broker on `dir`.
fn with_data(dir: &TempDir, extra: &str) -> String {
    format!("data_dir = \"{}\"\n{extra}", dir.path().display())
}

/// The test config without one agent (by id) or one group.
fn without(text: &str, what: &str) -> String {
    match what {
        "bob" => text
            .replace(
                &format!(
                    "[[companies.agents]]\nid = \"bob\"\nname = \"Bob\"\ntoken = \"{BOB}\"\ngroups = [\"support\"]\n"
                ),
                "",
            )
            .replace("default_assignee = \"bob\"\n", ""),
        "sales" => text
            .replace(", { id = \"sales\" }", "")
            .replace("groups = [\"support\", \"sales\"]", "groups = [\"support\"]")
            .replace(
                &format!(
                    "[[companies.agents]]\nid = \"carol\"\nname = \"Carol\"\ntoken = \"{CAROL}\"\ngroups = [\"sales\"]\n"
                ),
                "",
            )
            .replace(
                &format!("[[companies.modules]]\nkey = \"{MODULE_SALES}\"\ngroup = \"sales\"\n"),
                "",
            ),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agent_keeps_its_history_and_its_open_cases_return_to_the_line() {
    let dir = TempDir::new("former");
    let full = config_text(&with_data(&dir, ""));
    let server = TestServer::with_config(casebroker::Config::from_toml(&full).unwrap()).await;
    let mut bob = server.agent(BOB).await;
    let open = bob
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Open"}),
            "case",
        )
        .await["case"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let done = bob
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Done"}),
            "case",
        )
        .await["case"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = server
        .http(
            "POST",
            &format!("/v1/cases/{open}/assign"),
            Some(BOB),
            Some(json!({"assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 200);
    bob.ok(json!({"type": "close", "code": done}), "case").await;
    drop(bob);
    server.stop().await;

    // Bob leaves the team: the broker starts without him.
    let config = casebroker::Config::from_toml(&without(&full, "bob")).unwrap();
    let server = TestServer::with_config(config).await;
    let (st, case) = server
        .http("GET", &format!("/v1/cases/{open}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "{case}");
    assert_eq!(case["assignee"], Value::Null, "back in the line: {case}");
    assert_eq!(case["created_by"], "bob", "the history keeps him: {case}");
    let (_, closed) = server
        .http("GET", &format!("/v1/cases/{done}"), Some(ALICE), None)
        .await;
    assert_eq!(closed["closed_by"], "bob", "{closed}");
    assert_eq!(closed["status"], "closed", "{closed}");
    // He cannot sign in, nor be given a case.
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": BOB}))
        .await;
    let refused = ws.wait_type("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    let (st, body) = server
        .http(
            "POST",
            &format!("/v1/cases/{open}/assign"),
            Some(ALICE),
            Some(json!({"assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["code"], "bad_request", "{body}");
    let (_, agents) = server.http("GET", "/v1/agents", Some(ALICE), None).await;
    assert!(
        !agents.to_string().contains("\"bob\""),
        "a former agent is not listed: {agents}"
    );
    // And another agent takes the case.
    let mut dave = server.agent(DAVE).await;
    dave.ok(json!({"type": "join", "code": open}), "joined")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_group_with_cases_is_refused_before_listening_with_64() {
    let first = Process::start(
        BROKER,
        Some(&config_text("data_dir = \"data\"")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let at = Endpoint::new(first.listening().await);
    create_over_http(&at, ALICE, json!({"group": "sales", "name": "Sales case"})).await;
    let dir = first.stop().await;
    let config = without(&config_text("data_dir = \"data\""), "sales");
    let second = Process::start_in(
        BROKER,
        dir,
        Some(&config),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let status = second.exit(WAIT * 2).await;
    assert_eq!(status.code(), Some(64), "{}", second.output());
    let out = second.output();
    assert!(out.contains("group \"sales\""), "{out}");
    assert!(!out.contains("listening"), "{out}");
}
