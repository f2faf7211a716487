//! Changes that outlive the broker that took them: a restart of a journaled
//! broker keeps every change made through the API, every node of a cluster
//! applies a change and a later node has it, and the live directory exports
//! as a config another broker starts on, with its service levels, offers
//! and opening hours.

use super::*;

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
