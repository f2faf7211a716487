//! Deliveries and endpoints that outlive a broker: pending deliveries
//! survive kill -9, in a cluster a call lost with its node is taken over,
//! and an endpoint declared in the file is the file's and survives restarts
//! as it says.

use crate::util::process::{BROKER, Process};
use crate::util::receiver::Receiver;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_kill_9() {
    let mut receiver = Receiver::start().await;
    receiver.answer(|_, _| (503, None));
    let config = config_text(
        "webhook_allow_private = true\nwebhook_retry = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]",
    );
    let dir = TempDir::new("hooks-kill");
    let broker = Process::start_in(
        BROKER,
        dir,
        Some(&config),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let resp: Value = http
        .post(url("/v1/admin/webhooks"))
        .bearer_auth(ALICE)
        .json(&json!({"url": receiver.url, "events": ["case.created"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(resp["secret"].is_string(), "{resp}");
    let mut codes = Vec::new();
    for _ in 0..3 {
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
        codes.push(code_of(&case));
    }
    // Each was tried (and refused) at least once: they are pending.
    let mut untried: std::collections::HashSet<String> = codes.iter().cloned().collect();
    while !untried.is_empty() {
        untried.remove(receiver.next().await.code());
    }
    let dir = broker.kill9().await;
    receiver.answer(|_, _| (200, None));
    let broker = Process::start_in(
        BROKER,
        dir,
        Some(&config),
        &["--data-dir", "data", "--listen", "127.0.0.1:0"],
        &[],
    );
    broker.listening().await;
    let mut left: std::collections::HashSet<String> = codes.into_iter().collect();
    while !left.is_empty() {
        let hit = receiver.next().await;
        if hit.status == 200 {
            left.remove(hit.code());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_call_lost_with_its_node_is_taken_over() {
    let redis = crate::util::redis::RedisServer::start();
    let mut receiver = Receiver::start().await;
    // The first call of each message never gets an answer.
    receiver.answer(|_, retry| if retry == 0 { (0, None) } else { (200, None) });
    let cluster = format!(
        "webhook_allow_private = true\nwebhook_timeout = \"1s\"\n[cluster]\nredis_url = \"{}\"\nnode_timeout = \"3s\"\n",
        redis.url()
    );
    let a = Process::start(
        BROKER,
        Some(&config_text(&cluster)),
        &["--node-id", "a", "--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = a.listening().await;
    let http = reqwest::Client::new();
    let (st, _) = {
        let r = http
            .post(format!("http://{addr}/v1/admin/webhooks"))
            .bearer_auth(ALICE)
            .json(&json!({"url": receiver.url, "events": ["case.created"]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(st, 201);
    let case: Value = http
        .post(format!("http://{addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": "support", "name": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = code_of(&case);
    // Node a makes the call, which hangs; then a dies with it.
    let first = receiver.next().await;
    assert_eq!((first.code(), first.retry), (code.as_str(), 0));
    let b = TestServer::with_config(config_with(
        &cluster.replace("[cluster]", "[cluster]\nnode_id = \"b\""),
    ))
    .await;
    a.kill9().await;
    // Node b sends it once a's hold on it runs out, with the same id.
    let again = receiver
        .next_where("the call taken over", |h| h.id == first.id)
        .await;
    assert_eq!((again.status, again.retry), (200, 1));
    // And b sends new events itself.
    let mut alice = b.agent(ALICE).await;
    let next = code_of(&create_case(&mut alice, "support").await);
    receiver
        .next_where("a new event from b", |h| {
            h.code() == next && h.status == 200
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_declared_in_the_file_is_the_files_and_survives_restarts_as_it_says() {
    let mut first = Receiver::start().await;
    let mut second = Receiver::start().await;
    let dir = TempDir::new("hooks-config");
    let secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";
    let config = |url: &str| {
        let mut c = config_with(&format!(
            "webhook_allow_private = true\ndata_dir = \"{}\"",
            dir.path().display()
        ));
        let text = format!(
            "webhook_allow_private = true\n[[companies]]\nid = \"x\"\ngroups = [{{ id = \"g\" }}]\n[[companies.webhooks]]\nid = \"helpdesk\"\nurl = \"{url}\"\nevents = [\"case.created\"]\nsecret = \"{secret}\"\n"
        );
        let extra: casebroker::Config = casebroker::Config::from_toml(&text).unwrap();
        c.companies[0].webhooks = extra.companies[0].webhooks.clone();
        c
    };
    let server = TestServer::with_config(config(&first.url)).await;
    let mut alice = server.agent(ALICE).await;
    create_case(&mut alice, "support").await;
    let hit = first.next().await;
    verify(&hit, secret);
    let path = "/v1/admin/webhooks/helpdesk";
    let (st, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(list["webhooks"][0]["source"], "config", "{list}");
    for (method, p, body) in [
        (
            "PATCH",
            path.to_string(),
            Some(json!({"url": "https://elsewhere.example.com/"})),
        ),
        ("DELETE", path.to_string(), None),
        ("POST", format!("{path}/secret"), None),
    ] {
        let (st, body) = server.http(method, &p, Some(ALICE), body).await;
        assert_eq!(st, 409, "{method} {p}: {body}");
        assert!(body["message"].as_str().unwrap().contains("config file"));
    }
    // Disabling it is the API's to do, and a restart keeps it disabled.
    let (st, _) = server
        .http("PATCH", path, Some(ALICE), Some(json!({"disabled": true})))
        .await;
    assert_eq!(st, 200);
    drop(alice);
    server.stop().await;
    // The file now points it elsewhere: the file's URL is used.
    let server = TestServer::with_config(config(&second.url)).await;
    let (_, list) = server
        .http("GET", "/v1/admin/webhooks", Some(ALICE), None)
        .await;
    assert_eq!(list["webhooks"][0]["disabled"], true, "{list}");
    assert_eq!(list["webhooks"][0]["url"], second.url.as_str(), "{list}");
    let (st, _) = server
        .http("PATCH", path, Some(ALICE), Some(json!({"disabled": false})))
        .await;
    assert_eq!(st, 200);
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    let hit = second
        .next_where("on the file's new URL", |h| h.code() == code)
        .await;
    verify(&hit, secret);
    assert!(first.drain().is_empty(), "nothing more on the old URL");
    server.stop().await;
}
