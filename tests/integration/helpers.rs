//! `invite` a helper, `watch` a session unseen and `whisper` to the
//! agents only, over WebSocket and HTTP, in each storage mode, across kill
//! -9 and a restart, and across the nodes of a cluster.

use serde_json::{Value, json};

use crate::transfer::in_progress_with_bob;
use crate::util::process::{BROKER, Process};
use crate::util::*;

/// The next `chat` on `ws` with this text.
async fn line(ws: &mut WsClient, text: &str) -> Value {
    let text = text.to_string();
    ws.wait_for(&format!("the line {text:?}"), move |m| {
        m["type"] == "chat" && m["text"] == text.as_str()
    })
    .await
}

async fn a_helper_joins_beside_the_assignee_and_hears_everything(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&server).await;
    // Carol (sales) is asked to help with a support case.
    let mut carol = server.agent(CAROL).await;
    let reply = bob
        .ok(
            json!({"type": "invite", "code": code, "agent": "carol"}),
            "case",
        )
        .await;
    assert_eq!(reply["case"]["helpers"], json!(["carol"]), "{reply}");
    let invited = carol.wait_type("invited").await;
    assert_eq!(invited["code"], code.as_str(), "{invited}");
    assert_eq!(invited["by"], "bob", "{invited}");
    assert_eq!(invited["case"]["helpers"], json!(["carol"]), "{invited}");
    // She joins as a helper: the case and its status stay the assignee's.
    customer.sync().await;
    customer.clear();
    let joined = carol
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(joined["case"]["assignee"], "bob", "{joined}");
    assert_eq!(joined["case"]["status"], "in_progress", "{joined}");
    // The customer's line reaches both agents; each agent's line reaches
    // the customer and the other agent, never its sender.
    customer
        .ok(json!({"type": "chat", "text": "hello?"}), "sent")
        .await;
    line(&mut bob, "hello?").await;
    line(&mut carol, "hello?").await;
    carol
        .ok(
            json!({"type": "chat", "code": code, "text": "Carol here"}),
            "sent",
        )
        .await;
    let heard = line(&mut customer, "Carol here").await;
    assert_eq!(
        heard["from"],
        json!({"role": "agent", "name": "Carol"}),
        "{heard}"
    );
    line(&mut bob, "Carol here").await;
    carol.sync().await;
    assert!(
        carol.pending().iter().all(|m| m["type"] != "chat"),
        "{:?}",
        carol.pending()
    );
    // The helper leaving changes nothing for the customer's status.
    carol
        .ok(json!({"type": "leave", "code": code}), "left")
        .await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": "still here"}),
        "sent",
    )
    .await;
    line(&mut customer, "still here").await;
    carol.sync().await;
    assert!(carol.pending().iter().all(|m| m["type"] != "chat"));
    customer.sync().await;
    assert!(
        customer.pending().iter().all(|m| m["type"] != "status"),
        "{:?}",
        customer.pending()
    );
    // Over HTTP too; inviting again changes nothing.
    let (st, case) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/invite"),
            Some(ALICE),
            Some(json!({"agent": "dave"})),
        )
        .await;
    assert_eq!(st, 200, "{case}");
    assert_eq!(case["helpers"], json!(["carol", "dave"]), "{case}");
    let (_, again) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/invite"),
            Some(ALICE),
            Some(json!({"agent": "dave"})),
        )
        .await;
    assert_eq!(again["helpers"], json!(["carol", "dave"]), "{again}");
    // The session ends for the helper too when the case closes.
    carol
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(json!({"type": "close", "code": code}), "case").await;
    let ended = carol.wait_type("ended").await;
    assert_eq!(ended["reason"], "closed", "{ended}");
}

async fn an_admin_watches_unseen_and_whispers_reach_agents_only(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&server).await;
    let mut alice = server.agent(ALICE).await;
    customer.sync().await;
    customer.clear();
    let reply = alice
        .ok(json!({"type": "watch", "code": code}), "case")
        .await;
    assert_eq!(reply["case"]["status"], "in_progress", "{reply}");
    // The customer is not told: no status, no event of the case.
    customer.sync().await;
    assert!(
        customer.pending().iter().all(|m| m["type"] != "status"),
        "{:?}",
        customer.pending()
    );
    // The watcher gets both sides of the chat.
    customer
        .ok(json!({"type": "chat", "text": "my printer"}), "sent")
        .await;
    line(&mut alice, "my printer").await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": "on it"}),
        "sent",
    )
    .await;
    line(&mut alice, "on it").await;
    // A whisper reaches the agents, marked, and never the customer.
    alice
        .ok(
            json!({"type": "whisper", "code": code, "text": "check the toner first"}),
            "sent",
        )
        .await;
    let w = line(&mut bob, "check the toner first").await;
    assert_eq!(w["internal"], true, "{w}");
    assert_eq!(w["from"], json!({"role": "agent", "name": "Alice"}), "{w}");
    bob.ok(
        json!({"type": "whisper", "code": code, "text": "done"}),
        "sent",
    )
    .await;
    let w = line(&mut alice, "done").await;
    assert_eq!(w["internal"], true, "{w}");
    // Over HTTP, to every agent in the session.
    let (st, body) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/whisper"),
            Some(ALICE),
            Some(json!({"text": "from the API"})),
        )
        .await;
    assert_eq!((st, &body["code"]), (200, &json!(code)), "{body}");
    line(&mut bob, "from the API").await;
    line(&mut alice, "from the API").await;
    line(&mut customer, "on it").await;
    customer.sync().await;
    assert!(
        customer.pending().iter().all(|m| m["type"] != "chat"),
        "the customer got a whisper: {:?}",
        customer.pending()
    );
    // The transcript keeps them, marked, in time order.
    let (st, t) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/transcript"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let texts: Vec<(String, bool)> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_string(),
                m["internal"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let want: Vec<(String, bool)> = [
        ("my printer", false),
        ("on it", false),
        ("check the toner first", true),
        ("done", true),
        ("from the API", true),
    ]
    .iter()
    .map(|(t, i)| (t.to_string(), *i))
    .collect();
    assert_eq!(texts, want, "{t}");
    // Unwatch: no more lines.
    alice
        .ok(json!({"type": "unwatch", "code": code}), "left")
        .await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": "after"}),
        "sent",
    )
    .await;
    line(&mut customer, "after").await;
    alice.sync().await;
    assert!(
        alice.pending().iter().all(|m| m["type"] != "chat"),
        "{:?}",
        alice.pending()
    );
    // A watcher's session ends with the case.
    alice
        .ok(json!({"type": "watch", "code": code}), "case")
        .await;
    bob.ok(json!({"type": "close", "code": code}), "case").await;
    let ended = alice.wait_type("ended").await;
    assert_eq!(ended["reason"], "closed", "{ended}");
}

async fn every_bad_invite_watch_and_whisper_gets_its_code(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, bob, code) = in_progress_with_bob(&server).await;
    // Connections by name: bob (the assignee), dave, carol, alice.
    let mut ws = [
        bob,
        server.agent(DAVE).await,
        server.agent(CAROL).await,
        server.agent(ALICE).await,
    ];
    let (bob_, dave, carol, alice) = (0, 1, 2, 3);
    let c = code.as_str();
    let long = "x".repeat(5000);
    let cases = [
        (
            dave,
            json!({"type": "invite", "code": c, "agent": "carol"}),
            "forbidden",
            "assignee or an admin",
        ),
        (
            bob_,
            json!({"type": "invite", "code": c, "agent": "zed"}),
            "bad_request",
            "unknown agent \"zed\"",
        ),
        (
            bob_,
            json!({"type": "invite", "code": c, "agent": "bob"}),
            "conflict",
            "assignee",
        ),
        (
            bob_,
            json!({"type": "invite", "code": c}),
            "bad_request",
            "agent",
        ),
        (
            bob_,
            json!({"type": "watch", "code": c}),
            "forbidden",
            "only admins",
        ),
        (
            alice,
            json!({"type": "unwatch", "code": c}),
            "conflict",
            "not watching",
        ),
        (
            alice,
            json!({"type": "watch", "code": "s99-999-999"}),
            "not_found",
            "",
        ),
        (
            dave,
            json!({"type": "whisper", "code": c, "text": "x"}),
            "forbidden",
            "assignee, a helper or an admin",
        ),
        (
            carol,
            json!({"type": "whisper", "code": c, "text": "x"}),
            "not_found",
            "",
        ),
        (carol, json!({"type": "join", "code": c}), "not_found", ""),
        (
            bob_,
            json!({"type": "whisper", "code": c, "text": long}),
            "too_large",
            "text",
        ),
        (
            bob_,
            json!({"type": "whisper", "code": c}),
            "bad_request",
            "text",
        ),
    ];
    for (who, cmd, want, says) in cases {
        let e = ws[who].err(cmd.clone(), want).await;
        assert!(e["message"].as_str().unwrap().contains(says), "{cmd}: {e}");
    }
    // Customers may do none of it.
    for cmd in [
        json!({"type": "invite", "code": c, "agent": "carol"}),
        json!({"type": "watch", "code": c}),
        json!({"type": "unwatch", "code": c}),
        json!({"type": "whisper", "code": c, "text": "x"}),
    ] {
        customer.err(cmd, "forbidden").await;
    }
    // Over HTTP, the same codes.
    let path = |what: &str| format!("/v1/cases/{code}/{what}");
    assert_error(
        server
            .http(
                "POST",
                &path("invite"),
                Some(DAVE),
                Some(json!({"agent": "carol"})),
            )
            .await,
        403,
        "forbidden",
        "assignee or an admin",
    );
    assert_error(
        server
            .http("POST", &path("invite"), Some(BOB), Some(json!({})))
            .await,
        400,
        "bad_request",
        "agent",
    );
    assert_error(
        server
            .http(
                "POST",
                &path("whisper"),
                Some(DAVE),
                Some(json!({"text": "x"})),
            )
            .await,
        403,
        "forbidden",
        "helper",
    );
    // A closed case takes no helper, watcher or whisper.
    ws[bob_]
        .ok(json!({"type": "close", "code": c}), "case")
        .await;
    ws[bob_]
        .err(
            json!({"type": "invite", "code": c, "agent": "carol"}),
            "conflict",
        )
        .await;
    ws[bob_]
        .err(
            json!({"type": "whisper", "code": c, "text": "x"}),
            "conflict",
        )
        .await;
    ws[alice]
        .err(json!({"type": "watch", "code": c}), "conflict")
        .await;
}

in_every_mode!(
    a_helper_joins_beside_the_assignee_and_hears_everything,
    an_admin_watches_unseen_and_whispers_reach_agents_only,
    every_bad_invite_watch_and_whisper_gets_its_code,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_and_whispers_survive_kill_9_and_a_restart() {
    let config = config_text("");
    let args = ["--data-dir", "data", "--listen", "127.0.0.1:0"];
    let broker = Process::start_in(BROKER, TempDir::new("helpers"), Some(&config), &args, &[]);
    let at = Endpoint::new(broker.listening().await);
    let case = at
        .post(
            "/v1/cases",
            ALICE,
            json!({"group": "support", "name": "x", "assignee": "bob"}),
        )
        .await;
    let code = case["code"].as_str().unwrap().to_string();
    at.post(
        &format!("/v1/cases/{code}/invite"),
        BOB,
        json!({"agent": "carol"}),
    )
    .await;
    at.post(
        &format!("/v1/cases/{code}/whisper"),
        BOB,
        json!({"text": "kept"}),
    )
    .await;
    let check = |addr| {
        let code = code.clone();
        async move {
            let at = Endpoint::new(addr);
            // Carol, a helper outside the case's group, still reads it.
            let case = at.get(&format!("/v1/cases/{code}"), BOB).await;
            assert_eq!(case["helpers"], json!(["carol"]), "{case}");
            let t = at.get(&format!("/v1/cases/{code}/transcript"), CAROL).await;
            assert_eq!(
                t["messages"],
                json!([{"from": {"role": "agent", "name": "Bob"}, "text": "kept",
                        "at": t["messages"][0]["at"], "internal": true}]),
                "{t}"
            );
        }
    };
    // From the journal alone.
    let dir = broker.kill9().await;
    let broker = Process::start_in(BROKER, dir, Some(&config), &args, &[]);
    check(broker.listening().await).await;
    // From the image a clean stop writes.
    let dir = broker.stop().await;
    let broker = Process::start_in(BROKER, dir, Some(&config), &args, &[]);
    check(broker.listening().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_and_a_helper_on_another_node_hear_the_session() {
    let redis = redis::RedisServer::start();
    let a = TestServer::node(&redis, "a", "").await;
    let b = TestServer::node(&redis, "b", "").await;
    let (mut customer, mut bob, code) = in_progress_with_bob(&a).await;
    let mut alice = b.agent(ALICE).await;
    let mut carol = b.agent(CAROL).await;
    alice
        .ok(json!({"type": "watch", "code": code}), "case")
        .await;
    bob.ok(
        json!({"type": "invite", "code": code, "agent": "carol"}),
        "case",
    )
    .await;
    carol.wait_type("invited").await;
    carol
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    customer
        .ok(json!({"type": "chat", "text": "over here"}), "sent")
        .await;
    line(&mut alice, "over here").await;
    line(&mut carol, "over here").await;
    alice
        .ok(
            json!({"type": "whisper", "code": code, "text": "quietly"}),
            "sent",
        )
        .await;
    let w = line(&mut bob, "quietly").await;
    assert_eq!(w["internal"], true, "{w}");
    line(&mut carol, "quietly").await;
    carol
        .ok(
            json!({"type": "chat", "code": code, "text": "from b"}),
            "sent",
        )
        .await;
    line(&mut customer, "from b").await;
    line(&mut bob, "from b").await;
    line(&mut alice, "from b").await;
}
