//! `GET /v1/events`: the event feed for integrations, as one JSON page
//! (long-poll) and as Server-Sent Events, with exact resume, what the
//! caller may see only, in each storage mode and across a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

/// One JSON page of the feed.
async fn page(server: &TestServer, token: &str, query: &str) -> Value {
    let (st, body) = server
        .http("GET", &format!("/v1/events{query}"), Some(token), None)
        .await;
    assert_eq!(st, 200, "{query}: {body}");
    body
}

/// The codes of events (their `case`) or of a snapshot's cases.
fn codes(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|e| {
            e.get("case").unwrap_or(e)["code"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A Server-Sent Events reader on a real HTTP response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

/// One SSE message: its `id`, `event` and `data`.
#[derive(Debug)]
struct Message {
    id: String,
    event: String,
    data: Value,
}

impl Sse {
    async fn open(server: &TestServer, token: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = reqwest::Client::new()
            .get(server.url("/v1/events"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), within `WAIT`.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (String::new(), String::new(), None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = v.to_string();
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            event = v.to_string();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str(v).unwrap());
                        }
                    }
                    if let Some(data) = data {
                        return Message { id, event, data };
                    }
                    continue;
                }
                let chunk = self
                    .resp
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream goes on");
                self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("an SSE message in time")
    }
}

async fn a_json_page_starts_with_a_snapshot_then_gives_exactly_what_followed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let before = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    // No position: the snapshot of what the caller sees, and where it stands.
    let first = page(&server, BOB, "").await;
    assert_eq!(codes(&first["snapshot"]), [before]);
    assert_eq!(first["events"], json!([]));
    let next = first["next"].as_str().unwrap().to_string();
    assert!(
        next.starts_with(first["epoch"].as_str().unwrap()),
        "{first}"
    );
    // Nothing new yet: an empty page at the same place, at once.
    let empty = page(&server, BOB, &format!("?after={next}")).await;
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty["next"], next.as_str());
    // What follows, in order; a sales case is not bob's to see.
    let support = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    create_case(&mut alice, "sales").await;
    alice
        .ok(json!({"type": "close", "code": support}), "case")
        .await;
    let got = page(&server, BOB, &format!("?after={next}")).await;
    assert_eq!(codes(&got["events"]), [support.clone(), support.clone()]);
    let actions: Vec<&str> = got["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "updated"]);
    let last = &got["events"][1];
    assert_eq!(
        got["next"],
        format!("{}:{}", last["epoch"].as_str().unwrap(), last["seq"])
    );
    // An admin sees all three; limit pages them.
    let all = page(&server, ALICE, &format!("?after={next}&limit=2")).await;
    assert_eq!(all["events"].as_array().unwrap().len(), 2);
    let rest = page(
        &server,
        ALICE,
        &format!("?after={}", all["next"].as_str().unwrap()),
    )
    .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    // A position the stream does not know starts again with a snapshot.
    let unknown = page(&server, BOB, "?after=nope:3").await;
    assert!(unknown["snapshot"].is_array(), "{unknown}");
}

in_every_mode!(a_json_page_starts_with_a_snapshot_then_gives_exactly_what_followed);

async fn a_long_poll_waits_for_the_first_event(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let next = page(&server, BOB, "").await["next"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("/v1/events?after={next}&wait=20s");
    let poll = {
        let http = reqwest::Client::new();
        let url = server.url(&url);
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(BOB)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The poll is parked (counted as an open reader) until something
    // happens; then it answers with it.
    let until = tokio::time::Instant::now() + WAIT;
    while value(&scrape(&server).await, "casebroker_feed_readers") < 1.0 {
        assert!(tokio::time::Instant::now() < until, "the poll never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!poll.is_finished(), "answered before any event");
    let mut alice = server.agent(ALICE).await;
    let code = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let got = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    assert_eq!(codes(&got["events"]), [code]);
}

in_every_mode!(a_long_poll_waits_for_the_first_event);

async fn server_sent_events_resume_exactly_from_the_last_event_id(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut feed = Sse::open(&server, DAVE, None).await;
    let snap = feed.next().await;
    assert_eq!(snap.event, "snapshot");
    assert_eq!(snap.data["cases"], json!([]));
    // The feed does not make its agent online (nor assignable).
    let (_, agents) = server.http("GET", "/v1/agents", Some(ALICE), None).await;
    let dave = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "dave")
        .unwrap()
        .clone();
    assert_eq!(dave["online"], false, "{dave}");

    let mut alice = server.agent(ALICE).await;
    let one = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let first = feed.next().await;
    assert_eq!(first.event, "created");
    assert_eq!(first.data["case"]["code"], one.as_str());
    assert_eq!(
        first.id,
        format!(
            "{}:{}",
            first.data["epoch"].as_str().unwrap(),
            first.data["seq"]
        )
    );
    drop(feed);
    // Missed while away: given exactly, without a snapshot.
    let two = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .ok(json!({"type": "close", "code": one}), "case")
        .await;
    let mut again = Sse::open(&server, DAVE, Some(&first.id)).await;
    let a = again.next().await;
    let b = again.next().await;
    assert_eq!((a.event.as_str(), b.event.as_str()), ("created", "updated"));
    assert_eq!(a.data["case"]["code"], two.as_str());
    assert_eq!(b.data["case"]["code"], one.as_str());
    assert_eq!(
        b.data["seq"].as_u64().unwrap(),
        first.data["seq"].as_u64().unwrap() + 2
    );
}

in_every_mode!(server_sent_events_resume_exactly_from_the_last_event_id);

async fn every_bad_feed_request_gets_its_code(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    for (query, mentions) in [
        ("?after=nocolon", "after"),
        ("?after=:5", "after"),
        ("?after=abc:x", "after"),
        ("?wait=soon", "wait"),
        ("?wait=61s", "wait"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
    ] {
        let (st, body) = server
            .http("GET", &format!("/v1/events{query}"), Some(BOB), None)
            .await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["code"], "bad_request");
        assert!(
            body["message"].as_str().unwrap().contains(mentions),
            "{query}: {body}"
        );
    }
    let resp = reqwest::Client::new()
        .get(server.url("/v1/events"))
        .bearer_auth(BOB)
        .header("accept", "text/event-stream")
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("Last-Event-ID"));
    let (st, body) = server.http("GET", "/v1/events", None, None).await;
    assert_eq!(st, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
}

in_every_mode!(every_bad_feed_request_gets_its_code);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_resumes_exactly_across_a_restart() {
    let dir = TempDir::new("feed");
    let config = || config_with(&format!("data_dir = \"{}\"", dir.path().display()));
    let server = TestServer::with_config(config()).await;
    let next = page(&server, BOB, "").await["next"]
        .as_str()
        .unwrap()
        .to_string();
    let mut alice = server.agent(ALICE).await;
    let code = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    drop(alice);
    server.stop().await;
    let server = TestServer::with_config(config()).await;
    let got = page(&server, BOB, &format!("?after={next}")).await;
    assert!(
        got.get("snapshot").is_none(),
        "exact, not a snapshot: {got}"
    );
    assert_eq!(codes(&got["events"]), [code]);
    server.stop().await;
}
