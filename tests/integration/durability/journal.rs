//! With and without a journal: `in_memory` writes nothing and forgets
//! everything, even beside a `data_dir`; the journal counts its commits,
//! changes and bytes in `/metrics`, and a broker without one shows none of
//! them.

use super::*;

// 4. in_memory ---------------------------------------------------------------

#[tokio::test]
async fn in_memory_forgets_everything() {
    let scratch = Scratch::new("in-memory");
    // `in_memory` wins over a data_dir: nothing is written there.
    let config = || config_with(&format!("in_memory = true\n{}", scratch.data_dir_line()));
    let server = TestServer::with_config(config()).await;
    let mut bob = server.agent(BOB).await;
    let code = code_of(&create_case(&mut bob, "support").await);
    let (ana, _) = request_help(&server, MODULE).await;
    let (dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    assert_eq!(snap["cases"].as_array().unwrap().len(), 2, "{snap}");

    stop(server, vec![bob, ana, dash]).await;
    assert!(
        !scratch.data().exists(),
        "in_memory wrote to {}",
        scratch.data().display()
    );
    let server = TestServer::with_config(config()).await;

    let (status, body) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"], json!([]), "{list}");
    // A new stream: the old position gets a snapshot, empty, at seq 0.
    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq_of(&snap)).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_ne!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], 0, "{first}");
    assert_eq!(first["cases"], json!([]), "{first}");
    assert_quiet(&mut dash, "dashboard").await;

    stop(server, vec![dash]).await;
}

#[tokio::test]
async fn the_journal_counts_its_commits_and_changes_in_metrics() {
    let scratch = Scratch::new("journal-metrics");
    let server = TestServer::with_config(scratch.config("")).await;
    let before = scrape(&server).await;
    let commits = value(&before, "casebroker_journal_commits_total");
    let changes = value(&before, "casebroker_journal_changes_total");
    let mut bob = server.agent(BOB).await;
    for _ in 0..3 {
        create_case(&mut bob, "support").await;
    }
    // Each create is acknowledged only once stored, so the counters
    // already hold it.
    let after = scrape(&server).await;
    assert!(
        value(&after, "casebroker_journal_commits_total") > commits,
        "{after}"
    );
    // Three created cases, plus Bob's connection (presence is not journaled).
    assert!(
        value(&after, "casebroker_journal_changes_total") >= changes + 3.0,
        "{after}"
    );
    assert!(
        value(&after, "casebroker_journal_bytes_total") > 0.0,
        "{after}"
    );
    assert_eq!(value(&after, "casebroker_journal_failures_total"), 0.0);
    let histogram = value(&after, "casebroker_journal_commit_seconds_count");
    assert_eq!(
        histogram,
        value(&after, "casebroker_journal_commits_total"),
        "{after}"
    );
    stop(server, vec![bob]).await;

    // A broker without a journal (the tests' default) has none of them.
    let server = TestServer::start().await;
    let text = scrape(&server).await;
    assert!(!text.contains("casebroker_journal_"), "{text}");
    server.stop().await;
}
