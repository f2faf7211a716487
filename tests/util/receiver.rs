//! A real HTTP receiver for webhooks on 127.0.0.1:0: it records every
//! call (headers and body) and answers as the test's plan says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::WAIT;

/// One call received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    /// How many calls with this `webhook-id` came before this one.
    pub retry: usize,
    /// What the receiver answered.
    pub status: u16,
    pub at: std::time::Instant,
}

impl Hit {
    /// The event's case code.
    pub fn code(&self) -> &str {
        self.json["data"]["case"]["code"].as_str().unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }
}

/// What to answer: status and `Retry-After` seconds, from the body and
/// the number of earlier calls with the same `webhook-id`. Status 0: no
/// answer at all (the call hangs for a minute).
pub type Plan = Arc<dyn Fn(&Value, usize) -> (u16, Option<u64>) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    plan: Arc<Mutex<Plan>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    /// A `Location` every answer carries, if set.
    location: Arc<Mutex<Option<String>>>,
    tx: mpsc::UnboundedSender<Hit>,
}

pub struct Receiver {
    pub url: String,
    plan: Arc<Mutex<Plan>>,
    location: Arc<Mutex<Option<String>>>,
    rx: mpsc::UnboundedReceiver<Hit>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = h("webhook-id");
    let body = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let retry = {
        let mut seen = s.seen.lock().unwrap();
        let n = seen.entry(id.clone()).or_default();
        *n += 1;
        *n - 1
    };
    let plan = s.plan.lock().unwrap().clone();
    let (status, retry_after) = plan(&json, retry);
    let _ = s.tx.send(Hit {
        id,
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        json,
        retry,
        status,
        at: std::time::Instant::now(),
    });
    if status == 0 {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        return StatusCode::OK.into_response();
    }
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(to) = s.location.lock().unwrap().clone() {
        resp.headers_mut().insert("location", to.parse().unwrap());
    }
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    resp
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        let plan: Plan = Arc::new(|_, _| (200, None));
        let plan = Arc::new(Mutex::new(plan));
        let (tx, rx) = mpsc::unbounded_channel();
        let location = Arc::new(Mutex::new(None));
        let shared = Shared {
            plan: plan.clone(),
            seen: Arc::default(),
            location: location.clone(),
            tx,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            plan,
            location,
            rx,
            task,
        }
    }

    /// Answers from now on as `plan` says.
    pub fn answer(
        &self,
        plan: impl Fn(&Value, usize) -> (u16, Option<u64>) + Send + Sync + 'static,
    ) {
        *self.plan.lock().unwrap() = Arc::new(plan);
    }

    /// Every answer from now on carries `Location: to` (with a 3xx plan,
    /// a redirect).
    pub fn locate(&self, to: &str) {
        *self.location.lock().unwrap() = Some(to.to_string());
    }

    /// The next call, within `WAIT`.
    pub async fn next(&mut self) -> Hit {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a webhook call in time")
            .expect("the receiver runs")
    }

    /// The next call that `pred` accepts (others are dropped).
    pub async fn next_where(&mut self, what: &str, pred: impl Fn(&Hit) -> bool) -> Hit {
        let until = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let hit = tokio::time::timeout_at(until, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no webhook call: {what}"))
                .expect("the receiver runs");
            if pred(&hit) {
                return hit;
            }
        }
    }

    /// Calls already received and not yet read.
    pub fn drain(&mut self) -> Vec<Hit> {
        let mut out = Vec::new();
        while let Ok(h) = self.rx.try_recv() {
            out.push(h);
        }
        out
    }
}
