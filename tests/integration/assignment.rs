//! Automated assignment: policies, presence, load limits, the waiting line,
//! queue positions, orphans, module default assignees and `agent` pushes.

use std::collections::{HashMap, HashSet};
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

/// Checks over `dur` that `pred` keeps holding for the case.
async fn case_stays(
    server: &TestServer,
    code: &str,
    dur: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    let until = Instant::now() + dur;
    while Instant::now() < until {
        let case = get_case(server, code).await;
        assert!(pred(&case), "case {code}: expected {what}; got {case}");
        tokio::time::sleep(Duration::from_millis(30)).await;
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

/// Polls `GET /v1/agents` until agent `id` matches `pred`.
async fn wait_agent(server: &TestServer, id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = agent_status(server, id).await;
        if pred(&a) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agent {id}: {what} never happened; last seen {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Waits on a dashboard for the next queue event about `code`.
async fn event_for(ws: &mut WsClient, code: &str) -> Value {
    let code = code.to_string();
    ws.wait_for(&format!("event for {code}"), move |v| {
        v["type"] == "event" && v["case"]["code"] == code.as_str()
    })
    .await
}

/// Waits on a dashboard for the next `agent` push about `id` matching `pred`.
async fn agent_push(ws: &mut WsClient, id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    let id = id.to_string();
    let push = ws
        .wait_for(&format!("agent push for {id}: {what}"), move |v| {
            v["type"] == "agent" && v["agent"]["id"] == id.as_str() && pred(&v["agent"])
        })
        .await;
    assert!(
        push.get("seq").is_none(),
        "agent pushes carry no seq: {push}"
    );
    assert!(push.get("id").is_none(), "pushes carry no id: {push}");
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

// 1. Policies.

#[tokio::test]
async fn least_loaded_picks_fewest_open_cases_then_longest_idle() {
    let server = TestServer::with_config(config("least_loaded", 10, "")).await;
    let mut alice = server.agent(ALICE).await;
    let _bob = server.agent(BOB).await;

    // Bob alone: he gets c1, then it is closed, so his load is 0 again but
    // his last automatic assignment is recent.
    let c1 = new_case(&mut alice).await;
    assert_auto(&c1, "bob");
    alice
        .ok(json!({"type": "close", "code": code_of(&c1)}), "case")
        .await;

    let _dave = server.agent(DAVE).await;
    let _erin = server.agent(ERIN).await;

    // All at load 0: dave and erin were never assigned (the oldest), so
    // dave (config order among them) beats bob; then erin, still never
    // assigned, beats bob at load 0; then bob, the only one at load 0; then
    // all at 1, and dave's last assignment is the oldest.
    for want in ["dave", "erin", "bob", "dave"] {
        let c = new_case(&mut alice).await;
        assert_auto(&c, want);
    }

    // Fewest open cases: three manual cases make erin the busiest (4).
    for _ in 0..3 {
        let c = new_case_for(&mut alice, "erin").await;
        assert_eq!(c["assigned_by"], "alice", "{c}");
    }
    // Loads bob 1, dave 2, erin 4 -> bob; then bob 2 / dave 2 (dave idle
    // longer) -> dave; then bob; then bob 3 / dave 3 -> dave.
    for want in ["bob", "dave", "bob", "dave"] {
        let c = new_case(&mut alice).await;
        assert_auto(&c, want);
    }

    let listed: HashMap<String, u64> = agents_as(&server, ALICE)
        .await
        .into_iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["open_cases"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed["bob"], 3, "{listed:?}");
    assert_eq!(listed["dave"], 4, "{listed:?}");
    assert_eq!(listed["erin"], 4, "{listed:?}");
    assert_eq!(open_cases_of(&server, "erin").await.len(), 4);
}

#[tokio::test]
async fn round_robin_rotates_in_config_order() {
    let server = TestServer::with_config(config("round_robin", 10, "")).await;
    let mut alice = server.agent(ALICE).await;
    // Connected in reverse config order: the rotation follows the config.
    let mut erin = server.agent(ERIN).await;
    let _dave = server.agent(DAVE).await;
    let _bob = server.agent(BOB).await;

    // Bob is far busier: round robin ignores load (least loaded would not
    // pick him first).
    for _ in 0..3 {
        new_case_for(&mut alice, "bob").await;
    }
    for want in ["bob", "dave", "erin", "bob", "dave", "erin", "bob"] {
        let c = new_case(&mut alice).await;
        assert_auto(&c, want);
    }

    // An agent who is away is skipped by the rotation.
    erin.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    for want in ["dave", "bob", "dave"] {
        let c = new_case(&mut alice).await;
        assert_auto(&c, want);
    }
    assert_eq!(open_cases_of(&server, "erin").await.len(), 2);
}

// 2. Presence and connections.

#[tokio::test]
async fn away_and_offline_agents_get_nothing_until_they_can() {
    let server = TestServer::with_config(config("round_robin", 5, "")).await;
    let mut alice = server.agent(ALICE).await;

    // Erin was online and left; dave never came; bob is away.
    let erin = server.agent(ERIN).await;
    wait_agent(&server, "erin", "online", |a| a["online"] == true).await;
    erin.close().await;
    wait_agent(&server, "erin", "offline", |a| a["online"] == false).await;
    let mut bob = server.agent(BOB).await;
    let p = bob
        .ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    assert_eq!(p["state"], "away");

    let c1 = new_case(&mut alice).await;
    let c2 = new_case(&mut alice).await;
    assert_waiting(&c1);
    assert_waiting(&c2);
    assert_waiting(&get_case(&server, &code_of(&c1)).await);

    // Bob becomes available: the line drains to him.
    bob.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    for c in [&c1, &c2] {
        let c = wait_case(&server, &code_of(c), "assigned", |c| {
            !c["assignee"].is_null()
        })
        .await;
        assert_auto(&c, "bob");
    }

    // Bob away again; a new case waits until dave connects.
    bob.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    let c3 = new_case(&mut alice).await;
    assert_waiting(&c3);
    let _dave = server.agent(DAVE).await;
    let c3 = wait_case(&server, &code_of(&c3), "assigned", |c| {
        !c["assignee"].is_null()
    })
    .await;
    assert_auto(&c3, "dave");

    let erin = agent_status(&server, "erin").await;
    assert_eq!(erin["open_cases"], 0, "{erin}");
    assert_eq!(erin["online"], false, "{erin}");
}

// 3. max_cases.

#[tokio::test]
async fn max_cases_holds_and_closing_a_case_hands_over_the_oldest_waiting() {
    let server = TestServer::with_config(config("round_robin", 2, "")).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;

    let mut cases = Vec::new();
    for _ in 0..6 {
        cases.push(new_case(&mut alice).await);
    }
    let mut per_agent: HashMap<String, Vec<String>> = HashMap::new();
    for c in &cases[..4] {
        assert_eq!(c["assigned_by"], "auto", "{c}");
        per_agent
            .entry(c["assignee"].as_str().unwrap().to_string())
            .or_default()
            .push(code_of(c));
    }
    assert_eq!(per_agent["bob"].len(), 2, "{per_agent:?}");
    assert_eq!(per_agent["dave"].len(), 2, "{per_agent:?}");
    assert_waiting(&cases[4]);
    assert_waiting(&cases[5]);

    for a in agents_as(&server, ALICE).await {
        assert!(
            a["open_cases"].as_u64().unwrap() <= a["max_cases"].as_u64().unwrap(),
            "{a}"
        );
    }
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 2);
    assert_eq!(open_cases_of(&server, "bob").await.len(), 2);
    assert_eq!(open_cases_of(&server, "dave").await.len(), 2);

    // Bob closes one of his: the oldest waiting case (the 5th) is his.
    bob.ok(
        json!({"type": "close", "code": per_agent["bob"][0]}),
        "case",
    )
    .await;
    let c5 = get_case(&server, &code_of(&cases[4])).await;
    assert_auto(&c5, "bob");
    assert_waiting(&get_case(&server, &code_of(&cases[5])).await);
    assert_eq!(open_cases_of(&server, "bob").await.len(), 2);

    // Dave closes one of his: the 6th is his.
    dave.ok(
        json!({"type": "close", "code": per_agent["dave"][1]}),
        "case",
    )
    .await;
    let c6 = get_case(&server, &code_of(&cases[5])).await;
    assert_auto(&c6, "dave");
    for a in agents_as(&server, ALICE).await {
        assert!(
            a["open_cases"].as_u64().unwrap() <= a["max_cases"].as_u64().unwrap(),
            "{a}"
        );
    }
}

// 4. Oldest first.

#[tokio::test]
async fn the_line_drains_oldest_first() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;
    let mut alice = server.agent(ALICE).await;

    // Nobody eligible: four cases wait, created by different paths.
    let mut codes = Vec::new();
    codes.push(code_of(&new_case(&mut alice).await));
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE, "name": "Ana"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    codes.push(body["code"].as_str().unwrap().to_string());
    codes.push(code_of(&new_case(&mut alice).await));
    codes.push(code_of(&new_case(&mut alice).await));
    for code in &codes {
        assert_waiting(&get_case(&server, code).await);
    }

    let mut bob = server.agent(BOB).await;
    for (i, code) in codes.iter().enumerate() {
        assert_auto(&get_case(&server, code).await, "bob");
        for later in &codes[i + 1..] {
            assert_waiting(&get_case(&server, later).await);
        }
        bob.ok(json!({"type": "close", "code": code}), "case").await;
    }
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 0);
}

// 5. Fairness over many cases.

#[tokio::test]
async fn round_robin_spreads_100_cases_within_one() {
    let server = TestServer::with_config(config("round_robin", 100, UNLIMITED)).await;
    let mut alice = server.agent(ALICE).await;
    let _bob = server.agent(BOB).await;
    let _dave = server.agent(DAVE).await;
    let _erin = server.agent(ERIN).await;

    // Bob carries ten manual cases; the rotation is about turns, not load.
    for _ in 0..10 {
        new_case_for(&mut alice, "bob").await;
    }
    for _ in 0..100 {
        new_case(&mut alice).await;
    }

    let mut auto_counts = Vec::new();
    for agent in ["bob", "dave", "erin"] {
        let cases = open_cases_of(&server, agent).await;
        assert!(cases.iter().all(|c| c["assignee"] == agent));
        auto_counts.push(cases.iter().filter(|c| c["assigned_by"] == "auto").count());
    }
    let max = *auto_counts.iter().max().unwrap();
    let min = *auto_counts.iter().min().unwrap();
    assert_eq!(auto_counts.iter().sum::<usize>(), 100, "{auto_counts:?}");
    assert!(max - min <= 1, "uneven rotation: {auto_counts:?}");
    let waiting = list_cases(&server, "")
        .await
        .into_iter()
        .filter(|c| c["assignee"].is_null())
        .count();
    assert_eq!(waiting, 0);
}

// 6. Atomicity under concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_help_requests_never_double_assign() {
    let server = TestServer::with_config(config(
        "least_loaded",
        10,
        &format!("{UNLIMITED}\nhelp_per_ip_per_minute = 100000"),
    ))
    .await;
    let mut alice = dashboard(&server).await;
    let _bob = server.agent(BOB).await;
    let _dave = server.agent(DAVE).await;
    let _erin = server.agent(ERIN).await;

    let requests = (0..200).map(|i| {
        server.http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE, "name": format!("Customer {i}")})),
        )
    });
    let replies = futures::future::join_all(requests).await;
    let mut created = HashSet::new();
    for (status, body) in &replies {
        assert_eq!(*status, 201, "{body}");
        assert!(created.insert(body["code"].as_str().unwrap().to_string()));
    }
    assert_eq!(created.len(), 200);

    let cases = list_cases(&server, "").await;
    assert_eq!(cases.len(), 200);
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    let mut waiting = 0;
    for c in &cases {
        match &c["assignee"] {
            Value::Null => waiting += 1,
            Value::String(a) => {
                assert_eq!(c["assigned_by"], "auto", "{c}");
                *per_agent.entry(a.clone()).or_default() += 1;
            }
            other => panic!("assignee must be one agent or null: {other}"),
        }
    }
    assert_eq!(waiting, 170, "{per_agent:?}");
    assert_eq!(per_agent.values().sum::<usize>(), 30, "{per_agent:?}");
    for agent in ["bob", "dave", "erin"] {
        assert_eq!(per_agent.get(agent), Some(&10), "{per_agent:?}");
    }

    let agents = agents_as(&server, ALICE).await;
    let mut load_sum = 0;
    for a in &agents {
        let open = a["open_cases"].as_u64().unwrap();
        assert!(open <= a["max_cases"].as_u64().unwrap(), "{a}");
        let id = a["id"].as_str().unwrap();
        assert_eq!(
            open as usize,
            per_agent.get(id).copied().unwrap_or(0),
            "{a}"
        );
        load_sum += open as usize;
    }
    assert_eq!(load_sum, 30);

    // The stream: 200 `created`, and exactly one automatic `updated` for
    // each of the 30 assigned cases.
    let mut seen_created = 0;
    let mut assigned: HashMap<String, String> = HashMap::new();
    while seen_created < 200 || assigned.len() < 30 {
        let ev = alice.wait_type("event").await;
        match ev["action"].as_str() {
            Some("created") => seen_created += 1,
            Some("updated") => {
                let code = code_of(&ev["case"]);
                let who = ev["case"]["assignee"].as_str().unwrap().to_string();
                assert_eq!(ev["case"]["assigned_by"], "auto", "{ev}");
                assert!(
                    assigned.insert(code.clone(), who).is_none(),
                    "{code} assigned twice: {ev}"
                );
            }
            _ => panic!("unexpected event {ev}"),
        }
    }
    alice.sync().await;
    assert!(
        !alice.pending().iter().any(|v| v["type"] == "event"),
        "extra events: {:?}",
        alice.pending()
    );
}

// 7. Queue positions.

#[tokio::test]
async fn waiting_customers_are_told_their_position() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;

    let mut customers = Vec::new();
    for want in 1..=3 {
        let (mut c, joined) = request_help(&server, MODULE).await;
        let code = joined["code"].as_str().unwrap().to_string();
        let q = c.wait_type("queue").await;
        assert_eq!(q["code"], code.as_str(), "{q}");
        assert_eq!(q["position"], want, "{q}");
        customers.push((c, code));
    }
    // Positions are pushed only when they change: nobody got a second one.
    for (c, _) in customers.iter_mut() {
        c.sync().await;
        assert!(
            !c.pending().iter().any(|v| v["type"] == "queue"),
            "{:?}",
            c.pending()
        );
        c.clear();
    }

    // Bob (max 1) comes online and takes the first.
    let mut bob = server.agent(BOB).await;
    let first = customers[0].1.clone();
    let st = customers[0]
        .0
        .wait_for("status after assignment", |v| v["type"] == "status")
        .await;
    assert_eq!(st["code"], first.as_str(), "{st}");
    assert_auto(&get_case(&server, &first).await, "bob");
    for (i, want) in [(1, 1), (2, 2)] {
        let (c, code) = &mut customers[i];
        let q = c.wait_type("queue").await;
        assert_eq!(q["code"], code.as_str(), "{q}");
        assert_eq!(q["position"], want, "{q}");
    }
    customers[0].0.sync().await;
    assert!(
        !customers[0]
            .0
            .pending()
            .iter()
            .any(|v| v["type"] == "queue"),
        "the assigned customer is out of the line: {:?}",
        customers[0].0.pending()
    );

    // Bob closes it: the second is his, the third moves to 1.
    bob.ok(json!({"type": "close", "code": first}), "case")
        .await;
    let second = customers[1].1.clone();
    customers[1]
        .0
        .wait_for("status after assignment", |v| v["type"] == "status")
        .await;
    assert_auto(&get_case(&server, &second).await, "bob");
    let q = customers[2].0.wait_type("queue").await;
    assert_eq!(q["position"], 1, "{q}");
}

// 8. Orphans.

#[tokio::test]
async fn orphaned_automatic_cases_return_to_the_line() {
    let timeout = Duration::from_millis(300);
    let server =
        TestServer::with_config(config("round_robin", 5, r#"orphan_timeout = "300ms""#)).await;
    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;

    // A: automatic, never joined. B: automatic, joined. C: manual.
    let (mut customer_a, ja) = request_help(&server, MODULE).await;
    let a = ja["code"].as_str().unwrap().to_string();
    let (_customer_b, jb) = request_help(&server, MODULE).await;
    let b = jb["code"].as_str().unwrap().to_string();
    assert_auto(&get_case(&server, &a).await, "bob");
    assert_auto(&get_case(&server, &b).await, "bob");
    bob.ok(json!({"type": "join", "code": b}), "joined").await;
    let c = code_of(&new_case_for(&mut alice, "bob").await);
    customer_a.sync().await;
    customer_a.clear();
    alice.sync().await;
    alice.clear();

    let gone = Instant::now();
    bob.close().await;

    let ev = alice
        .wait_for("A back in the line", |v| {
            v["type"] == "event"
                && v["case"]["code"] == a.as_str()
                && v["case"]["assignee"].is_null()
        })
        .await;
    assert!(
        gone.elapsed() >= timeout,
        "returned after {:?}, before orphan_timeout",
        gone.elapsed()
    );
    assert_eq!(ev["action"], "updated", "{ev}");
    assert!(ev["case"]["assigned_by"].is_null(), "{ev}");
    assert_waiting(&get_case(&server, &a).await);
    let q = customer_a.wait_type("queue").await;
    assert_eq!(q["position"], 1, "{q}");

    // The joined and the manual case stay with bob.
    alice.sync().await;
    for v in alice.pending() {
        if v["type"] == "event"
            && (v["case"]["code"] == b.as_str() || v["case"]["code"] == c.as_str())
        {
            assert_eq!(v["case"]["assignee"], "bob", "{v}");
        }
    }
    for code in [&b, &c] {
        case_stays(&server, code, 2 * timeout, "still bob's", |c| {
            c["assignee"] == "bob"
        })
        .await;
    }
    assert_eq!(get_case(&server, &c).await["assigned_by"], "alice");

    // Back in the line: the next eligible agent gets A.
    let _dave = server.agent(DAVE).await;
    let a_case = wait_case(&server, &a, "assigned to dave", |c| c["assignee"] == "dave").await;
    assert_auto(&a_case, "dave");
    assert_eq!(get_case(&server, &b).await["assignee"], "bob");
}

// 9. Module default assignee.

#[tokio::test]
async fn module_default_assignee_gets_its_cases_under_every_policy() {
    for policy in ["manual", "round_robin", "least_loaded"] {
        let server = TestServer::with_config(config(policy, 1, "")).await;
        // Dave is online and eligible; bob is offline and has max_cases 1.
        let _dave = server.agent(DAVE).await;

        let mut codes = Vec::new();
        for _ in 0..2 {
            let (_c, joined) = request_help(&server, MODULE_BOB).await;
            codes.push(joined["code"].as_str().unwrap().to_string());
        }
        let (status, body) = server
            .http(
                "POST",
                "/v1/help",
                None,
                Some(json!({"module": MODULE_BOB})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["case"]["supporter"]["name"], "Bob", "{body}");
        codes.push(body["code"].as_str().unwrap().to_string());
        for code in &codes {
            let c = get_case(&server, code).await;
            assert_auto(&c, "bob");
        }
        let bob = agent_status(&server, "bob").await;
        assert_eq!(bob["online"], false, "{policy}: {bob}");
        assert_eq!(bob["open_cases"], 3, "{policy}: {bob}");

        // Control: a module without a default follows the policy.
        let (_c, joined) = request_help(&server, MODULE).await;
        let plain = get_case(&server, joined["code"].as_str().unwrap()).await;
        if policy == "manual" {
            assert_waiting(&plain);
        } else {
            assert_auto(&plain, "dave");
        }
    }
}

// 10. assign null.

#[tokio::test]
async fn assign_null_returns_the_case_to_the_line_and_not_to_the_returner() {
    let server = TestServer::with_config(config("least_loaded", 5, "")).await;
    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;
    let _dave = server.agent(DAVE).await;

    let c1 = new_case(&mut alice).await;
    assert_auto(&c1, "bob");
    let c2 = new_case(&mut alice).await;
    assert_auto(&c2, "dave");
    let code = code_of(&c1);
    alice.sync().await;
    alice.clear();

    // Bob gives c1 back: he then has 0 open cases and dave 1, so least
    // loaded alone would hand it straight back to bob.
    let reply = bob
        .request(json!({"type": "assign", "code": code, "assignee": null}))
        .await;
    assert_eq!(reply["type"], "case", "{reply}");

    let back = event_for(&mut alice, &code).await;
    assert_eq!(back["action"], "updated", "{back}");
    assert_waiting(&back["case"]);
    let next = event_for(&mut alice, &code).await;
    assert_eq!(next["action"], "updated", "{next}");
    assert_auto(&next["case"], "dave");
    assert_eq!(next["seq"], back["seq"].as_u64().unwrap() + 1, "{next}");

    assert_auto(&get_case(&server, &code).await, "dave");
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 0);
    assert_eq!(agent_status(&server, "dave").await["open_cases"], 2);
}

// 11. Presence, listing, pushes, manual.

#[tokio::test]
async fn agents_listing_and_agent_pushes_follow_presence_and_load() {
    let server = TestServer::with_config(config("round_robin", 3, "")).await;

    let listed = agents_as(&server, ALICE).await;
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alice", "bob", "carol", "dave", "erin"]);
    let bob = &listed[1];
    assert_eq!(bob["name"], "Bob");
    assert_eq!(bob["groups"], json!(["support"]));
    assert_eq!(bob["online"], false);
    assert_eq!(bob["presence"], "available");
    assert_eq!(bob["open_cases"], 0);
    assert_eq!(bob["max_cases"], 3);
    let globex: Vec<Value> = agents_as(&server, GINA).await;
    assert_eq!(globex.len(), 1, "{globex:?}");
    assert_eq!(globex[0]["id"], "gina");
    let (status, _) = server.http("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 401);

    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;
    agent_push(&mut alice, "bob", "online", |a| {
        a["online"] == true && a["presence"] == "available" && a["open_cases"] == 0
    })
    .await;
    let listed = agent_status(&server, "bob").await;
    assert_eq!(listed["online"], true, "{listed}");
    assert_eq!(agent_status(&server, "alice").await["online"], true);

    bob.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    agent_push(&mut alice, "bob", "away", |a| a["presence"] == "away").await;
    assert_eq!(agent_status(&server, "bob").await["presence"], "away");
    bob.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    agent_push(&mut alice, "bob", "available", |a| {
        a["presence"] == "available"
    })
    .await;

    let case = new_case(&mut alice).await;
    assert_auto(&case, "bob");
    agent_push(&mut alice, "bob", "load 1", |a| a["open_cases"] == 1).await;
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 1);
    bob.ok(json!({"type": "close", "code": code_of(&case)}), "case")
        .await;
    agent_push(&mut alice, "bob", "load 0", |a| a["open_cases"] == 0).await;

    bob.close().await;
    agent_push(&mut alice, "bob", "offline", |a| a["online"] == false).await;
    assert_eq!(agent_status(&server, "bob").await["online"], false);
}

#[tokio::test]
async fn manual_policy_assigns_nothing() {
    let server = TestServer::with_config(config("manual", 5, "")).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let _dave = server.agent(DAVE).await;

    let c1 = new_case(&mut alice).await;
    assert_waiting(&c1);
    let (_customer, joined) = request_help(&server, MODULE).await;
    let c2 = joined["code"].as_str().unwrap().to_string();

    // Presence changes and closing cases would trigger dispatch elsewhere.
    bob.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    bob.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    let mine = new_case_for(&mut alice, "bob").await;
    bob.ok(json!({"type": "close", "code": code_of(&mine)}), "case")
        .await;
    let _erin = server.agent(ERIN).await;

    assert_waiting(&get_case(&server, &code_of(&c1)).await);
    assert_waiting(&get_case(&server, &c2).await);
    for id in ["bob", "dave", "erin"] {
        assert_eq!(agent_status(&server, id).await["open_cases"], 0, "{id}");
    }
}

// 12. Automatic changes on the stream.

#[tokio::test]
async fn automatic_changes_are_ordinary_updated_events() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;
    let mut alice = server.agent(ALICE).await;
    let snap = alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    let mut seq = snap["seq"].as_u64().unwrap();
    let mut next = |ev: &Value| {
        seq += 1;
        assert_eq!(ev["seq"], seq, "contiguous seq for an admin: {ev}");
    };

    // Nobody eligible: created, unassigned.
    let c1 = code_of(&new_case(&mut alice).await);
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created");
    assert_waiting(&ev["case"]);

    // Bob connects: an `updated` event carries the automatic assignment.
    let mut bob = server.agent(BOB).await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["code"], c1.as_str());
    assert_auto(&ev["case"], "bob");

    // A help request while bob is full waits...
    let (_customer, joined) = request_help(&server, MODULE).await;
    let c2 = joined["code"].as_str().unwrap().to_string();
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created", "{ev}");
    assert_waiting(&ev["case"]);

    // ...until bob closes c1: the close, then the automatic assignment.
    bob.ok(json!({"type": "close", "code": c1}), "case").await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["case"]["code"], c1.as_str());
    assert_eq!(ev["case"]["status"], "closed");
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["code"], c2.as_str());
    assert_auto(&ev["case"], "bob");

    // A module default is automatic from creation on.
    let (_customer, joined) = request_help(&server, MODULE_BOB).await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["case"]["code"], joined["code"]);
    assert_auto(&ev["case"], "bob");

    // For contrast, a manual assignment names who made it.
    alice
        .ok(
            json!({"type": "assign", "code": c2, "assignee": "dave"}),
            "case",
        )
        .await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["assignee"], "dave");
    assert_eq!(ev["case"]["assigned_by"], "alice");
}

#[tokio::test]
async fn agents_outside_a_dashboards_groups_are_not_shown_to_it() {
    let server = TestServer::with_config(config("manual", 5, "")).await;
    // Bob sees support; carol is in sales only; dave is in support.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "subscribe"}), "snapshot").await;
    let _carol = server.agent(CAROL).await;
    let _dave = server.agent(DAVE).await;
    agent_push(&mut bob, "dave", "dave online", |a| a["online"] == true).await;
    bob.sync().await;
    assert!(
        bob.pending()
            .iter()
            .all(|m| !(m["type"] == "agent" && m["agent"]["id"] == "carol")),
        "bob was told about carol: {:?}",
        bob.pending()
    );
    let ids: Vec<String> = agents_as(&server, BOB)
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"dave".to_string()), "{ids:?}");
    assert!(!ids.contains(&"carol".to_string()), "{ids:?}");
    // An admin sees everyone.
    let all = agents_as(&server, ALICE).await;
    assert!(all.iter().any(|a| a["id"] == "carol"), "{all:?}");
}
