//! Who sees what: group visibility and the subscribe filters, and companies
//! isolated from each other.

use super::*;

async fn group_visibility_and_filters(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    let bob_snap = subscribe(&mut bob, json!({})).await;
    let mut alice = server.agent(ALICE).await;
    let alice_snap = subscribe(&mut alice, json!({})).await;
    let mut sales_only = server.agent(ALICE).await;
    subscribe(&mut sales_only, json!({"group": "sales"})).await;
    let seq0 = seq_of(&alice_snap);
    assert_eq!(bob_snap["seq"], seq0, "one stream, one head");

    let mut carol = server.agent(CAROL).await;
    carol
        .err(
            json!({"type": "subscribe", "group": "support"}),
            "forbidden",
        )
        .await;
    carol
        .err(json!({"type": "subscribe", "group": "nope"}), "bad_request")
        .await;
    alice
        .err(json!({"type": "subscribe", "group": "nope"}), "bad_request")
        .await;

    let mut maker = server.agent(ALICE).await;
    let groups = ["support", "sales", "sales", "support", "sales", "support"];
    let mut made = Vec::new();
    for g in groups {
        made.push(create(&mut maker, g).await);
    }

    for (k, case) in made.iter().enumerate() {
        let ev = event(&mut alice).await;
        assert_eq!(ev["seq"], seq0 + 1 + k as u64, "admin sees all: {ev}");
        assert_eq!(&ev["case"], case, "{ev}");
    }
    for (k, case) in made.iter().enumerate() {
        if case["group"] == "support" {
            let ev = event(&mut bob).await;
            assert_eq!(ev["case"]["group"], "support", "{ev}");
            assert_eq!(ev["seq"], seq0 + 1 + k as u64, "bob's seqs jump: {ev}");
            assert_eq!(&ev["case"], case, "{ev}");
        } else {
            let ev = event(&mut sales_only).await;
            assert_eq!(ev["case"]["group"], "sales", "{ev}");
            assert_eq!(ev["seq"], seq0 + 1 + k as u64, "{ev}");
            assert_eq!(&ev["case"], case, "{ev}");
        }
    }
    assert_quiet(&mut alice, "alice").await;
    assert_quiet(&mut bob, "bob").await;
    assert_quiet(&mut sales_only, "alice filtered to sales").await;
    assert_quiet(&mut carol, "carol (refused subscription)").await;

    // Bob resumes: only support events are replayed.
    let epoch = alice_snap["epoch"].as_str().unwrap().to_string();
    let bob_seq = seq0 + groups.len() as u64;
    bob.close().await;
    let s1 = create(&mut maker, "support").await;
    let x1 = create(&mut maker, "sales").await;
    let x2 = assign(&mut maker, &code_of(&x1), json!("carol")).await;
    let s2 = assign(&mut maker, &code_of(&s1), json!("bob")).await;
    let _x3 = close(&mut maker, &code_of(&x2)).await;
    let head = bob_seq + 5;

    let (mut bob, first) = connect_resuming(&server, BOB, &epoch, bob_seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["seq"], head, "{first}");
    let ev = next_msg(&mut bob).await;
    assert_eq!(ev["type"], "event", "{ev}");
    assert_eq!(ev["seq"], bob_seq + 1, "{ev}");
    assert_eq!(ev["case"], s1, "{ev}");
    let ev = next_msg(&mut bob).await;
    assert_eq!(ev["type"], "event", "{ev}");
    assert_eq!(ev["seq"], bob_seq + 4, "{ev}");
    assert_eq!(ev["case"], s2, "{ev}");
    assert_quiet(&mut bob, "resumed bob").await;
}

async fn companies_are_isolated(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let mut gina = server.agent(GINA).await;
    let acme_case = create(&mut alice, "support").await;
    let acme_code = code_of(&acme_case);
    let globex_case = create(&mut gina, "support").await;
    let globex_code = code_of(&globex_case);
    assert_eq!(globex_case["company"], "globex");

    let mut gina_dash = server.agent(GINA).await;
    let gsnap = subscribe(&mut gina_dash, json!({})).await;
    assert_eq!(
        codes_in(&gsnap),
        HashSet::from([globex_code.clone()]),
        "gina's snapshot holds globex cases only: {gsnap}"
    );
    let mut alice_dash = server.agent(ALICE).await;
    let asnap = subscribe(&mut alice_dash, json!({})).await;
    assert_eq!(
        codes_in(&asnap),
        HashSet::from([acme_code.clone()]),
        "alice's snapshot holds acme cases only: {asnap}"
    );

    // Each company's changes go to its own stream only.
    let acme2 = create(&mut alice, "sales").await;
    let globex2 = create(&mut gina, "support").await;
    let ev = event(&mut alice_dash).await;
    assert_eq!(ev["case"], acme2, "{ev}");
    assert_eq!(ev["seq"], seq_of(&asnap) + 1, "{ev}");
    let ev = event(&mut gina_dash).await;
    assert_eq!(ev["case"], globex2, "{ev}");
    assert_eq!(ev["seq"], seq_of(&gsnap) + 1, "{ev}");
    assert_eq!(ev["epoch"], gsnap["epoch"], "{ev}");

    // Gina cannot touch acme cases; it looks like no case at all.
    let acme2_code = code_of(&acme2);
    for code in [&acme_code, &acme2_code] {
        gina.err(json!({"type": "join", "code": code}), "not_found")
            .await;
        gina.err(
            json!({"type": "join", "code": code, "takeover": true}),
            "not_found",
        )
        .await;
        gina.err(
            json!({"type": "assign", "code": code, "assignee": "gina"}),
            "not_found",
        )
        .await;
        gina.err(
            json!({"type": "assign", "code": code, "assignee": null}),
            "not_found",
        )
        .await;
        gina.err(json!({"type": "close", "code": code}), "not_found")
            .await;
        gina.err(json!({"type": "delete", "code": code}), "not_found")
            .await;
    }
    // Acme agents cannot touch globex cases either.
    alice
        .err(json!({"type": "join", "code": globex_code}), "not_found")
        .await;
    alice
        .err(
            json!({"type": "assign", "code": globex_code, "assignee": "bob"}),
            "not_found",
        )
        .await;
    alice
        .err(json!({"type": "close", "code": globex_code}), "not_found")
        .await;
    alice
        .err(json!({"type": "delete", "code": globex_code}), "not_found")
        .await;

    // Nothing changed and nothing leaked.
    assert_quiet(&mut alice_dash, "alice's dashboard").await;
    assert_quiet(&mut gina_dash, "gina's dashboard").await;
    let (status, body) = server
        .http("GET", &format!("/v1/cases/{acme_code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, acme_case, "the acme case is untouched");
    let (status, body) = server
        .http("GET", &format!("/v1/cases/{globex_code}"), Some(GINA), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, globex_case, "the globex case is untouched");

    // A fresh acme snapshot still lacks globex cases, and vice versa.
    let mut bob = server.agent(BOB).await;
    let bsnap = subscribe(&mut bob, json!({})).await;
    assert_eq!(codes_in(&bsnap), HashSet::from([acme_code.clone()]));
    let mut gina3 = server.agent(GINA).await;
    let gsnap = subscribe(&mut gina3, json!({})).await;
    assert_eq!(
        codes_in(&gsnap),
        HashSet::from([globex_code.clone(), code_of(&globex2)])
    );
}

in_every_mode!(group_visibility_and_filters, companies_are_isolated,);
