//! One company served by several nodes at once: its commands run on the
//! node that holds it wherever they arrive, so none fails or moves the
//! company because its traffic spans nodes; a holder killed mid-load or
//! stopped for a restart hands the company over, and nothing acknowledged
//! is lost.

use std::sync::{Arc, Mutex};

use crate::util::process::{BROKER, Process};
use crate::util::{Endpoint, code_of, config_text, scrape, value};

use super::redis_log::lifecycles;
use super::*;

const BOB: &str = crate::util::BOB;
const DAVE: &str = crate::util::DAVE;

/// A counter summed over nodes.
async fn total(nodes: &[&TestServer], series: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += value(&scrape(n).await, series);
    }
    sum
}

/// Leases taken over `nodes`, once at least `n` (within 20 s).
async fn taken_at_least(nodes: &[&TestServer], n: f64) -> f64 {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let taken = total(nodes, "casebroker_cluster_leases_taken_total").await;
        if taken >= n || Instant::now() >= until {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A case made, assigned and closed through `node`'s HTTP API.
async fn http_case(node: &TestServer, name: &str) -> String {
    let body = json!({"group": "support", "name": name});
    let code = code_of(&crate::util::create_over_http(node, BOB, body).await);
    let path = format!("/v1/cases/{code}/assign");
    let (st, v) = node
        .http("POST", &path, Some(BOB), Some(json!({"assignee": "dave"})))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["assignee"], "dave", "{v}");
    let path = format!("/v1/cases/{code}/close");
    let (st, v) = node.http("POST", &path, Some(DAVE), None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "closed", "{v}");
    code
}

/// Each test twice: the nodes sending each other calls, answers and
/// notices through Redis, and over direct links.
macro_rules! through_redis_and_over_links {
    ($($test:ident),*) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn through_redis() {
                super::$test(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn over_links() {
                super::$test(true).await
            }
        }
    )*};
}

through_redis_and_over_links!(
    one_company_on_two_and_three_nodes_answers_every_command_and_stays_on_one_node,
    a_holder_killed_mid_load_hands_its_company_over_and_nothing_acknowledged_is_lost,
    a_rolling_restart_of_every_node_under_load_answers_no_error
);

/// The config table of a node, linked to the others or not.
fn table(redis: &RedisServer, name: &str, extra: &str, linked: bool) -> String {
    if linked {
        linked_table(redis, name, extra)
    } else {
        cluster_table(redis, name, extra)
    }
}

/// A node, linked to the others or not.
async fn node_as(redis: &RedisServer, name: &str, extra: &str, linked: bool) -> TestServer {
    TestServer::with_config(crate::util::config_with(&table(redis, name, extra, linked))).await
}

async fn one_company_on_two_and_three_nodes_answers_every_command_and_stays_on_one_node(
    linked: bool,
) {
    let redis = RedisServer::start();
    // No per-connection or help limits in the way of the load.
    let unlimited = crate::util::UNLIMITED;
    let a = node_as(&redis, "a", unlimited, linked).await;
    let b = node_as(&redis, "b", unlimited, linked).await;
    let mut dash = b.agent(crate::util::ALICE).await;
    subscribe(&mut dash).await;

    // Whole cases, each agent on one node and its customer on the other:
    // every reply a success (`lifecycles` asserts each one).
    let two = lifecycles(&[&a, &b], 4, Duration::from_secs(2)).await;
    assert!(two > 0, "no lifecycle finished on two nodes");

    let c = node_as(&redis, "c", unlimited, linked).await;
    let three = lifecycles(&[&a, &b, &c], 6, Duration::from_secs(2)).await;
    assert!(three > 0, "no lifecycle finished on three nodes");

    // The HTTP API through every node, the dashboard on b told of each.
    for n in [&a, &b, &c] {
        let code = http_case(n, "Through HTTP").await;
        let closed = dash
            .wait_for("the HTTP case closed", |m| {
                m["type"] == "event"
                    && m["case"]["code"] == code.as_str()
                    && m["case"]["status"] == "closed"
            })
            .await;
        assert_eq!(closed["case"]["closed_by"], "dave", "{closed}");
        dash.clear();
    }

    // One node took each company (acme at its first command, globex,
    // which nobody used, once free for node_timeout) once and kept it; the
    // others forwarded.
    let nodes = [&a, &b, &c];
    let taken = taken_at_least(&nodes, 2.0).await;
    assert_eq!(taken, 2.0, "a company moved between nodes");
    let mut forwarding = 0;
    for n in nodes {
        if value(&scrape(n).await, "casebroker_cluster_forwarded_total") > 0.0 {
            forwarding += 1;
        }
    }
    assert_eq!(forwarding, 2, "two nodes forward, the holder runs");
    if linked {
        // Each forwarding node has a link to the holder (the holder one to
        // each for the answers and notices).
        let links = total(&nodes, "casebroker_cluster_links").await;
        assert!(links >= 4.0, "{links} links open");
    }
    assert_eq!(
        total(&nodes, "casebroker_cluster_rebuilds_total").await,
        0.0,
        "no copy went astray"
    );
}

/// What the workers of a load saw.
#[derive(Default)]
struct Seen {
    /// Cases whose creation was acknowledged.
    created: Vec<String>,
    /// Lifecycles finished, with when.
    done: Vec<Instant>,
    /// Error replies, with when.
    errors: Vec<(Instant, Value)>,
}

/// A connection to `at` after `hello`; `None` when it closed or the hello
/// was refused (the refusal recorded).
async fn hello(at: &Endpoint, hello: Value, seen: &Mutex<Seen>) -> Option<WsClient> {
    let mut ws = WsClient::open(&at.ws_url(), None, &[]).await.ok()?;
    let reply = ws.try_request(hello).await?;
    if reply["type"] != "welcome" {
        seen.lock().unwrap().errors.push((Instant::now(), reply));
        return None;
    }
    Some(ws)
}

/// Whole cases through `at` until `until`: create, the customer joins, the
/// agent joins and closes. Error replies are recorded (the case is given
/// up); a connection that closes is opened again.
async fn tolerant_lifecycles(
    at: Endpoint,
    token: &'static str,
    until: Instant,
    seen: Arc<Mutex<Seen>>,
) {
    'cases: while Instant::now() < until {
        let Some(mut agent) = hello(
            &at,
            json!({"type": "hello", "role": "agent", "token": token}),
            &seen,
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(mut customer) =
            hello(&at, json!({"type": "hello", "role": "customer"}), &seen).await
        else {
            continue;
        };
        let create = json!({"type": "create_case", "group": "support", "name": "Load"});
        let Some(reply) = agent.try_request(create).await else {
            continue;
        };
        if reply["type"] != "case" {
            seen.lock().unwrap().errors.push((Instant::now(), reply));
            continue;
        }
        let code = reply["case"]["code"].as_str().unwrap().to_string();
        seen.lock().unwrap().created.push(code.clone());
        let steps = [
            (
                true,
                json!({"type": "join", "code": code, "name": "Kim"}),
                "joined",
            ),
            (false, json!({"type": "join", "code": code}), "joined"),
            (false, json!({"type": "close", "code": code}), "case"),
        ];
        for (by_customer, msg, ty) in steps {
            let ws = if by_customer {
                &mut customer
            } else {
                &mut agent
            };
            let Some(reply) = ws.try_request(msg).await else {
                continue 'cases;
            };
            if reply["type"] != ty {
                seen.lock().unwrap().errors.push((Instant::now(), reply));
                continue 'cases;
            }
        }
        seen.lock().unwrap().done.push(Instant::now());
    }
}

async fn a_holder_killed_mid_load_hands_its_company_over_and_nothing_acknowledged_is_lost(
    linked: bool,
) {
    let redis = RedisServer::start();
    // k, a process to be killed with SIGKILL, takes the company first.
    let k_config = config_text(&table(&redis, "k", "", linked));
    let k = Process::start(BROKER, Some(&k_config), &["--listen", "127.0.0.1:0"], &[]);
    let k_at = Endpoint::new(k.listening().await);
    let mut first = k_at.agent(BOB).await;
    create(&mut first, "Decided on k").await;
    drop(first);
    let a = node_as(&redis, "a", "", linked).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(8);
    let workers: Vec<_> = [BOB, DAVE, BOB]
        .into_iter()
        .map(|token| {
            tokio::spawn(tolerant_lifecycles(
                Endpoint::new(a.addr),
                token,
                until,
                seen.clone(),
            ))
        })
        .collect();
    // Under load, forwarded to k: then k dies.
    let before = wait_done(&seen, 20).await;
    assert!(before >= 20);
    let killed = Instant::now();
    k.kill9().await;
    for w in workers {
        w.await.expect("a worker");
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // Only commands in flight when k died may fail, as `unavailable`,
    // within k's lease (3 s) and the time to see it gone; every later
    // command succeeds.
    let window = killed + Duration::from_secs(5);
    for (at, e) in &seen.errors {
        assert_eq!(e["code"], "unavailable", "{e}");
        assert!(
            *at < window,
            "an error {:?} after k died: {e}",
            *at - killed
        );
    }
    let after = seen.done.iter().filter(|t| **t > window).count();
    println!(
        "k killed after {before} cases: {} errors, {} cases done in all, {after} after the window, {} acknowledged creations",
        seen.errors.len(),
        seen.done.len(),
        seen.created.len()
    );
    assert!(
        after > 0,
        "no case finished after the hand-over: {} errors",
        seen.errors.len()
    );
    // a took each company (acme, and globex once free) over once.
    assert_eq!(taken_at_least(&[&a], 2.0).await, 2.0);
    // Every acknowledged creation is there.
    for code in &seen.created {
        let (st, v) = a
            .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
            .await;
        assert_eq!(st, 200, "{code} was acknowledged, then lost: {v}");
    }
}

/// Waits (bounded) until the workers finished `n` lifecycles.
async fn wait_done(seen: &Arc<Mutex<Seen>>, n: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let done = seen.lock().unwrap().done.len();
        if done >= n {
            return done;
        }
        assert!(Instant::now() < until, "only {done} lifecycles in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_rolling_restart_of_every_node_under_load_answers_no_error(linked: bool) {
    let redis = RedisServer::start();
    let mut nodes = [
        Some(node_as(&redis, "a", "", linked).await),
        Some(node_as(&redis, "b", "", linked).await),
        Some(node_as(&redis, "c", "", linked).await),
    ];
    // The workers of node i use node i+1's address, so that each runs
    // while its own node restarts, and find it again after.
    let addrs: Arc<Mutex<Vec<std::net::SocketAddr>>> = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.as_ref().unwrap().addr).collect(),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(60);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (addrs, seen, stop) = (addrs.clone(), seen.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Acquire) && Instant::now() < until {
                let at = Endpoint::new(addrs.lock().unwrap()[(w + 1) % 3]);
                let round = Instant::now() + Duration::from_millis(300);
                tolerant_lifecycles(at, if w % 2 == 0 { BOB } else { DAVE }, round, seen.clone())
                    .await;
            }
        }));
    }
    wait_done(&seen, 10).await;
    for i in 0..3 {
        let name = ["a", "b", "c"][i];
        let old = nodes[i].take().unwrap();
        let done = seen.lock().unwrap().done.len();
        old.shutdown().await;
        let fresh = node_as(&redis, name, "", linked).await;
        addrs.lock().unwrap()[i] = fresh.addr;
        nodes[i] = Some(fresh);
        wait_done(&seen, done + 10).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for w in workers {
        w.await.expect("a worker");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.errors.is_empty(),
        "errors during the restart: {:?}",
        seen.errors
    );
    // Every acknowledged creation is there, on every node.
    for n in nodes.iter().flatten() {
        for code in &seen.created {
            let (st, v) = n
                .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
                .await;
            assert_eq!(st, 200, "{code} was acknowledged, then lost: {v}");
        }
    }
}
