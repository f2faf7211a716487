//! The policies: `least_loaded` picks the agent with the fewest open cases,
//! then the longest idle; `round_robin` rotates in config order and spreads
//! 100 cases within one; away and offline agents get nothing until they
//! can; two hundred parallel help requests never double-assign; a module's
//! default assignee gets its cases under every policy; `manual` assigns
//! nothing.

use std::collections::{HashMap, HashSet};

use super::*;

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
