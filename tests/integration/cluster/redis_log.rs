//! The company's log and image in Redis: the log trimmed behind an image
//! and a new node starting from it, nodes starting afresh when Redis loses
//! its data or its last commits, and busy nodes under sustained load never
//! taking their own appends for lost data.

use crate::util::{ALICE, BOB, DAVE, scrape};

use super::*;

/// One string value in Redis (for the image tests).
async fn redis_get(redis: &RedisServer, key: &str) -> Option<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Waits until the company's image stands past commit `after`; its commit.
async fn image_beyond(redis: &RedisServer, after: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let at: u64 = redis_get(redis, "casebroker:{acme}:image-at")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if at > after {
            return at;
        }
        assert!(
            Instant::now() < until,
            "no image past {after} within 20 s (at {at})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redis_xlen(redis: &RedisServer, key: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_behind_an_image_and_a_new_node_starts_from_it() {
    let redis = RedisServer::start();
    let extra = format!("snapshot_interval = \"1s\"\n{}", crate::util::UNLIMITED);
    let a = node_with(&redis, "a", &extra).await;
    let mut bob = a.agent(BOB).await;
    let _dave = a.agent(DAVE).await;
    // More commits than the log keeps behind an image (1,000).
    let mut codes = Vec::new();
    for i in 0..1100 {
        codes.push(create(&mut bob, &format!("image {i}")).await);
    }
    let closed = codes[3].clone();
    bob.ok(json!({"type": "close", "code": closed}), "case")
        .await;
    let seated = codes[7].clone();
    let mut customer = a.customer().await;
    customer
        .ok(
            json!({"type": "join", "code": seated, "name": "Ivy"}),
            "joined",
        )
        .await;
    let mut dash_a = a.agent(ALICE).await;
    let snap_a = subscribe(&mut dash_a).await;

    // The image comes within a few intervals; the log before it is gone.
    let at = image_beyond(&redis, 1100).await;
    let kept = redis_xlen(&redis, "casebroker:{acme}:log").await;
    assert!(
        kept < at,
        "the log is trimmed: {kept} commits kept, image at {at}"
    );

    // A node started now begins from the image: the same cases, seats,
    // agents and stream.
    let b = node_with(&redis, "b", &extra).await;
    for code in [&codes[0], &closed, &seated, codes.last().unwrap()] {
        let on_a = a
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        let on_b = b
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(on_a, on_b, "case {code} on both nodes");
    }
    let (_, seat) = b
        .http("GET", &format!("/v1/cases/{seated}"), Some(ALICE), None)
        .await;
    assert_eq!(seat["customer_connected"], true, "{seat}");
    let (_, agents) = b.http("GET", "/v1/agents", Some(ALICE), None).await;
    let online: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["online"] == true)
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        online.contains(&"bob") && online.contains(&"dave"),
        "{agents}"
    );
    let mut dash_b = b.agent(ALICE).await;
    let snap_b = subscribe(&mut dash_b).await;
    assert_eq!(snap_a["epoch"], snap_b["epoch"]);
    // b's copy goes on with the same stream: a change made on b reaches
    // a's dashboard with the next seq, and b's with the same.
    let mut dave_on_b = b.agent(DAVE).await;
    let next = create(&mut dave_on_b, "after the image").await;
    let ea = event(&mut dash_a, &next, "created").await;
    let eb = event(&mut dash_b, &next, "created").await;
    assert_eq!(ea["seq"], eb["seq"], "{ea} {eb}");
    // The customer who sat down on a is still seated for b: it leaves,
    // and b's dashboard is told.
    drop(customer);
    let s = seated.clone();
    wait_long(&mut dash_b, "the seat left", RELEASE_WAIT, move |m| {
        m["type"] == "event"
            && m["case"]["code"] == s.as_str()
            && m["case"]["customer_connected"] == false
    })
    .await;

    // A case deleted on a, and at once a change on b: b takes the company
    // over before a writes another image, so only b's first image (written
    // whole, since b followed what a decided) can drop the deleted record.
    // A third node started from it must not bring the case back.
    let gone = codes[0].clone();
    bob.ok(json!({"type": "delete", "code": gone}), "deleted")
        .await;
    create(&mut dave_on_b, "takeover").await;
    image_beyond(&redis, at + 1).await;
    let c = node_with(&redis, "c", &extra).await;
    let (st, _) = c
        .http("GET", &format!("/v1/cases/{gone}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 404, "a deleted case stays deleted");
    let (st, _) = c
        .http("GET", &format!("/v1/cases/{}", codes[1]), Some(ALICE), None)
        .await;
    assert_eq!(st, 200);
    let snap_c = subscribe(&mut c.agent(ALICE).await).await;
    let snap_b_now = subscribe(&mut b.agent(ALICE).await).await;
    assert_eq!(snap_c["seq"], snap_b_now["seq"], "the same stream on c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_afresh_when_redis_loses_its_data() {
    let (redis, a, b) = two_nodes().await;
    let mut bob = a.agent(BOB).await;
    let code = create(&mut bob, "Before the loss").await;
    let mut dash_a = a.agent(ALICE).await;
    let mut dash_b = b.agent(ALICE).await;
    let before = subscribe(&mut dash_a).await;
    subscribe(&mut dash_b).await;

    // Redis forgets everything (as a restart without persistence would).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    // Both nodes notice within a few heartbeats, start the company afresh
    // and close their dashboards with 4001, so they subscribe again.
    for dash in [&mut dash_a, &mut dash_b] {
        let closed = tokio::time::timeout(RELEASE_WAIT, dash.closed())
            .await
            .expect("the dashboard is closed");
        assert!(
            matches!(closed.0, crate::util::Closed::Code(4001)),
            "{:?}",
            closed.0
        );
    }
    for node in [&a, &b] {
        let mut dash = node.agent(ALICE).await;
        let snap = subscribe(&mut dash).await;
        assert_ne!(snap["epoch"], before["epoch"], "a new epoch: {snap}");
        let (st, _) = node
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(st, 404);
    }
    // And they take changes again.
    let mut dave = b.agent(DAVE).await;
    create(&mut dave, "After the loss").await;
}

/// The `[cluster]` extras of the sustained-load tests: a heartbeat every
/// 10 ms, so that heartbeats race appends all the time, an image every
/// second, and no per-connection or help limits in the way.
fn busy_extra() -> String {
    format!(
        "snapshot_interval = \"1s\"\nhelp_per_ip_per_minute = 1000000\nhelp_per_module_per_minute = 1000000\n{}",
        crate::util::UNLIMITED
    )
}

async fn busy_node(redis: &RedisServer, name: &str) -> TestServer {
    let table = format!(
        "{}heartbeat = \"10ms\"\n",
        cluster_table(redis, name, &busy_extra())
    );
    TestServer::with_config(config_with(&table)).await
}

/// A dashboard that reads everything until the case named `end` is
/// created: panics on a close (4001 among them) or on a seq out of order;
/// returns its epoch and the events it saw.
async fn watch_until(mut dash: WsClient, end: String) -> (Value, usize) {
    let snap = subscribe(&mut dash).await;
    let epoch = snap["epoch"].clone();
    let mut last = snap["seq"].as_u64().expect("a seq");
    let mut seen = 0;
    loop {
        let m = dash.next().await;
        if m["type"] != "event" {
            continue;
        }
        assert_eq!(m["epoch"], epoch, "one epoch all along: {m}");
        let seq = m["seq"].as_u64().expect("a seq");
        assert!(seq > last, "in order: {seq} after {last}");
        last = seq;
        seen += 1;
        if m["action"] == "created" && m["case"]["name"] == end.as_str() {
            dash.sync().await;
            return (epoch, seen);
        }
    }
}

/// Whole case lifecycles from `workers` agents for `run`, spread over
/// `nodes` (each lifecycle's customer on another node than its agent when
/// there are several): create, the customer joins, the agent joins and
/// closes, the customer is told. Every reply must be a success.
pub(super) async fn lifecycles(nodes: &[&TestServer], workers: usize, run: Duration) -> usize {
    let until = Instant::now() + run;
    let tokens = [BOB, DAVE, ALICE];
    let mut tasks = Vec::new();
    for w in 0..workers {
        let agent_url = nodes[w % nodes.len()].ws_url();
        let customer_url = nodes[(w + 1) % nodes.len()].ws_url();
        let token = tokens[w % tokens.len()];
        tasks.push(tokio::spawn(async move {
            let mut agent = WsClient::connect(&agent_url).await;
            agent
                .ok(
                    json!({"type": "hello", "role": "agent", "token": token}),
                    "welcome",
                )
                .await;
            let mut done = 0;
            while Instant::now() < until {
                let code = create(&mut agent, &format!("load {w}.{done}")).await;
                let mut customer = WsClient::connect(&customer_url).await;
                customer
                    .ok(json!({"type": "hello", "role": "customer"}), "welcome")
                    .await;
                customer
                    .ok(
                        json!({"type": "join", "code": code, "name": "Load"}),
                        "joined",
                    )
                    .await;
                agent
                    .ok(json!({"type": "join", "code": code}), "joined")
                    .await;
                agent
                    .ok(json!({"type": "close", "code": code}), "case")
                    .await;
                let ended = customer.wait_type("ended").await;
                assert_eq!(ended["reason"], "closed", "{ended}");
                agent.clear();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("a worker");
    }
    total
}

/// Sustained lifecycles through `nodes` for longer than several heartbeats
/// and images: no `unavailable`, no rebuild, no dashboard closed, one
/// epoch.
async fn no_false_alarm_under_load(redis: &RedisServer, nodes: &[&TestServer]) {
    let mut watchers = Vec::new();
    for node in nodes {
        let dash = node.agent(ALICE).await;
        watchers.push(tokio::spawn(watch_until(dash, "the end".into())));
    }
    let image_before: u64 = redis_get(redis, "casebroker:{acme}:image-at")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let done = lifecycles(nodes, 8, Duration::from_secs(4)).await;
    assert!(done >= 8, "every worker got through: {done}");
    // An image was written during the load.
    image_beyond(redis, image_before).await;
    let mut last = nodes[0].agent(BOB).await;
    create(&mut last, "the end").await;
    let mut epochs = Vec::new();
    for w in watchers {
        let (epoch, seen) = w.await.expect("a dashboard kept up");
        assert!(seen >= done, "{seen} events for {done} lifecycles");
        epochs.push(epoch);
    }
    for node in nodes {
        let text = scrape(node).await;
        assert_eq!(
            crate::util::value(&text, "casebroker_cluster_rebuilds_total"),
            0.0,
            "no company was rebuilt"
        );
        assert_eq!(
            crate::util::metric(&text, "casebroker_errors_total{code=\"unavailable\"}")
                .unwrap_or(0.0),
            0.0,
            "no command was answered unavailable"
        );
        let snap = subscribe(&mut node.agent(ALICE).await).await;
        epochs.push(snap["epoch"].clone());
    }
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_never_takes_its_appends_for_lost_data() {
    let redis = RedisServer::start();
    let a = busy_node(&redis, "a").await;
    no_false_alarm_under_load(&redis, &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_busy_nodes_never_take_their_appends_for_lost_data() {
    let redis = RedisServer::start();
    let a = busy_node(&redis, "a").await;
    let b = busy_node(&redis, "b").await;
    no_false_alarm_under_load(&redis, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_last_commits_starts_the_stream_anew() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let mut bob = a.agent(BOB).await;
    create(&mut bob, "Kept").await;
    let mut dash = a.agent(ALICE).await;
    let before = subscribe(&mut dash).await;
    let code = create(&mut bob, "Lost").await;
    let lost = event(&mut dash, &code, "created").await;
    let seen = lost["seq"].as_u64().unwrap();

    // Redis loses its last commit (as an fsync-everysec AOF may on a power
    // loss): the log and its head go back by one.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let head: u64 = redis::cmd("GET")
        .arg("casebroker:{acme}:head")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("XDEL")
        .arg("casebroker:{acme}:log")
        .arg(format!("{head}-1"))
        .cmd("XSETID")
        .arg("casebroker:{acme}:log")
        .arg(format!("{}-1", head - 1))
        .cmd("SET")
        .arg("casebroker:{acme}:head")
        .arg(head - 1)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The node notices, closes its dashboards with 4001, and a dashboard
    // that resumes from what it saw gets a snapshot of a new epoch: the
    // seqs it saw are never given to other events.
    let closed = tokio::time::timeout(RELEASE_WAIT, dash.closed())
        .await
        .expect("the dashboard is closed");
    assert_eq!(closed.0, crate::util::Closed::Code(4001), "{:?}", closed.1);
    let mut again = a.agent(ALICE).await;
    let snap = again
        .ok(
            json!({"type": "subscribe", "resume": {"epoch": before["epoch"], "seq": seen}}),
            "snapshot",
        )
        .await;
    assert_ne!(snap["epoch"], before["epoch"], "a new epoch: {snap}");
    let names: Vec<&str> = snap["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Kept"), "{snap}");
    let text = scrape(&a).await;
    assert!(crate::util::value(&text, "casebroker_cluster_rebuilds_total") >= 1.0);
    // And the company takes changes again.
    create(&mut bob, "After").await;
}
