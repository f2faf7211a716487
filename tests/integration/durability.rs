//! Durability: what a broker with a data directory keeps across a restart
//! (cases with their fields, assignments and transcripts, resume tokens,
//! each company's epoch, seq and event history), what it does at start
//! (seats held at the stop are left, cases whose TTL passed meanwhile
//! expire), the directory's lock against a second broker, `in_memory`,
//! and a SIGKILL at a random moment that loses no acknowledged change.

#[path = "durability/journal.rs"]
mod journal;
#[path = "durability/restart.rs"]
mod restart;
#[path = "durability/sigkill.rs"]
mod sigkill;
#[path = "durability/sigkill_worker.rs"]
mod sigkill_worker;
#[path = "durability/start.rs"]
mod start;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use casebroker::Config;
use serde_json::{Value, json};

use crate::util::*;

// Scratch directories ------------------------------------------------------

static NEXT_DIR: AtomicU64 = AtomicU64::new(1);

/// A directory of one test under the system's temp dir: the data directory
/// (`data/`, created by the broker) and config files beside it. Removed
/// when the test ends, passed or failed.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!(
            "casebroker-durability-{}-{}-{test}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create the scratch directory");
        Scratch { root }
    }

    /// The data directory.
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The config line naming the data directory.
    fn data_dir_line(&self) -> String {
        format!(
            "data_dir = {}",
            toml::Value::String(self.data().display().to_string())
        )
    }

    /// The test config on this data directory, with `extra` top-level keys.
    fn config(&self, extra: &str) -> Config {
        config_with(&format!("{}\n{extra}", self.data_dir_line()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// Helpers on the in-process broker -----------------------------------------

/// Stops `server` gracefully (every socket closed with 4000, the data
/// directory closed) while `clients` read their close frames.
async fn stop(server: TestServer, clients: Vec<WsClient>) {
    let drain = async move {
        for mut c in clients {
            assert_eq!(c.closed().await.0, Closed::Code(4000));
        }
    };
    tokio::join!(server.stop(), drain);
}

async fn get_transcript(server: &TestServer, code: &str) -> Value {
    let (status, t) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/transcript"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "GET {code}/transcript: {t}");
    t
}

/// An admin dashboard and its `snapshot`.
async fn dashboard(server: &TestServer) -> (WsClient, Value) {
    let mut ws = server.agent(ALICE).await;
    let snap = ws.ok(json!({"type": "subscribe"}), "snapshot").await;
    (ws, snap)
}

pub(super) use crate::util::process::{BROKER, Process};
