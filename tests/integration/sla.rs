//! Service levels per group: due times on the case, a breach as an
//! `updated` event at its deadline, counters of met and breached, in each
//! storage mode and across kill -9; bad settings refused.

use serde_json::{Value, json};

use casebroker::config::Config;

use crate::transfer::dashboard;
use crate::util::process::{BROKER, Process};
use crate::util::*;

/// The test config with service levels on `support` (sales has none).
fn with_sla(text: String) -> String {
    text.replacen(
        r#"groups = [{ id = "support" }, { id = "sales" }]"#,
        r#"groups = [{ id = "support", sla_first_response = "700ms", sla_resolution = "1500ms" }, { id = "sales" }]"#,
        1,
    )
}

/// Milliseconds of a wire time.
fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}")))
        .unwrap()
        .timestamp_millis()
}

/// The next event of `code` whose `sla.breached` has `n` entries.
async fn breached(ws: &mut WsClient, code: &str, n: usize) -> Value {
    let code = code.to_string();
    ws.wait_for(&format!("{n} breaches of {code}"), move |m| {
        m["type"] == "event"
            && m["case"]["code"] == code.as_str()
            && m["case"]["sla"]["breached"]
                .as_array()
                .is_some_and(|b| b.len() == n)
    })
    .await
}

async fn service_levels_are_due_met_and_breached_at_their_deadline(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", with_sla).await;
    let mut alice = dashboard(&server, ALICE).await;

    // A customer's request in support waits for nobody.
    let (_ana, joined) = request_help(&server, MODULE).await;
    let late = joined["code"].as_str().unwrap().to_string();
    let created = alice
        .wait_for("created", |m| {
            m["type"] == "event" && m["action"] == "created"
        })
        .await;
    let case = &created["case"];
    let sla = &case["sla"];
    assert_eq!(
        ms(&sla["first_response_due"]) - ms(&case["created_at"]),
        700,
        "{case}"
    );
    assert_eq!(
        ms(&sla["resolution_due"]) - ms(&case["created_at"]),
        1500,
        "{case}"
    );
    assert_eq!(sla["breached"], json!([]), "{case}");

    // Another is answered and closed in time.
    let mut bob = server.agent(BOB).await;
    let (_ola, joined) = request_help(&server, MODULE).await;
    let kept = joined["code"].as_str().unwrap().to_string();
    bob.ok(json!({"type": "join", "code": kept}), "joined")
        .await;
    bob.ok(json!({"type": "close", "code": kept}), "case").await;

    // The first is missed at each deadline, as it happens: an event each.
    let first = breached(&mut alice, &late, 1).await;
    assert_eq!(first["case"]["sla"]["breached"], json!(["first_response"]));
    assert!(
        ms(&first["case"]["updated_at"]) >= ms(&sla["first_response_due"]),
        "{first}"
    );
    let second = breached(&mut alice, &late, 2).await;
    assert_eq!(
        second["case"]["sla"]["breached"],
        json!(["first_response", "resolution"])
    );
    assert!(
        ms(&second["case"]["updated_at"]) >= ms(&sla["resolution_due"]),
        "{second}"
    );

    // Counted, without company or agent labels.
    let text = scrape(&server).await;
    for (series, want) in [
        (
            r#"casebroker_sla_total{kind="first_response",outcome="met"}"#,
            1.0,
        ),
        (
            r#"casebroker_sla_total{kind="first_response",outcome="breached"}"#,
            1.0,
        ),
        (
            r#"casebroker_sla_total{kind="resolution",outcome="met"}"#,
            1.0,
        ),
        (
            r#"casebroker_sla_total{kind="resolution",outcome="breached"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    // The group's numbers: two met of four decided.
    let (_, body) = server.http("GET", "/v1/stats", Some(ALICE), None).await;
    assert_eq!(body["groups"][0]["group"], "support", "{body}");
    assert_eq!(body["groups"][0]["sla_met_ratio"], 0.5, "{body}");
    assert_eq!(body["groups"][1]["sla_met_ratio"], Value::Null, "{body}");
    // A group without service levels: no `sla` on its cases.
    let case = create_case(&mut server.agent(ALICE).await, "sales").await;
    assert!(case.get("sla").is_none(), "{case}");
}

in_every_mode!(service_levels_are_due_met_and_breached_at_their_deadline);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_survives_kill_9() {
    let config = with_sla(config_text(""));
    let args = ["--data-dir", "data", "--listen", "127.0.0.1:0"];
    let broker = Process::start_in(BROKER, TempDir::new("sla"), Some(&config), &args, &[]);
    let addr = broker.listening().await;
    let http = reqwest::Client::new();
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
    let code = case["code"].as_str().unwrap().to_string();
    assert!(case["sla"]["first_response_due"].is_string(), "{case}");
    let dir = broker.kill9().await;
    let broker = Process::start_in(BROKER, dir, Some(&config), &args, &[]);
    let addr = broker.listening().await;
    let mut alice = WsClient::connect(&format!("ws://{addr}/v1/ws")).await;
    alice
        .ok(
            json!({"type": "hello", "role": "agent", "token": ALICE}),
            "welcome",
        )
        .await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    // Both deadlines fire after the restart, each with its event.
    let missed = breached(&mut alice, &code, 2).await;
    assert_eq!(
        missed["case"]["sla"]["breached"],
        json!(["first_response", "resolution"]),
        "{missed}"
    );
}

#[test]
fn service_levels_must_be_positive_and_at_most_a_year() {
    for (value, ok) in [
        ("0s", false),
        ("400days", false),
        ("1s", true),
        ("365days", true),
    ] {
        let text = config_text("").replacen(
            r#"groups = [{ id = "support" }, { id = "sales" }]"#,
            &format!(
                r#"groups = [{{ id = "support", sla_resolution = "{value}" }}, {{ id = "sales" }}]"#
            ),
            1,
        );
        match Config::from_toml(&text) {
            Ok(_) => assert!(ok, "{value} was taken"),
            Err(e) => {
                assert!(!ok, "{value} was refused: {e}");
                let e = e.to_string();
                assert!(e.contains("companies[0].groups[0].sla_resolution"), "{e}");
            }
        }
    }
}
