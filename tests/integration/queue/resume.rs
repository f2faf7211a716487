//! Resume: a subscribe with a position replays exactly the missed events,
//! and falls back to a snapshot when it cannot be exact.

use super::*;

async fn resume_replays_exactly_the_missed_events(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut maker = server.agent(ALICE).await;
    create(&mut maker, "support").await;

    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&snap);
    dash.close().await;

    // Five changes while away.
    let a = create(&mut maker, "support").await;
    let b = create(&mut maker, "sales").await;
    let a2 = assign(&mut maker, &code_of(&a), json!("bob")).await;
    let a3 = close(&mut maker, &code_of(&a)).await;
    delete(&mut maker, &code_of(&b)).await;
    let expected = [
        ("created", a.clone()),
        ("created", b.clone()),
        ("updated", a2),
        ("updated", a3),
        ("deleted", b.clone()),
    ];

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], seq + 5, "resumed carries the head: {first}");
    for (k, (action, case)) in expected.iter().enumerate() {
        let ev = next_msg(&mut dash).await;
        assert_eq!(ev["type"], "event", "missed event {k}: {ev}");
        assert_eq!(ev["seq"], seq + 1 + k as u64, "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        assert_eq!(ev["action"], *action, "{ev}");
        assert_eq!(ev["case"]["code"], case["code"], "{ev}");
        if *action != "deleted" {
            assert_eq!(&ev["case"], case, "{ev}");
        }
    }
    assert_quiet(&mut dash, "resumed dashboard").await;

    // Live events continue after the replay.
    let c = create(&mut maker, "support").await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["seq"], seq + 6, "{ev}");
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["case"], c, "{ev}");
    assert_quiet(&mut dash, "resumed dashboard").await;
}

async fn resume_falls_back_to_snapshot_when_it_cannot_be_exact(mode: Mode) {
    let server = TestServer::with_extra_in(mode, "history_events = 5").await;
    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq0 = seq_of(&snap);
    dash.close().await;

    let mut maker = server.agent(ALICE).await;
    let mut codes = HashSet::new();
    for _ in 0..10 {
        codes.insert(code_of(&create(&mut maker, "support").await));
    }
    let head = seq0 + 10;

    // Too old: the first missed event is no longer held.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, seq0).await;
    assert_eq!(first["type"], "snapshot", "too old a seq: {first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "too-old resume").await;

    // One short of what is held: still a snapshot.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head - 6).await;
    assert_eq!(first["type"], "snapshot", "seq head-6 with 5 held: {first}");
    assert_quiet(&mut ws, "head-6 resume").await;

    // Exactly what is held: resumed with the 5 events.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head - 5).await;
    assert_eq!(first["type"], "resumed", "seq head-5 with 5 held: {first}");
    assert_eq!(first["seq"], head, "{first}");
    for k in 0..5 {
        let ev = next_msg(&mut ws).await;
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["seq"], head - 4 + k, "{ev}");
    }
    assert_quiet(&mut ws, "head-5 resume").await;

    // Wrong epoch.
    let (mut ws, first) = connect_resuming(&server, ALICE, "0000000000000000", head).await;
    assert_eq!(first["type"], "snapshot", "wrong epoch: {first}");
    assert_eq!(
        first["epoch"],
        epoch.as_str(),
        "the snapshot carries the real epoch: {first}"
    );
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "wrong-epoch resume").await;

    // A seq from the future.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head + 1).await;
    assert_eq!(first["type"], "snapshot", "seq past the head: {first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "future resume").await;

    // At the head: resumed, nothing to replay, then live events.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head).await;
    assert_eq!(first["type"], "resumed", "at the head: {first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_quiet(&mut ws, "head resume").await;
    create(&mut maker, "sales").await;
    let ev = event(&mut ws).await;
    assert_eq!(ev["seq"], head + 1, "{ev}");
}

in_every_mode!(
    resume_replays_exactly_the_missed_events,
    resume_falls_back_to_snapshot_when_it_cannot_be_exact,
);
