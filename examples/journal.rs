//! Measures the journal alone, on a fresh data directory: how many changes
//! per second it stores with group commits, against bare redb storing the
//! same bytes on the same disk in the same run; how long a restart takes to
//! rebuild every case; and the bytes on disk per case.
//!
//! ```sh
//! cargo run --release --example journal -- --cases 1000000 --dir /tmp/casebroker-journal
//! ```
//!
//! Each case is one `Created` change handed to the journal as its own
//! commit, as a command would; the writer groups them. The baseline
//! encodes the same entry for each case and inserts it into a plain redb
//! table, `--group` inserts per durable transaction, on one thread. The
//! two alternate `--runs` times; medians and their ratio are printed. The
//! directory is removed first and the last journal is left behind for
//! inspection.

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
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    group: u64,
    /// Alternated runs of the baseline and the journal (medians are printed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=15))]
    runs: u64,
}

/// The table the baseline writes.
const BARE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bare");

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

/// Bare redb: each case's journal entry encoded and inserted, `group` per
/// durable transaction. Changes per second.
fn bare(args: &Args, company: &str) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let db = redb::Database::create(args.dir.join("bare.redb"))?;
    let started = Instant::now();
    let mut n = 0;
    let mut bytes = Vec::new();
    while n < args.cases {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut table = txn.open_table(BARE)?;
            for _ in 0..args.group.min(args.cases - n) {
                // The fields of a journal entry, borrowed as the journal's
                // writer does: the same bytes as `store::format::Entry`.
                let batches = vec![vec![Change::Created(Box::new(record(n)))]];
                bytes.clear();
                bytes = postcard::to_extend(&(company, &batches), bytes)?;
                table.insert(n, bytes.as_slice())?;
                n += 1;
            }
        }
        txn.commit()?;
    }
    Ok(args.cases as f64 / started.elapsed().as_secs_f64())
}

/// The journal: each case committed as a command would, the writer
/// grouping. Changes per second.
fn journal(args: &Args, dir: &Directory) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let store = Store::open(&args.dir)?;
    let journal = Journal::start(&store, dir, Arc::new(Nowhere), grouping(args), None);
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
    Ok(args.cases as f64 / took.as_secs_f64())
}

fn grouping(args: &Args) -> Grouping {
    Grouping {
        changes: args.group as usize,
        bytes: 256 * 1024,
        wait: Duration::from_millis(2),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::demo();
    config.code_digits = 11;
    config.data_dir = args.dir.clone();
    let dir = Directory::new(&config);

    let (mut bares, mut journals, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let b = bare(&args, &dir.companies()[0].id)?;
        let j = journal(&args, &dir)?;
        println!(
            "run {run}: bare redb {b:.0} changes/s, journal {j:.0} changes/s, ratio {:.3}",
            j / b
        );
        bares.push(b);
        journals.push(j);
        ratios.push(j / b);
    }
    println!(
        "journal: {} changes, groups of up to {}: median {:.0} changes/s; bare redb median {:.0} changes/s; ratio median {:.3}",
        args.cases,
        args.group,
        median(journals),
        median(bares),
        median(ratios)
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
    let imager = Journal::start(&store, &dir, Arc::new(Nowhere), grouping(&args), None);
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
