//! SIGKILL at a random moment, twenty rounds: the binary is killed while
//! three agents drive changes against it, restarted on the same directory,
//! and checked to have kept every acknowledged change (an unanswered last
//! step may or may not be there), with the dashboard resuming from the last
//! event it saw.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;

use casebroker_testkit::crash::{CaseLog, Op, Seen, Step, judge, transcript_lines};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::sigkill_worker::Worker;
use super::*;

// 7. SIGKILL -------------------------------------------------------------------

/// Kill-and-restart rounds.
const ROUNDS: u32 = 20;

/// The agents driving changes: id, token, admin. All are in `support`.
pub(super) const AGENTS: [(&str, &str, bool); 3] = [
    ("alice", ALICE, true),
    ("bob", BOB, false),
    ("dave", DAVE, false),
];

/// The binary's config. Odd rounds also store an image of every company
/// every 25 ms, so kills land on images and journal trimming as well.
fn binary_config(round: u32) -> String {
    let images = if round % 2 == 1 {
        "snapshot_interval = \"25ms\""
    } else {
        ""
    };
    let mut text = format!(
        "shutdown_grace = \"1s\"\nmessages_per_second = 1000000\nmessage_burst = 1000000\nhelp_per_ip_per_minute = 1000000\nhelp_per_module_per_minute = 1000000\n{images}\n\n[[companies]]\nid = \"acme\"\nname = \"ACME\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.modules]]\nkey = \"{MODULE}\"\ngroup = \"support\"\n"
    );
    for (id, token, admin) in AGENTS {
        let mut name = id.to_string();
        name[..1].make_ascii_uppercase();
        text.push_str(&format!(
            "\n[[companies.agents]]\nid = \"{id}\"\nname = \"{name}\"\ntoken = \"{token}\"\ngroups = [\"support\"]\nadmin = {admin}\n"
        ));
    }
    text
}

/// Counts of one round's check.
#[derive(Default, Debug)]
struct Tally {
    acked_creates: usize,
    found_creates: usize,
    acked_changes: usize,
    acked_lines: usize,
    found_lines: usize,
    /// Cases showing their unanswered last step too.
    beyond: usize,
    /// Cases whose creation was not answered, found anyway.
    unanswered_found: usize,
    unanswered_creates: usize,
}

/// A case's transcript as (role, text) lines.
async fn lines(at: &Endpoint, code: &str) -> Vec<(String, String)> {
    let t = at.get(&format!("/v1/cases/{code}/transcript"), ALICE).await;
    transcript_lines(&t)
}

/// Checks a restarted broker against every log. `fresh` is the round whose
/// cases are seen for the first time since their kill: each must show its
/// answered steps, possibly with its unanswered last one (the verdict of
/// `casebroker_testkit::crash::judge`). Cases seen in an earlier check must
/// not have changed since; with `full`, transcripts of every case are
/// checked again.
async fn check(
    at: &Endpoint,
    logs: &[CaseLog],
    fresh: u32,
    full: bool,
    known: &mut HashMap<String, Value>,
) -> Tally {
    let cases = all_cases(at).await;
    let mut tally = Tally::default();
    let ours: HashSet<&str> = logs.iter().filter_map(|l| l.code.as_deref()).collect();
    for log in logs {
        let answered = matches!(log.steps.first(), Some(Step { acked: true, .. }));
        if log.round == fresh {
            if answered {
                tally.acked_creates += 1;
                tally.acked_changes += log.steps[1..]
                    .iter()
                    .filter(|s| s.acked && !matches!(s.op, Op::Chat { .. }))
                    .count();
                tally.acked_lines += log
                    .steps
                    .iter()
                    .filter(|s| s.acked && matches!(s.op, Op::Chat { .. }))
                    .count();
            } else {
                tally.unanswered_creates += 1;
            }
        }
        let Some(code) = &log.code else { continue };
        let case = cases.get(code).unwrap_or_else(|| {
            panic!(
                "round {}: the answered creation of {code} was lost; {log:?}",
                log.round
            )
        });
        if log.round != fresh && !full {
            continue;
        }
        let lines = lines(at, code).await;
        let verdict = judge(log, Some(&Seen::of(case, lines.clone())));
        let (acked, beyond) = log.states();
        assert!(
            verdict.lost == 0 && verdict.surprises.is_empty(),
            "round {}: {code} lost an answered change: {:?} {:?}\nanswered: {acked:?}\nwith the unanswered step: {beyond:?}\nrecovered: {case}\ntranscript: {lines:?}\nsteps: {log:?}",
            log.round,
            verdict.losses,
            verdict.surprises
        );
        assert_eq!(case["created_by"], log.agent.as_str(), "{case}");
        assert_eq!(
            case["customer_connected"], false,
            "nobody is connected: {case}"
        );
        assert_eq!(
            case["supporter_connected"], false,
            "nobody is connected: {case}"
        );
        match case["assignee"].as_str() {
            Some(_) => assert_eq!(case["assigned_by"], log.agent.as_str(), "{case}"),
            None => assert_eq!(case["assigned_by"], Value::Null, "{case}"),
        }
        if case["status"] == "closed" {
            assert_eq!(case["closed_by"], log.agent.as_str(), "{case}");
        }
        if log.round == fresh {
            tally.found_creates += 1;
            tally.found_lines += lines.len();
            tally.beyond += usize::from(verdict.beyond);
        }
    }
    for (code, case) in &cases {
        match known.get(code) {
            Some(before) => assert_eq!(case, before, "{code} changed after it was checked"),
            None => {
                if !ours.contains(code.as_str()) {
                    // A creation whose answer was lost in the kill: nothing
                    // else was asked of it.
                    assert_eq!(case["status"], "new", "{case}");
                    assert_eq!(lines(at, code).await, [], "{code}");
                    tally.unanswered_found += 1;
                }
                known.insert(code.clone(), case.clone());
            }
        }
    }
    assert!(
        tally.unanswered_found <= tally.unanswered_creates,
        "round {fresh}: {} unknown cases, {} unanswered creations: {tally:?}",
        tally.unanswered_found,
        tally.unanswered_creates
    );
    assert_eq!(known.len(), cases.len(), "a case vanished");
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_change() {
    let scratch = Scratch::new("sigkill");
    let data = scratch.data();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ];
    // The kill moments come from a seed: a failure says it, and
    // `SIGKILL_SEED=<seed>` runs the same moments again.
    let seed: u64 = match std::env::var("SIGKILL_SEED") {
        Ok(s) => s.parse().expect("SIGKILL_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("sigkill_loses_no_acknowledged_change: seed {seed} (SIGKILL_SEED={seed} repeats it)");
    let mut acked = 0usize;
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut logs: Vec<CaseLog> = Vec::new();
    let mut known: HashMap<String, Value> = HashMap::new();
    // The dashboard's position: the epoch of round 0 and the last seq seen.
    let mut position: Option<(String, u64)> = None;

    for round in 0..=ROUNDS {
        let broker = Process::start(BROKER, Some(&binary_config(round)), &args, &[]);
        let at = Endpoint::new(broker.listening().await);
        let mut dash = at.agent(ALICE).await;
        let (epoch, mut seq) = match position.take() {
            None => {
                let snap = dash.request(json!({"type": "subscribe"})).await;
                assert_eq!(snap["type"], "snapshot", "{snap}");
                (snap["epoch"].as_str().unwrap().to_string(), seq_of(&snap))
            }
            Some((epoch, seq)) => {
                let tally = check(&at, &logs, round - 1, round == ROUNDS, &mut known).await;
                assert_eq!(tally.found_creates, tally.acked_creates);
                acked += tally.acked_creates + tally.acked_changes + tally.acked_lines;
                // The dashboard resumes from the last event it saw.
                let r = dash
                    .request(json!({"type": "subscribe", "resume": {"epoch": epoch, "seq": seq}}))
                    .await;
                assert_eq!(
                    r["type"], "resumed",
                    "round {round}: resuming from seq {seq}, the last seen before the kill: {r}"
                );
                assert_eq!(r["epoch"], epoch.as_str(), "the epoch changed: {r}");
                let head = seq_of(&r);
                assert!(head >= seq, "{r}");
                let mut at = seq;
                while at < head {
                    let m = dash.next().await;
                    if is_unsequenced_push(&m) {
                        continue;
                    }
                    assert_eq!(m["type"], "event", "{m}");
                    assert_eq!(m["epoch"], epoch.as_str(), "{m}");
                    assert_eq!(seq_of(&m), at + 1, "{m}");
                    at += 1;
                }
                eprintln!(
                    "round {}: acknowledged {} creates, {} other changes, {} chat lines; recovered {} creates, {} chat lines and every acknowledged change, plus {} of {} unanswered creates and {} unanswered steps; resumed from seq {seq} with {} events replayed",
                    round - 1,
                    tally.acked_creates,
                    tally.acked_changes,
                    tally.acked_lines,
                    tally.found_creates,
                    tally.found_lines,
                    tally.unanswered_found,
                    tally.unanswered_creates,
                    tally.beyond,
                    head - seq,
                );
                (epoch, head)
            }
        };
        if round == ROUNDS {
            break;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(seq));
        let reader = {
            let (epoch, last) = (epoch.clone(), last.clone());
            tokio::spawn(async move {
                while let Some(m) = dash.try_next().await {
                    if m["type"] != "event" {
                        continue;
                    }
                    assert_eq!(m["epoch"], epoch.as_str(), "{m}");
                    let prev = last.load(Ordering::SeqCst);
                    assert_eq!(seq_of(&m), prev + 1, "events in order: {m}");
                    last.store(prev + 1, Ordering::SeqCst);
                }
            })
        };
        let workers: Vec<_> = AGENTS
            .iter()
            .enumerate()
            .map(|(k, &(me, token, admin))| {
                let worker = Worker {
                    me,
                    token,
                    admin,
                    round,
                    client: k,
                    at: at.clone(),
                    rng: StdRng::seed_from_u64(rng.random()),
                    killed: killed.clone(),
                    logs: Vec::new(),
                    customers: Vec::new(),
                    lines: u64::from(round) * 1000 + k as u64 * 100_000,
                };
                tokio::spawn(worker.run())
            })
            .collect();
        let delay = Duration::from_millis(rng.random_range(50..=300));
        tokio::time::sleep(delay).await;
        killed.store(true, Ordering::SeqCst);
        broker.kill9().await;
        for w in workers {
            let round_logs = tokio::time::timeout(WAIT * 2, w)
                .await
                .expect("workers end after the kill")
                .expect("worker");
            logs.extend(round_logs);
        }
        tokio::time::timeout(WAIT * 2, reader)
            .await
            .expect("the dashboard ends after the kill")
            .expect("dashboard");
        seq = last.load(Ordering::SeqCst);
        position = Some((epoch, seq));
    }
    eprintln!(
        "sigkill_loses_no_acknowledged_change: {ROUNDS} rounds, {} cases, {acked} acknowledged changes checked, in {:?} (seed {seed})",
        known.len(),
        started.elapsed()
    );
    // The kills landed while work was under way: a run that acknowledged
    // next to nothing checked next to nothing.
    assert!(
        known.len() >= ROUNDS as usize && acked >= ROUNDS as usize,
        "only {} cases and {acked} acknowledged changes over {ROUNDS} rounds (seed {seed})",
        known.len()
    );
}
