//! Opening hours per group: outside them `request_help` and `POST /v1/help`
//! get `closed` with the group's message and `opens_at`, nothing is
//! created, and `GET /v1/modules/{key}` says so; agents go on creating
//! cases. In each storage mode.

use chrono::{Datelike, Duration, Utc};
use serde_json::{Value, json};

use crate::util::*;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Support opens tomorrow (UTC) only; sales is open every day but today is
/// one of its holidays.
fn hours(text: String) -> String {
    let today = Utc::now().date_naive();
    let tomorrow = DAYS[today.succ_opt().unwrap().weekday().num_days_from_monday() as usize];
    let every_day: Vec<String> = DAYS
        .iter()
        .map(|d| format!("{d} = \"00:00-24:00\""))
        .collect();
    text.replacen(
        r#"groups = [{ id = "support" }, { id = "sales" }]"#,
        &format!(
            r#"groups = [
  {{ id = "support", closed_message = "We are closed today.", hours = {{ tz = "UTC", {tomorrow} = "00:00-24:00" }} }},
  {{ id = "sales", hours = {{ tz = "Europe/Lisbon", {}, holidays = ["{today}"] }} }},
]"#,
            every_day.join(", ")
        ),
        1,
    )
}

/// Midnight UTC after today, as the wire writes times.
fn tomorrow_midnight() -> String {
    let t = (Utc::now().date_naive() + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    casebroker::case::format_time(&t)
}

async fn help(server: &TestServer, module: &str) -> (u16, Value, Option<String>) {
    let resp = reqwest::Client::new()
        .post(server.url("/v1/help"))
        .json(&json!({"module": module, "name": "Ana"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.json().await.unwrap(), retry)
}

async fn outside_the_hours_customers_are_told_when_to_come_back(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", hours).await;
    let mut alice = server.agent(ALICE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;

    // Over WebSocket: `closed`, the group's message, the next opening.
    let mut ana = server.customer().await;
    let e = ana
        .err(
            json!({"type": "request_help", "module": MODULE, "name": "Ana"}),
            "closed",
        )
        .await;
    assert_eq!(e["message"], "We are closed today.", "{e}");
    assert_eq!(e["opens_at"], tomorrow_midnight(), "{e}");
    // The connection serves no case: it may ask again later.
    ana.sync().await;

    // Over HTTP: 503 with Retry-After up to the opening.
    let (status, body, retry) = help(&server, MODULE).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "closed", "{body}");
    assert_eq!(body["opens_at"], tomorrow_midnight(), "{body}");
    let secs: i64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=86_400).contains(&secs), "Retry-After {secs}");

    // A holiday closes a group open every day; without a message of its
    // own the customer reads the default one.
    let (status, body, _) = help(&server, MODULE_SALES).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("closed")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("closed"),
        "{body}"
    );
    assert!(body["opens_at"].is_string(), "{body}");

    // The help page learns it before anyone types.
    let (st, info) = server
        .http("GET", &format!("/v1/modules/{MODULE}"), None, None)
        .await;
    assert_eq!(st, 200, "{info}");
    assert_eq!(
        info["closed"],
        json!({"message": "We are closed today.", "opens_at": tomorrow_midnight()}),
        "{info}"
    );
    // A group without hours is always open.
    let (_, info) = server
        .http("GET", &format!("/v1/modules/{GLOBEX_MODULE}"), None, None)
        .await;
    assert!(info.get("closed").is_none(), "{info}");
    let (_joined_ws, joined) = request_help(&server, GLOBEX_MODULE).await;
    assert!(joined["code"].is_string(), "{joined}");

    // Nothing was created in ACME; agents still create cases there.
    alice.sync().await;
    assert!(
        !alice.pending().iter().any(|m| m["type"] == "event"),
        "{:?}",
        alice.pending()
    );
    create_case(&mut alice, "support").await;
    let m = scrape(&server).await;
    assert!(
        value(&m, r#"casebroker_errors_total{code="closed"}"#) >= 1.0,
        "{m}"
    );
}

in_every_mode!(outside_the_hours_customers_are_told_when_to_come_back);

#[test]
fn bad_hours_are_refused_with_the_key_they_are_about() {
    for (hours, key) in [
        (r#"{ tz = "Mars/Olympus" }"#, "hours.tz"),
        (r#"{ tz = "UTC", mon = "9-17" }"#, "hours.mon"),
        (r#"{ tz = "UTC", tue = "17:00-09:00" }"#, "hours.tue"),
        (
            r#"{ tz = "UTC", holidays = ["25/12/2026"] }"#,
            "hours.holidays",
        ),
        (r#"{ tz = "UTC", monday = "09:00-17:00" }"#, "monday"),
    ] {
        let text = config_text("").replacen(
            r#"{ id = "support" }"#,
            &format!(r#"{{ id = "support", hours = {hours} }}"#),
            1,
        );
        let e = casebroker::config::Config::from_toml(&text)
            .err()
            .unwrap_or_else(|| panic!("{hours} was taken"))
            .to_string();
        assert!(e.contains(key), "{hours}: {e}");
    }
    let long = "x".repeat(501);
    for message in ["", "  ", long.as_str()] {
        let text = config_text("").replacen(
            r#"{ id = "support" }"#,
            &format!(r#"{{ id = "support", closed_message = "{message}" }}"#),
            1,
        );
        let e = casebroker::config::Config::from_toml(&text)
            .err()
            .unwrap_or_else(|| panic!("closed_message {message:?} was taken"))
            .to_string();
        assert!(e.contains("companies[0].groups[0].closed_message"), "{e}");
    }
}
