//! What a broker does at start on an existing data directory: a case whose
//! TTL passed while no broker ran expires at once, as an event a resumed
//! dashboard gets; a second broker on the same directory is refused by its
//! lock and the first keeps serving.

use super::*;

// 5. Expiry while down -------------------------------------------------------

#[tokio::test]
async fn a_case_whose_ttl_passed_while_down_expires_at_start() {
    let scratch = Scratch::new("ttl");
    let ttl = Duration::from_secs(1);
    let server = TestServer::with_config(scratch.config("case_ttl = \"1s\"")).await;
    let (mut dash, _) = dashboard(&server).await;
    let (status, case) = server
        .http(
            "POST",
            "/v1/cases",
            Some(BOB),
            Some(json!({"group": "support", "name": "Short-lived"})),
        )
        .await;
    let created = Instant::now();
    assert_eq!(status, 201, "{case}");
    let code = code_of(&case);
    let ev = dash.wait_type("event").await;
    assert_eq!(ev["action"], "created", "{ev}");
    let epoch = ev["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&ev);
    assert_eq!(get_case(&server, &code).await["status"], "new");

    stop(server, vec![dash]).await;
    assert!(
        created.elapsed() < ttl,
        "the broker took {:?} to stop: the TTL passed while it ran",
        created.elapsed()
    );
    // The TTL passes while no broker runs.
    tokio::time::sleep_until((created + ttl + Duration::from_millis(500)).into()).await;
    let server = TestServer::with_config(scratch.config("case_ttl = \"1s\"")).await;

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    let expired = next_msg(&mut dash).await;
    assert_eq!(expired["type"], "event", "{expired}");
    assert_eq!(seq_of(&expired), seq + 1, "{expired}");
    assert_eq!(expired["action"], "updated", "{expired}");
    assert_eq!(expired["case"]["code"], code.as_str(), "{expired}");
    assert_eq!(expired["case"]["status"], "expired", "{expired}");
    assert_eq!(expired["case"]["closed_at"], Value::Null, "{expired}");
    assert_eq!(expired["case"]["closed_by"], Value::Null, "{expired}");
    let now = get_case(&server, &code).await;
    assert_eq!(now, expired["case"]);
    assert_quiet(&mut dash, "dashboard").await;
    // An expired case cannot be joined.
    let mut ana = server.customer().await;
    ana.err(json!({"type": "join", "code": code}), "not_found")
        .await;

    stop(server, vec![dash, ana]).await;
}

// 6. The directory's lock ----------------------------------------------------

#[tokio::test]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let scratch = Scratch::new("locked");
    let server = TestServer::with_config(scratch.config("")).await;
    let mut bob = server.agent(BOB).await;
    let code = code_of(&create_case(&mut bob, "support").await);

    let config = format!(
        "[[companies]]\nid = \"acme\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.agents]]\nid = \"bob\"\ntoken = \"{BOB}\"\ngroups = [\"support\"]\n"
    );
    let data = scratch.data();
    let data_arg = data.to_str().expect("a UTF-8 path");
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_arg];
    let second = Process::start(BROKER, Some(&config), &args, &[]);
    let status = second.exit(WAIT * 2).await;
    let stderr = second.stderr();
    let all = second.output();
    assert_eq!(status.code(), Some(1), "{status:?}; {all}");
    let dir = scratch.data().display().to_string();
    assert!(
        stderr.contains(&format!("data directory {dir}")),
        "stderr does not name {dir}: {all}"
    );
    assert!(stderr.contains("locked"), "{all}");
    assert!(
        !all.contains("casebroker listening"),
        "the second broker served: {all}"
    );

    // The first broker is untouched and keeps serving.
    assert_eq!(get_case(&server, &code).await["code"], code.as_str());
    create_case(&mut bob, "support").await;

    stop(server, vec![bob]).await;
}
