//! The waiting line: a customer seated in an unassigned open case of its
//! group is told its position (`queue {code, position}`, 1 = next) only when
//! it changes. During a burst of changes the positions are coalesced: a
//! waiting customer is told its latest position at most every 250 ms, and
//! always the final one. So these tests never expect every intermediate
//! position: they read a customer's `queue` pushes in order until the
//! expected final position arrives, then check that nothing follows it.

use std::sync::atomic::{AtomicU64, Ordering};

use casebroker::Config;
use serde_json::{Value, json};

use crate::util::*;

/// The test config (company policy `manual`: nothing is assigned
/// automatically, so unassigned cases stay in line), with the per-connection
/// message rate, the help-request limits and the per-address connection cap
/// lifted so that deep lines can be built quickly.
fn line_config() -> Config {
    coalescing_config("0s")
}

/// The line's config with positions told at most every `interval`: `0s`
/// pushes each position with the change that moved it, so a ping round
/// trip is enough to know that nothing more is coming.
fn coalescing_config(interval: &str) -> Config {
    config_with(&format!(
        "{UNLIMITED}\n\
         help_per_ip_per_minute = 1000000\n\
         help_per_module_per_minute = 1000000\n\
         max_connections_per_ip = 100000\n\
         position_interval = \"{interval}\""
    ))
}

static BATCH: AtomicU64 = AtomicU64::new(1);

/// Sends every command at once, each with its own `id`, then waits for all
/// the replies; each must have type `ty`. Returns the replies in command
/// order.
async fn pipeline(ws: &mut WsClient, cmds: Vec<Value>, ty: &str) -> Vec<Value> {
    let batch = BATCH.fetch_add(1, Ordering::Relaxed);
    let ids: Vec<String> = (0..cmds.len()).map(|i| format!("b{batch}-{i}")).collect();
    let mut sent = Vec::with_capacity(cmds.len());
    for (mut cmd, id) in cmds.into_iter().zip(&ids) {
        cmd["id"] = json!(id);
        ws.send(cmd.clone()).await;
        sent.push(cmd);
    }
    let mut replies = Vec::with_capacity(ids.len());
    for (id, cmd) in ids.into_iter().zip(sent) {
        let want = json!(id);
        let reply = ws
            .wait_for(&format!("reply {id}"), move |m| m["id"] == want)
            .await;
        assert_eq!(reply["type"], ty, "{cmd} got {reply}");
        replies.push(reply);
    }
    replies
}

/// Creates `n` cases in `group` as `ws` (an agent), oldest first; returns
/// their codes in creation order. They have no customer seated, yet they
/// hold places in the line.
async fn create_cases(ws: &mut WsClient, group: &str, n: usize) -> Vec<String> {
    let cmds = (0..n)
        .map(|i| json!({"type": "create_case", "group": group, "name": format!("case {i}")}))
        .collect();
    pipeline(ws, cmds, "case")
        .await
        .into_iter()
        .map(|r| {
            assert!(r["case"]["assignee"].is_null(), "{r}");
            code_of(&r["case"])
        })
        .collect()
}

/// Assigns every case in `codes` to `assignee` as `ws`, in one pipelined
/// burst; returns once every reply has arrived.
async fn assign_all(ws: &mut WsClient, codes: &[String], assignee: &str) {
    let cmds = codes
        .iter()
        .map(|c| json!({"type": "assign", "code": c, "assignee": assignee}))
        .collect();
    for r in pipeline(ws, cmds, "case").await {
        assert_eq!(r["case"]["assignee"], assignee, "{r}");
    }
}

/// A customer seated in the case it asked for, waiting in line.
struct Waiting {
    ws: WsClient,
    code: String,
    /// The last position the customer was told.
    position: Option<u64>,
}

impl Waiting {
    /// A customer who asked for help through `module`.
    async fn new(server: &TestServer, module: &str) -> Waiting {
        let (ws, joined) = request_help(server, module).await;
        assert_eq!(joined["case"]["status"], "pending", "{joined}");
        assert_eq!(joined["case"]["supporter"], Value::Null, "{joined}");
        Waiting {
            code: code_of(&joined),
            ws,
            position: None,
        }
    }

    /// Reads this customer's `queue` pushes, in order, until it is told
    /// `want`; then checks that no later position follows. Returns the
    /// positions told on the way (the last one is `want`); empty when the
    /// customer already held `want`.
    async fn settles_at(&mut self, want: u64) -> Vec<u64> {
        let mut told = Vec::new();
        while self.position != Some(want) {
            let what = format!(
                "queue push for {} reaching position {want} (last told {:?})",
                self.code, self.position
            );
            let q = self.ws.wait_for(&what, |v| v["type"] == "queue").await;
            assert_eq!(q["code"], self.code.as_str(), "{q}");
            assert!(q.get("id").is_none(), "pushes carry no id: {q}");
            let p = q["position"]
                .as_u64()
                .unwrap_or_else(|| panic!("position is an integer: {q}"));
            assert!(p >= 1, "positions start at 1: {q}");
            assert_ne!(
                self.position,
                Some(p),
                "{}: told position {p} again though it did not change",
                self.code
            );
            told.push(p);
            self.position = Some(p);
        }
        self.not_told().await;
        told
    }

    /// Checks that the customer has been told nothing new: no `queue` push
    /// arrived before a ping round trip (with `position_interval = 0s`, a
    /// position is pushed with the change that moved it, never later).
    async fn not_told(&mut self) {
        self.ws.sync().await;
        let queued: Vec<&Value> = self
            .ws
            .pending()
            .iter()
            .filter(|v| v["type"] == "queue")
            .collect();
        assert!(
            queued.is_empty(),
            "{} (last told {:?}) was told a position again: {queued:?}",
            self.code,
            self.position
        );
    }

    /// Waits for the `status` push telling the customer its case was taken
    /// by `supporter` (a display name); returns it.
    async fn taken_by(&mut self, supporter: &str) -> Value {
        let code = self.code.clone();
        let st = self
            .ws
            .wait_for(&format!("status naming the supporter of {code}"), |v| {
                v["type"] == "status" && !v["supporter"].is_null()
            })
            .await;
        assert_eq!(st["code"], code.as_str(), "{st}");
        assert_eq!(st["supporter"], json!({"name": supporter}), "{st}");
        assert_eq!(st["customer_connected"], true, "{st}");
        st
    }
}

/// `n` customers asking for help through `module`, one after the other.
async fn customers(server: &TestServer, module: &str, n: usize) -> Vec<Waiting> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(Waiting::new(server, module).await);
    }
    all
}

#[tokio::test]
async fn deep_line_tells_every_waiting_customer_its_position_after_the_head_is_taken() {
    const AHEAD: u64 = 300;
    const CUSTOMERS: u64 = 30;
    let server = TestServer::with_config(line_config()).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;

    // 300 cases without a customer, then 30 customers behind them.
    let cases = create_cases(&mut alice, "support", AHEAD as usize).await;
    let mut waiting = customers(&server, MODULE, CUSTOMERS as usize).await;
    // Each customer is told its place once; those who arrive later, behind
    // it, do not change it.
    for (i, c) in (1..).zip(waiting.iter_mut()) {
        assert_eq!(c.settles_at(AHEAD + i).await, vec![AHEAD + i]);
    }

    // Bob takes the head of the line by joining it; alice hands the next
    // four to dave. Every customer moves up by five.
    let head = bob
        .ok(json!({"type": "join", "code": cases[0]}), "joined")
        .await;
    assert_eq!(head["case"]["assignee"], "bob", "{head}");
    assign_all(&mut alice, &cases[1..5], "dave").await;
    for (i, c) in (1..).zip(waiting.iter_mut()) {
        let told = c.settles_at(AHEAD + i - 5).await;
        assert!(
            told.windows(2).all(|w| w[0] > w[1]),
            "{}: positions only go down here: {told:?}",
            c.code
        );
    }

    // The 15th customer's case (position 310) is taken: it learns who took
    // it, the 15 customers behind it move up by one, the 14 before it keep
    // their places and are told nothing.
    const MIDDLE: usize = 14;
    let code = waiting[MIDDLE].code.clone();
    let r = alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "bob"}),
            "case",
        )
        .await;
    assert_eq!(r["case"]["assignee"], "bob", "{r}");
    let st = waiting[MIDDLE].taken_by("Bob").await;
    assert_eq!(st["status"], "pending", "{st}");
    for (i, c) in (1..).zip(waiting.iter_mut()).skip(MIDDLE + 1) {
        assert_eq!(c.settles_at(AHEAD + i - 6).await, vec![AHEAD + i - 6]);
    }
    for (i, c) in (1..).zip(waiting.iter_mut()).take(MIDDLE) {
        c.not_told().await;
        assert_eq!(c.position, Some(AHEAD + i - 5), "{}", c.code);
    }
    waiting[MIDDLE].not_told().await;
}

#[tokio::test]
async fn a_customer_who_reaches_the_head_is_told_position_one() {
    let server = TestServer::with_config(line_config()).await;
    let mut alice = server.agent(ALICE).await;
    let ahead = create_cases(&mut alice, "support", 3).await;
    let mut first = Waiting::new(&server, MODULE).await;
    let mut second = Waiting::new(&server, MODULE).await;
    assert_eq!(first.settles_at(4).await, vec![4]);
    assert_eq!(second.settles_at(5).await, vec![5]);

    // The cases ahead leave the line one by one, each in another way:
    // assigned, closed, deleted.
    alice
        .ok(
            json!({"type": "assign", "code": ahead[0], "assignee": "bob"}),
            "case",
        )
        .await;
    assert_eq!(first.settles_at(3).await, vec![3]);
    assert_eq!(second.settles_at(4).await, vec![4]);
    alice
        .ok(json!({"type": "close", "code": ahead[1]}), "case")
        .await;
    assert_eq!(first.settles_at(2).await, vec![2]);
    assert_eq!(second.settles_at(3).await, vec![3]);
    alice
        .ok(json!({"type": "delete", "code": ahead[2]}), "deleted")
        .await;
    assert_eq!(first.settles_at(1).await, vec![1]);
    assert_eq!(second.settles_at(2).await, vec![2]);

    // The head is taken: the customer behind it is next.
    let code = first.code.clone();
    alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "bob"}),
            "case",
        )
        .await;
    first.taken_by("Bob").await;
    assert_eq!(second.settles_at(1).await, vec![1]);
    first.not_told().await;
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced_but_ends_on_the_final_position() {
    const AHEAD: usize = 200;
    // Positions coalesced as by default.
    let server = TestServer::with_config(coalescing_config("250ms")).await;
    let mut alice = server.agent(ALICE).await;
    let ahead = create_cases(&mut alice, "support", AHEAD).await;
    let mut last = Waiting::new(&server, MODULE).await;
    assert_eq!(last.settles_at(AHEAD as u64 + 1).await, vec![201]);

    // Every case ahead of the customer is assigned in one quick burst.
    assign_all(&mut alice, &ahead, "bob").await;
    let told = last.settles_at(1).await;
    assert_eq!(told.last(), Some(&1), "{told:?}");
    assert!(
        told.windows(2).all(|w| w[0] > w[1]),
        "positions only go down here: {told:?}"
    );
    assert!(
        told.len() < 50,
        "{} positions told for one burst; they are coalesced: {told:?}",
        told.len()
    );
}

#[tokio::test]
async fn positions_in_one_group_are_not_disturbed_by_another_group() {
    let server = TestServer::with_config(line_config()).await;
    let mut alice = server.agent(ALICE).await;
    // Interleaved: support, sales, support, sales, support.
    let mut support = Vec::new();
    let mut sales = Vec::new();
    for i in 0..5 {
        if i % 2 == 0 {
            support.push(code_of(&create_case(&mut alice, "support").await));
        } else {
            sales.push(code_of(&create_case(&mut alice, "sales").await));
        }
    }
    let mut s = Waiting::new(&server, MODULE).await;
    let mut a = Waiting::new(&server, MODULE_SALES).await;
    let mut b = Waiting::new(&server, MODULE_SALES).await;
    // Each counts only its own group's line.
    assert_eq!(s.settles_at(4).await, vec![4]);
    assert_eq!(a.settles_at(3).await, vec![3]);
    assert_eq!(b.settles_at(4).await, vec![4]);

    // The support line moves; the sales customers keep their places.
    assign_all(&mut alice, &support, "bob").await;
    assert_eq!(s.settles_at(1).await.last(), Some(&1));
    a.not_told().await;
    b.not_told().await;

    // The sales line moves; the support customer keeps its place.
    alice
        .ok(
            json!({"type": "assign", "code": sales[0], "assignee": "carol"}),
            "case",
        )
        .await;
    assert_eq!(a.settles_at(2).await, vec![2]);
    assert_eq!(b.settles_at(3).await, vec![3]);
    s.not_told().await;
    assert_eq!(s.position, Some(1));
}

#[tokio::test]
async fn a_case_leaving_the_line_stops_its_position_pushes() {
    let server = TestServer::with_config(line_config()).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let head = code_of(&create_case(&mut alice, "support").await);
    let mut taken = Waiting::new(&server, MODULE).await;
    let mut behind = Waiting::new(&server, MODULE).await;
    create_case(&mut alice, "support").await;
    assert_eq!(taken.settles_at(2).await, vec![2]);
    assert_eq!(behind.settles_at(3).await, vec![3]);

    // The case is assigned: its customer learns who took it, and the
    // customer behind it moves up.
    let code = taken.code.clone();
    alice
        .ok(
            json!({"type": "assign", "code": code, "assignee": "bob"}),
            "case",
        )
        .await;
    let st = taken.taken_by("Bob").await;
    assert_eq!(st["status"], "pending", "{st}");
    assert_eq!(st["supporter_connected"], false, "{st}");
    assert_eq!(behind.settles_at(2).await, vec![2]);
    taken.not_told().await;

    // The line moves on ahead of it: the assigned case is out of it, so its
    // customer is told nothing, while the one behind reaches the head.
    alice
        .ok(
            json!({"type": "assign", "code": head, "assignee": "bob"}),
            "case",
        )
        .await;
    assert_eq!(behind.settles_at(1).await, vec![1]);
    taken.not_told().await;

    // The supporter joins: a status, still no position.
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let st = taken
        .ws
        .wait_for("status in_progress", |v| {
            v["type"] == "status" && v["status"] == "in_progress"
        })
        .await;
    assert_eq!(st["code"], code.as_str(), "{st}");
    assert_eq!(st["supporter"], json!({"name": "Bob"}), "{st}");
    assert_eq!(st["supporter_connected"], true, "{st}");
    taken.not_told().await;
}

#[tokio::test]
async fn companies_do_not_share_a_line() {
    let server = TestServer::with_config(line_config()).await;
    let mut alice = server.agent(ALICE).await;
    let mut gina = server.agent(GINA).await;
    // Both companies have a group named `support`.
    let acme = create_cases(&mut alice, "support", 2).await;
    let globex = code_of(&create_case(&mut gina, "support").await);
    let mut a = Waiting::new(&server, MODULE).await;
    let mut g = Waiting::new(&server, GLOBEX_MODULE).await;
    assert_eq!(a.settles_at(3).await, vec![3]);
    assert_eq!(g.settles_at(2).await, vec![2]);

    // Acme's line moves; globex's customer keeps its place.
    assign_all(&mut alice, &acme, "bob").await;
    assert_eq!(a.settles_at(1).await.last(), Some(&1));
    g.not_told().await;

    // Globex's line moves; acme's customer keeps its place.
    gina.ok(
        json!({"type": "assign", "code": globex, "assignee": "gina"}),
        "case",
    )
    .await;
    assert_eq!(g.settles_at(1).await, vec![1]);
    a.not_told().await;
    assert_eq!(a.position, Some(1));
}
