//! The core without sockets: commands in, effects out, read from a sink
//! that records what delivery would have been handed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::case::Status;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{Action, CreateCase, EndReason, RequestHelp, Role};

use super::effect::Effect;
use super::{Broker, Deliver};

/// Records every batch of effects, with the shard it came from.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<(usize, Vec<Effect>)>>,
}

impl Deliver for Recorder {
    fn deliver(&self, shard: usize, effects: &mut Vec<Effect>) {
        let batch = std::mem::take(effects);
        self.batches.lock().unwrap().push((shard, batch));
    }
}

impl Recorder {
    fn take(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.batches.lock().unwrap())
            .into_iter()
            .flat_map(|(_, b)| b)
            .collect()
    }
}

fn config() -> Config {
    Config::from_toml(
        r#"
[[companies]]
id = "acme"
groups = [{ id = "support" }, { id = "sales" }]
[[companies.agents]]
id = "alice"
token = "alice-token-0001"
groups = ["support", "sales"]
admin = true
[[companies.agents]]
id = "bob"
token = "bob-token-00002"
groups = ["support"]
[[companies.modules]]
key = "acme-qs"
group = "support"

[[companies]]
id = "globex"
groups = [{ id = "support" }]
[[companies.agents]]
id = "gina"
token = "gina-token-00005"
groups = ["support"]
admin = true
"#,
    )
    .expect("valid")
}

fn broker() -> (Broker, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let sink = Arc::new(super::Direct(rec.clone()));
    (Broker::new(config(), Metrics::new(), sink), rec)
}

fn events(effects: &[Effect]) -> Vec<(u64, Action, Status)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(ev) => Some((ev.seq, ev.action, ev.case.status)),
            _ => None,
        })
        .collect()
}

fn create(b: &Broker, agent: &str) -> String {
    let alice = b.authenticate(agent).unwrap();
    b.create_case(
        &alice,
        CreateCase {
            group: "support".into(),
            ..CreateCase::default()
        },
    )
    .unwrap()
    .code
    .to_string()
}

#[test]
fn a_help_request_is_one_created_event_already_pending() {
    let (b, rec) = broker();
    let customer = b.connect_with(Role::Customer, None, |_| {});
    let (view, token) = b
        .request_help(
            Some(&customer),
            RequestHelp {
                module: "acme-qs".into(),
                ..RequestHelp::default()
            },
        )
        .unwrap();
    assert_eq!(view.status, Status::Pending);
    assert!(token.is_some());
    let effects = rec.take();
    assert_eq!(
        events(&effects),
        vec![(1, Action::Created, Status::Pending)]
    );
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Status { to, .. } if to == &vec![customer.id])),
        "the customer is told its status"
    );
}

#[test]
fn a_join_that_claims_the_case_is_one_event() {
    let (b, rec) = broker();
    let code = create(&b, "bob-token-00002");
    let bob = b.authenticate("bob-token-00002").unwrap();
    let conn = b.connect_with(Role::Agent, Some(bob.clone()), |_| {});
    rec.take();
    let view = b.agent_join(&conn, &bob, &code, false).unwrap();
    assert_eq!(view.assignee.as_deref(), Some("bob"));
    assert_eq!(
        events(&rec.take()),
        vec![(2, Action::Updated, Status::Pending)]
    );
}

#[test]
fn a_refused_join_changes_nothing() {
    let (b, rec) = broker();
    let code = create(&b, "alice-token-0001");
    let alice = b.authenticate("alice-token-0001").unwrap();
    let bob = b.authenticate("bob-token-00002").unwrap();
    let a = b.connect_with(Role::Agent, Some(alice.clone()), |_| {});
    let c = b.connect_with(Role::Agent, Some(bob.clone()), |_| {});
    b.assign(&alice, &code, Some("alice".into())).unwrap();
    b.agent_join(&a, &alice, &code, false).unwrap();
    rec.take();
    let err = b.agent_join(&c, &bob, &code, false).unwrap_err();
    assert_eq!(err.code, crate::protocol::ErrorCode::Conflict);
    let err = b.agent_join(&c, &bob, &code, true).unwrap_err();
    assert_eq!(err.code, crate::protocol::ErrorCode::Forbidden);
    assert!(rec.take().is_empty(), "no effect from a refusal");
    assert_eq!(
        b.get_case(&alice, &code).unwrap().assignee.as_deref(),
        Some("alice")
    );
}

#[test]
fn closing_ends_both_seats_and_closes_the_customer() {
    let (b, rec) = broker();
    let customer = b.connect_with(Role::Customer, None, |_| {});
    let (view, _) = b
        .request_help(
            Some(&customer),
            RequestHelp {
                module: "acme-qs".into(),
                ..RequestHelp::default()
            },
        )
        .unwrap();
    let code = view.code.to_string();
    let bob = b.authenticate("bob-token-00002").unwrap();
    let conn = b.connect_with(Role::Agent, Some(bob.clone()), |_| {});
    b.agent_join(&conn, &bob, &code, false).unwrap();
    rec.take();
    b.close(super::Who::Agent(&bob), Some(&code)).unwrap();
    let effects = rec.take();
    let ended: Vec<(bool, EndReason)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Ended { close, reason, .. } => Some((*close, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![(false, EndReason::Closed), (true, EndReason::Closed)]
    );
    assert_eq!(events(&effects), vec![(3, Action::Updated, Status::Closed)]);
}

#[test]
fn each_company_has_its_own_stream_and_lock() {
    let (b, rec) = broker();
    create(&b, "alice-token-0001");
    create(&b, "gina-token-00005");
    let batches = std::mem::take(&mut *rec.batches.lock().unwrap());
    let seqs: Vec<(usize, Vec<u64>)> = batches
        .iter()
        .map(|(s, e)| (*s, events(e).iter().map(|x| x.0).collect()))
        .collect();
    assert_eq!(seqs, vec![(0, vec![1]), (1, vec![1])]);

    // While acme's lock is held, globex still serves.
    let held = b.lock(0);
    let other = b.clone();
    let (tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        create(&other, "gina-token-00005");
        tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(5))
        .expect("a command of another company does not wait on this lock");
    drop(held);
}

#[test]
fn the_durable_record_holds_what_rebuilds_a_case() {
    let (b, _rec) = broker();
    let customer = b.connect_with(Role::Customer, None, |_| {});
    let (view, token) = b
        .request_help(
            Some(&customer),
            RequestHelp {
                module: "acme-qs".into(),
                ..RequestHelp::default()
            },
        )
        .unwrap();
    let alice = b.authenticate("alice-token-0001").unwrap();
    let code = view.code.to_string();
    b.assign(&alice, &code, Some("bob".into())).unwrap();
    b.assign(&alice, &code, None).unwrap();
    b.chat(&customer, None, "hello".into()).unwrap();
    let cx = b.lock(0);
    let rec = &cx.case(&view.code).unwrap().rec;
    assert_eq!(
        rec.resume_token_hash,
        Some(crate::config::hash_token(&token.unwrap()))
    );
    assert_eq!(rec.returned_by, Some(1), "bob gave it back");
    assert_eq!(rec.transcript.len(), 1);
    assert!(rec.expires_at > rec.created_at);
}
