//! The journal writer: one thread that takes each shard unlock's changes
//! and effects in the order they were made, commits them to redb in groups
//! (what queued up while the previous group was being stored, up to
//! `journal_group_changes` changes, `journal_group_bytes` bytes or
//! `journal_group_wait` of gathering), and only then hands the group's
//! effects to delivery and acknowledges its commands. No push, reply or 2xx leaves
//! before its changes are on disk, and a crash can take back nothing that
//! anyone saw.
//!
//! When a commit fails (a full disk, say) the journal stops taking new
//! changes (`available` is false: commands answer `unavailable`), retries
//! the same group until it succeeds, and takes changes again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use serde::Serialize;

use crate::core::restore::Capture;
use crate::core::sink::{Ack, Batch, Sink, leave_ack};
use crate::core::{Broker, Deliver, Effect};
use crate::directory::Directory;
use crate::metrics::JournalMetrics;

use super::Store;
use super::format::{
    CASES, CompanyMeta, HeldEvent, JOURNAL, META, api_agents_key, api_company_key, api_groups_key,
    api_hooks_key, api_modules_key, meta_key,
};

/// Commits queued for the writer before a shard waits for room.
const QUEUE: usize = 4096;
/// Stored groups waiting for delivery before the writer waits.
const RELEASE_QUEUE: usize = 64;

/// How groups are cut.
#[derive(Clone, Copy, Debug)]
pub struct Grouping {
    pub changes: usize,
    pub bytes: usize,
    pub wait: Duration,
}

enum Msg {
    Commit {
        /// The journal position, when there are changes to store.
        id: Option<u64>,
        shard: usize,
        batches: Vec<Batch>,
        effects: Vec<Effect>,
        ack: Arc<Ack>,
    },
    Image(Box<Capture>),
    /// A company added at run time, before its first commit.
    Company {
        shard: usize,
        id: String,
    },
    Stop,
}

/// The journal as the core's sink.
pub struct Journal {
    tx: SyncSender<Msg>,
    next: AtomicU64,
    available: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The writer thread's state.
struct Writer {
    /// `None` after a failed write, until it is opened again: a database
    /// that saw an I/O error refuses everything until reopened.
    db: Option<Arc<Database>>,
    /// The database file, to reopen it.
    file: PathBuf,
    rx: Receiver<Msg>,
    /// Stored groups, in order, to the releasing thread.
    released: SyncSender<Released>,
    available: Arc<AtomicBool>,
    grouping: Grouping,
    /// Per shard: company id.
    companies: Vec<String>,
    /// Per shard: the position of its last stored image (journal entries
    /// before the smallest of them are no longer needed).
    positions: Vec<Option<u64>>,
    /// Where one entry is encoded before it joins its group's row.
    scratch: Vec<u8>,
    metrics: Option<JournalMetrics>,
}

impl Journal {
    /// Starts the writer on an opened store; effects go to `deliver`.
    pub fn start(
        store: &Store,
        dir: &Directory,
        deliver: Arc<dyn Deliver>,
        grouping: Grouping,
        metrics: Option<JournalMetrics>,
    ) -> Arc<Journal> {
        let positions = dir
            .companies()
            .iter()
            .map(|c| {
                store
                    .companies
                    .get(&c.id)
                    .and_then(|s| s.meta.as_ref())
                    .map(|m| m.position)
            })
            .collect();
        let (db, next) = (Some(store.db.clone()), store.next);
        let file = store.path().join(super::FILE);
        let (tx, rx) = sync_channel(QUEUE);
        let (released, to_release) = sync_channel::<Released>(RELEASE_QUEUE);
        let available = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            db,
            file,
            rx,
            released,
            available: available.clone(),
            grouping,
            companies: dir.companies().iter().map(|c| c.id.clone()).collect(),
            positions,
            scratch: Vec::new(),
            metrics,
        };
        let releaser = std::thread::Builder::new()
            .name("casebroker-release".into())
            .spawn(move || release(to_release, deliver))
            .expect("the release thread starts");
        let thread = std::thread::Builder::new()
            .name("casebroker-journal".into())
            .spawn(move || {
                writer.run();
                let _ = releaser.join();
            })
            .expect("the journal thread starts");
        Arc::new(Journal {
            tx,
            next: AtomicU64::new(next),
            available,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Takes an image of every company (what changed since the last one)
    /// and has it stored after everything committed before it.
    pub fn image(&self, broker: &Broker) {
        for shard in 0..broker.shards() {
            let capture = broker.capture(shard, || self.next.load(Ordering::Acquire));
            let _ = self.tx.send(Msg::Image(Box::new(capture)));
        }
    }

    /// Stores what is queued, then stops the writer.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Sink for Journal {
    fn journaled(&self) -> bool {
        true
    }

    fn available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    fn company_added(&self, shard: usize, id: &str) {
        let _ = self.tx.send(Msg::Company {
            shard,
            id: id.to_string(),
        });
    }

    fn commit(&self, shard: usize, batches: Vec<Batch>, effects: Vec<Effect>) {
        // Taken under the shard's lock: a shard's positions increase with
        // its commits, and an image read under the lock stands between them.
        let id = (!batches.is_empty()).then(|| self.next.fetch_add(1, Ordering::AcqRel));
        let ack = Ack::new();
        leave_ack(ack.clone());
        let msg = Msg::Commit {
            id,
            shard,
            batches,
            effects,
            ack: ack.clone(),
        };
        if self.tx.send(msg).is_err() {
            ack.finish(false);
        }
    }
}

/// A journal entry, encoded without copying the batches.
#[derive(Serialize)]
struct EntryRef<'a> {
    company: &'a str,
    batches: &'a [Batch],
}

/// A stored group's commits: their effects and acknowledgements, and the
/// stored changes themselves, freed off the writer's path.
type Released = Vec<(usize, Vec<Effect>, Arc<Ack>, Vec<Batch>)>;

/// Hands each stored group's effects to delivery and acknowledges its
/// commands, in the order the groups were stored.
fn release(groups: Receiver<Released>, deliver: Arc<dyn Deliver>) {
    for group in groups {
        for (shard, mut effects, ack, batches) in group {
            // The command's reply is queued before its pushes (and before
            // a close they carry).
            ack.finish_then_deliver(true, || {
                if !effects.is_empty() {
                    deliver.deliver(shard, &mut effects);
                }
            });
            drop(batches);
        }
    }
}

/// A group's journal row, built as entries come: the bytes postcard
/// gives for `Vec<(u64, &[u8])>` (each entry's position and encoding),
/// without copying an entry twice.
#[derive(Default)]
struct Row {
    /// The entries, without the leading count.
    body: Vec<u8>,
    entries: usize,
    /// The largest position in the row: its key.
    last: Option<u64>,
}

impl Row {
    /// Appends one entry; returns the bytes it added.
    fn push(&mut self, id: u64, entry: &[u8]) -> usize {
        let before = self.body.len();
        self.body = postcard::to_extend(&(id, entry), std::mem::take(&mut self.body))
            .expect("entries encode");
        self.entries += 1;
        self.last = self.last.max(Some(id));
        self.body.len() - before
    }

    /// The whole row: the count, then the entries.
    fn bytes(&self) -> Vec<u8> {
        let mut count = [0u8; 10];
        let count = postcard::to_slice(&self.entries, &mut count).expect("a count fits 10 bytes");
        let mut out = Vec::with_capacity(count.len() + self.body.len());
        out.extend_from_slice(count);
        out.extend_from_slice(&self.body);
        out
    }
}

/// One group, encoded and ready to write.
#[derive(Default)]
struct Group {
    row: Row,
    images: Vec<Capture>,
    /// The commits to release once stored, in order.
    released: Released,
    changes: usize,
    bytes: usize,
    stop: bool,
}

impl Writer {
    fn run(mut self) {
        loop {
            let Ok(first) = self.rx.recv() else {
                return;
            };
            let mut group = Group::default();
            self.take(&mut group, first);
            let deadline = Instant::now() + self.grouping.wait;
            while !group.stop
                && group.changes < self.grouping.changes
                && group.bytes < self.grouping.bytes
            {
                // What arrived while the last group was stored joins this
                // one; a quiet queue is committed at once rather than
                // waited on, so a lone change pays no grouping delay.
                if Instant::now() >= deadline {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(msg) => self.take(&mut group, msg),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.store(&group);
            // Delivery of this group overlaps the next group's commit.
            let stop = group.stop;
            if self.released.send(group.released).is_err() || stop {
                return;
            }
        }
    }

    fn take(&mut self, group: &mut Group, msg: Msg) {
        match msg {
            Msg::Commit {
                id,
                shard,
                batches,
                effects,
                ack,
            } => {
                if let Some(id) = id {
                    let entry = EntryRef {
                        company: &self.companies[shard],
                        batches: &batches,
                    };
                    // Encoded once into a reused buffer, then appended to
                    // the row behind its position and length.
                    self.scratch.clear();
                    let scratch = std::mem::take(&mut self.scratch);
                    let scratch = postcard::to_extend(&entry, scratch).expect("changes encode");
                    group.bytes += group.row.push(id, &scratch);
                    self.scratch = scratch;
                    group.changes += batches.iter().map(Vec::len).sum::<usize>();
                }
                group.released.push((shard, effects, ack, batches));
            }
            Msg::Image(capture) => {
                group.bytes += capture.upserts.len() * 512;
                group.images.push(*capture);
            }
            Msg::Company { shard, id } => {
                if self.companies.len() <= shard {
                    self.companies.resize(shard + 1, String::new());
                    self.positions.resize(shard + 1, None);
                }
                self.companies[shard] = id;
            }
            Msg::Stop => group.stop = true,
        }
    }

    /// Writes a group in one durable transaction, retrying until it is
    /// stored; changes are refused meanwhile.
    fn store(&mut self, group: &Group) {
        if group.row.entries == 0 && group.images.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.write(group) {
                Ok(()) => {
                    if let Some(m) = &self.metrics {
                        m.stored(group.changes, group.row.body.len(), started.elapsed());
                    }
                    if !self.available.swap(true, Ordering::AcqRel) {
                        tracing::warn!("the journal is writing again; changes are taken again");
                    }
                    for image in &group.images {
                        self.positions[image.shard] = Some(image.position);
                    }
                    return;
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.failed();
                    }
                    if self.available.swap(false, Ordering::AcqRel) {
                        tracing::error!(error = %e, "the journal cannot write; changes are refused with `unavailable` until it can");
                    }
                    // Writing again needs the database opened again.
                    self.db = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                    match super::backend::create(&self.file) {
                        Ok(db) => self.db = Some(Arc::new(db)),
                        Err(e) => {
                            tracing::debug!(error = %e, "the journal's database does not open yet")
                        }
                    }
                }
            }
        }
    }

    fn write(&self, group: &Group) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let db = self.db.as_ref().ok_or("the database is not open")?;
        let mut txn = db.begin_write().map_err(|x| e(&x))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|x| e(&x))?;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(|x| e(&x))?;
            // One row per group, keyed by its largest position: a row
            // below a position holds only entries below it.
            if let Some(last) = group.row.last {
                journal
                    .insert(last, group.row.bytes().as_slice())
                    .map_err(|x| e(&x))?;
            }
            if !group.images.is_empty() {
                self.write_images(&txn, group)?;
            }
            // Entries every company's image already holds are dropped.
            let mut positions = self.positions.clone();
            for image in &group.images {
                positions[image.shard] = Some(image.position);
            }
            if !group.images.is_empty()
                && let Some(min) = positions.iter().copied().collect::<Option<Vec<u64>>>()
                && let Some(&min) = min.iter().min()
            {
                journal.retain_in(..min, |_, _| false).map_err(|x| e(&x))?;
            }
        }
        txn.commit().map_err(|x| e(&x))
    }

    /// Writes the images of a group: changed records, removed codes and
    /// each company's meta.
    fn write_images(&self, txn: &redb::WriteTransaction, group: &Group) -> Result<(), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut cases = txn.open_table(CASES).map_err(|x| e(&x))?;
        let mut meta = txn.open_table(META).map_err(|x| e(&x))?;
        for image in &group.images {
            let company = &self.companies[image.shard];
            let (agents, groups) = (&image.agents, &image.groups);
            for rec in &image.upserts {
                let bytes = postcard::to_allocvec(rec).map_err(|x| e(&x))?;
                cases
                    .insert((company.as_str(), rec.code.key()), bytes.as_slice())
                    .map_err(|x| e(&x))?;
            }
            for code in &image.removed {
                cases
                    .remove((company.as_str(), code.key()))
                    .map_err(|x| e(&x))?;
            }
            let history = image.history.iter().map(|ev| HeldEvent::of(ev)).collect();
            let m = CompanyMeta {
                epoch: image.epoch.clone(),
                seq: image.seq,
                next_line_seq: image.next_line_seq,
                position: image.position,
                agents: agents.clone(),
                groups: groups.clone(),
                history,
            };
            let bytes = postcard::to_allocvec(&m).map_err(|x| e(&x))?;
            meta.insert(meta_key(company).as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
            let bytes = postcard::to_allocvec(&image.api_agents).map_err(|x| e(&x))?;
            meta.insert(api_agents_key(company).as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
            let bytes = postcard::to_allocvec(&image.hooks).map_err(|x| e(&x))?;
            meta.insert(api_hooks_key(company).as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
            let bytes = postcard::to_allocvec(&image.ext).map_err(|x| e(&x))?;
            meta.insert(
                crate::store::format::case_ext_key(company).as_str(),
                bytes.as_slice(),
            )
            .map_err(|x| e(&x))?;
            if let Some(rec) = &image.company {
                let bytes = postcard::to_allocvec(rec).map_err(|x| e(&x))?;
                meta.insert(api_company_key(company).as_str(), bytes.as_slice())
                    .map_err(|x| e(&x))?;
            }
            let bytes = postcard::to_allocvec(&image.api_groups).map_err(|x| e(&x))?;
            meta.insert(api_groups_key(company).as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
            let bytes = postcard::to_allocvec(&image.api_modules).map_err(|x| e(&x))?;
            meta.insert(api_modules_key(company).as_str(), bytes.as_slice())
                .map_err(|x| e(&x))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Row;

    #[test]
    fn a_row_is_what_postcard_gives_for_its_entries() {
        let big = vec![7u8; 300];
        let entries: Vec<(u64, &[u8])> = vec![(5, b"ab"), (300, &big), (1 << 40, b"")];
        let mut row = Row::default();
        for (id, bytes) in &entries {
            row.push(*id, bytes);
        }
        assert_eq!(row.bytes(), postcard::to_allocvec(&entries).unwrap());
        assert_eq!(row.last, Some(1 << 40));
        let many: Vec<(u64, &[u8])> = (0..200).map(|i| (i, b"x".as_slice())).collect();
        let mut row = Row::default();
        for (id, bytes) in &many {
            row.push(*id, bytes);
        }
        assert_eq!(row.bytes(), postcard::to_allocvec(&many).unwrap());
    }
}
