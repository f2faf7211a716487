//! Several brokers on one real `redis-server`: any node serves anyone,
//! one ordered stream per company, claims with one winner, one company's
//! commands decided on one node wherever they arrive, dead and restarted
//! nodes, and a Redis that goes away.

#[path = "cluster/failures.rs"]
mod failures;
#[path = "cluster/links.rs"]
mod links;
#[path = "cluster/one_company.rs"]
mod one_company;
#[path = "cluster/one_stream.rs"]
mod one_stream;
#[path = "cluster/redis_log.rs"]
mod redis_log;
#[path = "cluster/resident.rs"]
mod resident;
#[path = "cluster/shared_state.rs"]
mod shared_state;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::redis::RedisServer;
use crate::util::{TestServer, WsClient, config_with};

/// How long a dead node's seats may take to be released: its timeout
/// (3 s here), a heartbeat, and slack for a loaded machine.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

fn cluster_table(redis: &RedisServer, name: &str, extra: &str) -> String {
    format!(
        "{extra}\n[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nnode_timeout = \"3s\"\n",
        redis.url()
    )
}

/// Waits for a message, for longer than the usual wait.
async fn wait_long(
    ws: &mut WsClient,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + limit;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), ws.wait_for(what, &pred)).await {
            Ok(v) => return v,
            Err(_) => assert!(
                Instant::now() < until,
                "no {what} within {limit:?}; pending {:?}",
                ws.pending()
            ),
        }
    }
}

/// A node of the cluster on `redis`, on a free loopback port.
async fn node(redis: &RedisServer, name: &str) -> TestServer {
    node_with(redis, name, "").await
}

async fn node_with(redis: &RedisServer, name: &str, extra: &str) -> TestServer {
    // The companies follow the `[cluster]` table in config_with.
    TestServer::with_config(config_with(&cluster_table(redis, name, extra))).await
}

/// [`cluster_table`], the node linking directly to the others
/// (`[cluster] link` on a free loopback port).
fn linked_table(redis: &RedisServer, name: &str, extra: &str) -> String {
    format!(
        "{}link = \"127.0.0.1:0\"\n",
        cluster_table(redis, name, extra)
    )
}

/// A node linking directly to the others (see [`linked_table`]).
async fn linked_node(redis: &RedisServer, name: &str) -> TestServer {
    linked_node_with(redis, name, "").await
}

async fn linked_node_with(redis: &RedisServer, name: &str, extra: &str) -> TestServer {
    TestServer::with_config(config_with(&linked_table(redis, name, extra))).await
}

/// A Redis and two nodes on it, `a` and `b`.
async fn two_nodes() -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    (redis, a, b)
}

async fn subscribe(ws: &mut WsClient) -> Value {
    ws.ok(json!({"type": "subscribe"}), "snapshot").await
}

/// Subscribes `ws` (already connected) again with `resume` from `epoch`
/// and `seq`, and asserts that the stream still holds that position: the
/// reply is `resumed`, in the same epoch.
async fn resume_on(ws: &mut WsClient, epoch: &Value, seq: u64) {
    let resumed = ws
        .ok(
            json!({"type": "subscribe", "resume": {"epoch": epoch, "seq": seq}}),
            "resumed",
        )
        .await;
    assert_eq!(&resumed["epoch"], epoch, "{resumed}");
}

async fn create(ws: &mut WsClient, name: &str) -> String {
    let reply = ws
        .ok(
            json!({"type": "create_case", "group": "support", "name": name}),
            "case",
        )
        .await;
    reply["case"]["code"].as_str().expect("a code").to_string()
}

/// The next `event` for `code` with this action.
async fn event(ws: &mut WsClient, code: &str, action: &str) -> Value {
    let (code, action) = (code.to_string(), action.to_string());
    ws.wait_for(&format!("{action} of {code}"), move |m| {
        m["type"] == "event" && m["case"]["code"] == code.as_str() && m["action"] == action.as_str()
    })
    .await
}
