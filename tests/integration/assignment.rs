//! Automated assignment: policies, presence, load limits, the waiting line,
//! queue positions, orphans, module default assignees and `agent` pushes.

#[path = "assignment/dashboard.rs"]
mod dashboard;
#[path = "assignment/line.rs"]
mod line;
#[path = "assignment/policies.rs"]
mod policies;

use std::time::{Duration, Instant};

use casebroker::Config;
use serde_json::{Value, json};

use crate::util::*;

/// A fourth support agent, after bob and dave in config order.
const ERIN: &str = "erin-token-00006";

/// One company `acme` with the given policy: alice (admin, sales only, so
/// never eligible for support cases), bob, dave and erin (support, in this
/// config order), carol (sales); every agent has `max_cases`. Modules: MODULE
/// (support), MODULE_BOB (support, default assignee bob), MODULE_SALES. A
/// second company `globex` (gina) checks isolation. `extra` holds top-level
/// keys.
fn config(policy: &str, max_cases: u32, extra: &str) -> Config {
    let text = format!(
        r#"
in_memory = true
{extra}

[[companies]]
id = "acme"
name = "ACME"
assignment = "{policy}"
groups = [{{ id = "support" }}, {{ id = "sales" }}]

[[companies.agents]]
id = "alice"
name = "Alice"
token = "{ALICE}"
groups = ["sales"]
admin = true
max_cases = {max_cases}

[[companies.agents]]
id = "bob"
name = "Bob"
token = "{BOB}"
groups = ["support"]
max_cases = {max_cases}

[[companies.agents]]
id = "carol"
name = "Carol"
token = "{CAROL}"
groups = ["sales"]
max_cases = {max_cases}

[[companies.agents]]
id = "dave"
name = "Dave"
token = "{DAVE}"
groups = ["support"]
max_cases = {max_cases}

[[companies.agents]]
id = "erin"
name = "Erin"
token = "{ERIN}"
groups = ["support"]
max_cases = {max_cases}

[[companies.modules]]
key = "{MODULE}"
group = "support"

[[companies.modules]]
key = "{MODULE_BOB}"
group = "support"
default_assignee = "bob"

[[companies.modules]]
key = "{MODULE_SALES}"
group = "sales"

[[companies]]
id = "globex"
name = "Globex"
assignment = "{policy}"
groups = [{{ id = "support" }}]

[[companies.agents]]
id = "gina"
name = "Gina"
token = "{GINA}"
groups = ["support"]
admin = true

[[companies.modules]]
key = "{GLOBEX_MODULE}"
group = "support"
"#
    );
    Config::from_toml(&text).expect("assignment test config is valid")
}

/// A support case created by `ws` (alice); returns the case from the reply,
/// which reflects any automatic assignment made at creation.
async fn new_case(ws: &mut WsClient) -> Value {
    create_case(ws, "support").await
}

/// A support case created by `ws` and assigned by hand to `assignee`.
async fn new_case_for(ws: &mut WsClient, assignee: &str) -> Value {
    let reply = ws
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Manual",
                   "assignee": assignee}),
            "case",
        )
        .await;
    reply["case"].clone()
}

/// An agent connection subscribed to the whole company (alice, admin).
async fn dashboard(server: &TestServer) -> WsClient {
    let mut ws = server.agent(ALICE).await;
    ws.ok(json!({"type": "subscribe"}), "snapshot").await;
    ws
}

/// Polls `GET /v1/cases/{code}` until `pred` holds, for at most `WAIT`.
async fn wait_case(
    server: &TestServer,
    code: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let case = get_case(server, code).await;
        if pred(&case) {
            return case;
        }
        assert!(
            Instant::now() < deadline,
            "case {code}: {what} never happened; last seen {case}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /v1/agents` as `token`.
async fn agents_as(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, body) = server.http("GET", "/v1/agents", Some(token), None).await;
    assert_eq!(status, 200, "GET /v1/agents: {body}");
    body["agents"].as_array().expect("agents array").clone()
}

/// One agent as `GET /v1/agents` shows it to alice.
async fn agent_status(server: &TestServer, id: &str) -> Value {
    agents_as(server, ALICE)
        .await
        .into_iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("agent {id} not listed"))
}

/// Every case alice sees (`GET /v1/cases` with `query`, one page of 1000).
async fn list_cases(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server
        .http(
            "GET",
            &format!("/v1/cases?limit=1000{query}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "GET /v1/cases: {body}");
    assert!(body["next_cursor"].is_null(), "one page expected: {body}");
    body["cases"].as_array().expect("cases array").clone()
}

fn is_open(case: &Value) -> bool {
    case["status"] != "closed" && case["status"] != "expired"
}

/// The open cases assigned to `agent`, from `GET /v1/cases?assignee=`.
async fn open_cases_of(server: &TestServer, agent: &str) -> Vec<Value> {
    list_cases(server, &format!("&assignee={agent}"))
        .await
        .into_iter()
        .filter(is_open)
        .collect()
}

fn assert_auto(case: &Value, agent: &str) {
    assert_eq!(case["assignee"], agent, "{case}");
    assert_eq!(case["assigned_by"], "auto", "{case}");
    assert!(case["assigned_at"].is_string(), "{case}");
}

fn assert_waiting(case: &Value) {
    assert!(case["assignee"].is_null(), "expected unassigned: {case}");
    assert!(case["assigned_by"].is_null(), "{case}");
    assert!(case["assigned_at"].is_null(), "{case}");
}
