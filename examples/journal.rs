//! Measures the journal alone, on a fresh data directory: how many changes
//! per second it stores with group commits, how long a restart takes to
//! rebuild every case, and the bytes on disk per case.
//!
//! ```sh
//! cargo run --release --example journal -- --cases 1000000 --dir /tmp/casebroker-journal
//! ```
//!
//! Each case is one `Created` change handed to the journal as its own
//! commit, as a command would; the writer groups them. The directory is
//! removed first and left behind for inspection.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casebroker::Config;
use casebroker::case::{Customer, SessionCode, Source};
use casebroker::core::change::Change;
use casebroker::core::record::{Actor, CaseRecord};
use casebroker::core::{Broker, Deliver, Direct, Effect, Sink};
use casebroker::directory::Directory;
use casebroker::metrics::Metrics;
use casebroker::store::Store;
use casebroker::store::journal::{Grouping, Journal};
use chrono::Utc;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Cases to store (1 to 5,000,000).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    cases: u64,
    /// The data directory to create (removed first).
    #[arg(long, default_value = "/tmp/casebroker-journal-bench")]
    dir: PathBuf,
    /// Changes per commit group.
    #[arg(long, default_value_t = 64)]
    group: usize,
}

/// Delivery that drops everything: only the journal is measured.
struct Nowhere;

impl Deliver for Nowhere {
    fn deliver(&self, _shard: usize, effects: &mut Vec<Effect>) {
        effects.clear();
    }
}

fn record(n: u64) -> CaseRecord {
    let now = Utc::now();
    CaseRecord {
        code: SessionCode::parse(&format!("{:011}", n)).expect("11 digits"),
        group: 0,
        name: format!("Printer down {n}"),
        description: "The office printer shows error 42 since this morning.".into(),
        customer: Customer {
            name: Some("Ana".into()),
            email: Some("ana@example.com".into()),
        },
        source: Source::Manual,
        created_by: Actor::Agent(0),
        assignee: None,
        assigned_at: None,
        assigned_by: None,
        returned_by: None,
        assignee_joined: false,
        line_seq: n,
        created_at: now,
        updated_at: now,
        expires_at: now + chrono::Duration::hours(24),
        closed_at: None,
        closed_by: None,
        terminal: None,
        purge_at: None,
        ever_occupied: false,
        resume_token_hash: None,
        customer_left_at: None,
        transcript: VecDeque::new(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    let mut config = Config::demo();
    config.code_digits = 11;
    config.data_dir = args.dir.clone();
    let dir = Directory::new(&config);

    let store = Store::open(&args.dir)?;
    let grouping = Grouping {
        changes: args.group,
        bytes: 256 * 1024,
        wait: Duration::from_millis(2),
    };
    let journal = Journal::start(&store, &dir, Arc::new(Nowhere), grouping);
    drop(store);
    let started = Instant::now();
    for n in 0..args.cases {
        journal.commit(
            0,
            vec![vec![Change::Created(Box::new(record(n)))]],
            Vec::new(),
        );
    }
    let last = casebroker::core::take_ack().expect("a commit leaves an acknowledgement");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let stored = rt.block_on(last.wait(Duration::from_secs(600)));
    let took = started.elapsed();
    journal.stop();
    anyhow::ensure!(stored, "the last commit was not stored");
    println!(
        "journal: {} changes in {:.2} s = {:.0} changes/s (groups of up to {})",
        args.cases,
        took.as_secs_f64(),
        args.cases as f64 / took.as_secs_f64(),
        args.group
    );

    let started = Instant::now();
    let mut store = Store::open(&args.dir)?;
    let opened = started.elapsed();
    let broker = Broker::new(
        config.clone(),
        Metrics::new(),
        Arc::new(Direct(Arc::new(Nowhere))),
    );
    store.restore(&broker)?;
    let took = started.elapsed();
    let counted: usize = broker.count_by_status().iter().map(|(_, n)| n).sum();
    anyhow::ensure!(
        counted as u64 == args.cases,
        "recovered {counted} of {} cases",
        args.cases
    );
    println!(
        "recovery from the journal: {} cases in {:.2} s (reading {:.2} s)",
        counted,
        took.as_secs_f64(),
        opened.as_secs_f64()
    );

    // An image of everything, then recovery from the image alone.
    let imager = Journal::start(&store, &dir, Arc::new(Nowhere), grouping);
    drop(store);
    broker.mark_all_dirty(0);
    imager.image(&broker);
    imager.stop();
    drop(broker);
    let started = Instant::now();
    let mut store = Store::open(&args.dir)?;
    let broker = Broker::new(config, Metrics::new(), Arc::new(Direct(Arc::new(Nowhere))));
    store.restore(&broker)?;
    let took = started.elapsed();
    let counted: usize = broker.count_by_status().iter().map(|(_, n)| n).sum();
    anyhow::ensure!(
        counted as u64 == args.cases,
        "recovered {counted} of {} cases from the image",
        args.cases
    );
    let bytes = std::fs::metadata(args.dir.join(casebroker::store::FILE))?.len();
    println!(
        "recovery from the image: {} cases in {:.2} s; {} bytes on disk = {:.0} bytes per case",
        counted,
        took.as_secs_f64(),
        bytes,
        bytes as f64 / counted as f64
    );
    Ok(())
}
