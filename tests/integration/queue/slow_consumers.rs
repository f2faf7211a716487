//! Slow consumers: a dashboard that stops reading is disconnected while
//! one that keeps reading keeps up, and a deep outbox drains in batches
//! without losing an event.

use super::*;

async fn slow_consumer_is_disconnected_and_others_keep_up(mode: Mode) {
    const N: u64 = 3000;
    // The close frame to the slow consumer waits in its full socket until
    // the test reads it at the end: give that write time (a loaded machine
    // takes longer than the default 10 s to run the rest).
    let server = TestServer::with_extra_in(
        mode,
        &format!("outbox_messages = 16\nwrite_timeout = \"120s\"\n{UNLIMITED}"),
    )
    .await;

    // Subscribes, then never reads until the end.
    let mut slow = server.agent(ALICE).await;
    let slow_snap = subscribe(&mut slow, json!({})).await;
    let seq0 = seq_of(&slow_snap);

    // A dashboard that keeps reading, on its own task.
    let mut dash = server.agent(ALICE).await;
    let dash_snap = subscribe(&mut dash, json!({})).await;
    assert_eq!(dash_snap["seq"], seq0);
    // The reader says how far it got: the maker stays at most LAG events
    // ahead of it, so a reader starved of CPU on a loaded machine is never
    // taken for a slow consumer (its socket buffers hold far more than LAG
    // events), while the one that never reads falls behind for good.
    const LAG: u64 = 256;
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(N as usize);
        for _ in 0..N {
            let ev = dash.wait_type("event").await;
            seqs.push(seq_of(&ev));
            let _ = progress.send(seqs.len() as u64);
        }
        (dash, seqs)
    });

    // Large events, so that socket buffers cannot absorb them all.
    let mut maker = server.agent(ALICE).await;
    let description = "x".repeat(4000);
    for i in 0..N {
        tokio::time::timeout(WAIT, read_so_far.wait_for(|&n| n + LAG >= i))
            .await
            .expect("the reading dashboard keeps up")
            .expect("the reader is alive");
        let r = maker
            .request(json!({
                "type": "create_case",
                "group": "support",
                "name": format!("case {i}"),
                "description": description,
            }))
            .await;
        assert_eq!(r["type"], "case", "create {i}: {r}");
    }

    let (mut dash, seqs) = reader.await.expect("reader task");
    let want: Vec<u64> = (seq0 + 1..=seq0 + N).collect();
    assert!(
        seqs == want,
        "the reading dashboard gets every event in order (first mismatch at {:?})",
        seqs.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert_quiet(&mut dash, "reading dashboard").await;

    let (how, seen) = slow.closed().await;
    let seen: Vec<Value> = seen
        .into_iter()
        .filter(|v| !is_unsequenced_push(v))
        .collect();
    assert_eq!(how, Closed::Code(4001), "slow consumer close code");
    assert!(
        (seen.len() as u64) < N,
        "the slow consumer cannot have received everything ({} messages)",
        seen.len()
    );
    for (k, ev) in seen.iter().enumerate() {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(
            seq_of(ev),
            seq0 + 1 + k as u64,
            "what the slow consumer got is a gap-free prefix"
        );
    }
}

/// A dashboard whose socket backs up collects a deep outbox; when it reads
/// again, the outbox drains in batches and not one event may go missing
/// between two batches.
async fn a_deep_outbox_drains_without_losing_an_event(mode: Mode) {
    let server = TestServer::with_extra_in(
        mode,
        &format!("outbox_messages = 100000\noutbox_bytes = 268435456\n{UNLIMITED}"),
    )
    .await;
    let mut dashboard = server.agent(ALICE).await;
    let snap = dashboard.ok(json!({"type": "subscribe"}), "snapshot").await;
    let first = snap["seq"].as_u64().unwrap() + 1;
    // Stop reading the dashboard while big events pile up behind its full
    // socket.
    let mut maker = server.agent(ALICE).await;
    let description = "x".repeat(3000);
    const N: u64 = 2000;
    for i in 0..N {
        maker
            .send(json!({"type": "create_case", "id": i, "group": "support", "description": description}))
            .await;
    }
    for _ in 0..N {
        maker.wait_type("case").await;
    }
    let mut expected = first;
    while expected < first + N {
        let m = dashboard.wait_type("event").await;
        assert_eq!(m["seq"], expected, "event lost or out of order");
        expected += 1;
    }
}

in_every_mode!(
    slow_consumer_is_disconnected_and_others_keep_up,
    a_deep_outbox_drains_without_losing_an_event,
);
