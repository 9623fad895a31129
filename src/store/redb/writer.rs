//! The writer: every change to the database goes through here.
//!
//! redb allows one write transaction at a time, and a commit that must
//! survive power loss costs an fsync plus the copy-on-write of every page it
//! touches. Two threads split that work:
//!
//! - the **log thread** takes queued ingests (their records already encoded
//!   by the callers), appends them to the write-ahead log ([`super::wal`]),
//!   hands the group to the apply thread and syncs it — one fsync per group,
//!   the only one an ingest waits for;
//! - the **apply thread** owns redb: it folds whatever is queued (logged
//!   ingests handed over by the log thread, delivery outcomes, and the rare
//!   control-plane changes) into one transaction and commits it. Logged and
//!   outcome-only batches commit without an fsync (`Durability::None`); a
//!   batch with a control-plane change, or one that falls due (every
//!   [`CHECKPOINT_INTERVAL`] or [`CHECKPOINT_BYTES`] of log, and when idle),
//!   commits durably and records how far into the log the database is: a
//!   checkpoint, behind which the log is deleted.
//!
//! Callers are answered only after the commit that applied their write, so
//! an acknowledged event is readable at once. The apply thread applies a
//! logged group while its fsync is still running, but commits it only once
//! the group's own [`GroupSync`] says it is synced, so nothing is visible
//! (or checkpointed) that a crash could take back; a group whose sync fails
//! is thrown away with the transaction that held it, whose writes are all
//! refused. Delivery outcomes are not individually durable: a
//! crash loses at most the last [`CHECKPOINT_INTERVAL`] of them, and losing
//! one only means its delivery is attempted again (at least once).
//!
//! Work that arrives while a group is being synced or applied forms the
//! next group, so there is no artificial linger when idle and batches grow
//! with load; the two threads overlap, so the log's fsync and redb's CPU
//! work for the same group proceed at the same time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::hot::HotTables;
use super::tables::{APPLIED_LSN, WAL_STATE};
use super::wal::{self, Wal};
use super::{DbSlot, StoreError};
use crate::metrics::Metrics;

/// Longest time non-durable commits wait for a checkpoint: bounds the log
/// to replay after a crash and the outcomes a crash can forget. redb holds
/// a non-durable commit's pages in memory until the next durable commit
/// writes and syncs them all at once, a pause every ingest queued behind it
/// waits out (~80 ms at 17,000 events/s here). Measured: every 250 ms cut
/// that pause to ~35 ms but, paid four times as often, raised p99 from
/// ~7 ms to ~25 ms; once a second keeps p99 within the 10 ms goal.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// A checkpoint is also due once this much log has been applied since the
/// last one, so replay after a crash stays short under heavy ingest.
pub const CHECKPOINT_BYTES: usize = 32 * 1024 * 1024;

/// How often a failing write-ahead log is probed when no ingest arrives.
const LOG_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Log records applied per transaction while catching up after a crash.
const CATCH_UP_CHUNK: usize = 2048;

/// A batch made only of delivery outcomes that nobody waits on (see
/// [`Writer::write_volatile`]) waits up to this long for more writes before it
/// commits. A commit has a fixed cost (table roots, page checksums, the
/// copy-on-write of every page it touches), and outcomes arriving one by
/// one made commits of ~7 operations under fan-out.
const LINGER: Duration = Duration::from_millis(2);

/// Outcomes enough for a batch not to linger.
const LINGER_OPS: usize = 64;

/// The writes gathered for the next commit.
struct Gathered {
    batch: Vec<Box<dyn PendingWrite>>,
    bytes: usize,
    /// Some write must be durable when answered.
    durable: bool,
    /// The batch's logged groups: it commits once all are synced.
    groups: Vec<HandedGroup>,
    /// Every write may wait for company ([`Writer::write_volatile`]).
    may_linger: bool,
}

impl Default for Gathered {
    fn default() -> Self {
        Gathered {
            batch: Vec::new(),
            bytes: 0,
            durable: false,
            groups: Vec::new(),
            may_linger: true,
        }
    }
}

impl Gathered {
    fn has_room(&self, limits: &WriterLimits) -> bool {
        self.batch.len() < limits.max_batch_ops && self.bytes < limits.max_batch_bytes
    }
}

thread_local! {
    /// Set by writes to the sources or destinations tables
    /// ([`note_settings_written`]) on the apply thread, taken after the
    /// batch commits.
    static SETTINGS_WRITTEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the batch being applied as changing a source or a destination:
/// once it commits, [`Writer::settings_version`] moves on. Called by the
/// table-level functions that write those tables, so no operation composed
/// of them can forget it.
pub fn note_settings_written() {
    SETTINGS_WRITTEN.with(|written| written.set(true));
}

/// Applies one write-ahead log record (an encoded ingest) through the
/// hot tables of a transaction. Must be idempotent: a record may be
/// applied again after a crash.
pub type Replayer = Arc<dyn Fn(&mut HotTables<'_>, &[u8]) -> Result<(), StoreError> + Send + Sync>;

/// One operation in a batch. `apply` runs inside the shared transaction;
/// `finish` answers the caller once the batch's fate is known.
trait PendingWrite: Send {
    fn apply(&mut self, batch: &mut Batch<'_>) -> Applied;
    fn finish(self: Box<Self>, committed: bool);
}

/// The transaction a batch is applied in. Consecutive hot writes (ingests
/// and delivery outcomes) share one set of open tables ([`HotTables`]);
/// any other write closes them first, so it sees (and may change)
/// everything they wrote, and the next ingest reads destinations afresh.
struct Batch<'t> {
    txn: &'t WriteTransaction,
    hot: Option<HotTables<'t>>,
}

impl<'t> Batch<'t> {
    /// The bare transaction, for any write other than a hot one.
    fn txn(&mut self) -> &'t WriteTransaction {
        self.hot = None;
        self.txn
    }

    /// The hot tables, opened by the first hot write of a run.
    fn hot_tables(&mut self) -> Result<&mut HotTables<'t>, StoreError> {
        let tables = match self.hot.take() {
            Some(tables) => tables,
            None => HotTables::open(self.txn)?,
        };
        Ok(self.hot.insert(tables))
    }
}

/// What applying one operation did to the shared transaction.
enum Applied {
    /// Wrote (or decided not to write) cleanly; the batch can commit.
    Clean,
    /// redb itself failed mid-operation: the transaction can't be trusted.
    Broken,
}

/// Work for the apply thread.
enum Job {
    Write {
        op: Box<dyn PendingWrite>,
        size: usize,
        /// Must be durable when answered (commits with an fsync).
        durable: bool,
        /// May wait up to [`LINGER`] for company (see [`Writer::write_volatile`]).
        may_linger: bool,
    },
    /// A group of ingests written to the log (lsns from `first_lsn` on, in
    /// order), sent as one job before its sync: the log thread then never
    /// waits for room in the queue while the apply thread waits for that
    /// sync. Each write comes with its record's size.
    Logged {
        ops: Vec<(Box<dyn PendingWrite>, usize)>,
        first_lsn: u64,
        /// Settled by the log thread once the group's sync is done.
        sync: Arc<GroupSync>,
    },
    Stop,
}

/// Work for the log thread.
enum LogJob {
    Write {
        op: Box<dyn PendingWrite>,
        payload: Arc<[u8]>,
    },
    Stop,
}

/// A write waiting for its batch: `f` runs on the bare transaction
/// ([`Writer::write`]) or on the batch's hot tables
/// ([`Writer::write_logged`], [`Writer::write_volatile`]).
struct Op<F, T> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

/// Marks an [`Op`] whose function takes the hot tables.
struct Hot<F>(F);

impl<T, F> PendingWrite for Op<F, T>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(&mut self, batch: &mut Batch<'_>) -> Applied {
        let Some(f) = self.f.take() else {
            return Applied::Clean;
        };
        self.record(f(batch.txn()))
    }

    fn finish(self: Box<Self>, committed: bool) {
        (*self).answer(committed)
    }
}

impl<T, F> PendingWrite for Op<Hot<F>, T>
where
    T: Send + 'static,
    F: FnOnce(&mut HotTables<'_>) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(&mut self, batch: &mut Batch<'_>) -> Applied {
        let Some(Hot(f)) = self.f.take() else {
            return Applied::Clean;
        };
        let result = batch.hot_tables().and_then(f);
        self.record(result)
    }

    fn finish(self: Box<Self>, committed: bool) {
        (*self).answer(committed)
    }
}

impl<F, T> Op<F, T> {
    fn new(f: F) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            f: Some(f),
            result: None,
            reply,
        };
        (op, answer)
    }

    /// Keeps `f`'s result for the answer; a failure inside redb spoils the
    /// whole transaction.
    fn record(&mut self, result: Result<T, StoreError>) -> Applied {
        let applied = match &result {
            Err(StoreError::Backend(_)) | Err(StoreError::Io { .. }) => Applied::Broken,
            _ => Applied::Clean,
        };
        self.result = Some(result);
        applied
    }

    fn answer(self, committed: bool) {
        let answer = match (committed, self.result) {
            (true, Some(result)) => result,
            (true, None) => Err(StoreError::Unavailable("operation was not applied")),
            (false, Some(Err(e))) if !matches!(e, StoreError::Backend(_)) => Err(e),
            (false, _) => Err(StoreError::Unavailable("the write could not be committed")),
        };
        // The caller may have gone away (client disconnected); that is fine.
        let _ = self.reply.send(answer);
    }
}

/// Limits that shape batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    pub max_batch_ops: usize,
    pub max_batch_bytes: usize,
    pub queue_capacity: usize,
    pub quick_repair: bool,
    /// How long a caller waits for room in a full queue before `Unavailable`.
    pub enqueue_timeout: Duration,
}

/// What the writer needs to start: the database, the log opened at start-up
/// (after catching up, see [`catch_up`]) and how to replay it.
pub struct WriterSetup {
    pub db: Arc<DbSlot>,
    pub wal: Wal,
    pub wal_dir: PathBuf,
    /// The last log position the database holds durably.
    pub applied_lsn: u64,
    pub replayer: Replayer,
    pub limits: WriterLimits,
    /// Goes false when a commit fails (redb then refuses everything until
    /// the file is reopened) and true again once it has been reopened.
    pub healthy: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
}

/// The log thread's and the apply thread's handles (`None` once joined, or
/// if one could not be started).
type Threads = (Option<JoinHandle<()>>, Option<JoinHandle<()>>);

/// Handle to the writer threads; cheap to share behind the store.
pub struct Writer {
    log_tx: mpsc::Sender<LogJob>,
    apply_tx: mpsc::Sender<Job>,
    /// The log thread's and the apply thread's handles, joined on stop.
    threads: std::sync::Mutex<Threads>,
    enqueue_timeout: Duration,
    /// False while appending to the log fails (e.g. a full disk).
    log_healthy: Arc<AtomicBool>,
    /// See [`Writer::settings_version`].
    settings_version: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the log and apply threads.
    pub(crate) fn start(setup: WriterSetup) -> Writer {
        let WriterSetup {
            db,
            wal,
            wal_dir,
            applied_lsn,
            replayer,
            limits,
            healthy,
            metrics,
        } = setup;
        let (log_tx, log_rx) = mpsc::channel(limits.queue_capacity);
        let (apply_tx, apply_rx) = mpsc::channel(limits.queue_capacity);
        let checkpointed = Arc::new(AtomicU64::new(applied_lsn));
        let log_healthy = Arc::new(AtomicBool::new(true));
        let settings_version = Arc::new(AtomicU64::new(0));
        let logger = Logger {
            wal,
            rx: log_rx,
            apply_tx: apply_tx.clone(),
            checkpointed: checkpointed.clone(),
            limits,
            healthy: log_healthy.clone(),
            metrics: metrics.clone(),
        };
        let applier = Applier {
            db,
            rx: apply_rx,
            limits,
            healthy,
            metrics,
            checkpointed,
            wal_dir,
            replayer,
            applied_lsn,
            received_lsn: applied_lsn,
            logged_bytes: 0,
            unsynced_since: None,
            settings_version: settings_version.clone(),
        };
        let log_thread = std::thread::Builder::new()
            .name("krafter-wal".into())
            .spawn(move || logger.run())
            .map_err(|e| tracing::error!(error = %e, "cannot start the write-ahead log thread"))
            .ok();
        let apply_thread = std::thread::Builder::new()
            .name("krafter-writer".into())
            .spawn(move || applier.run())
            .map_err(|e| tracing::error!(error = %e, "cannot start the writer thread"))
            .ok();
        Writer {
            log_tx,
            apply_tx,
            threads: std::sync::Mutex::new((log_thread, apply_thread)),
            enqueue_timeout: limits.enqueue_timeout,
            log_healthy,
            settings_version,
        }
    }

    /// Runs `f` inside the next batch's transaction and returns its result
    /// once the batch is durably committed. For control-plane changes: each
    /// costs an fsync of the database (shared with whatever is queued).
    ///
    /// Contract for `f`: check everything that can fail for logical reasons
    /// (not found, conflict) *before* writing, so an `Err` never leaves half
    /// an operation in a transaction that others will commit.
    pub async fn write<T, F>(&self, size_hint: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = Op::new(f);
        self.direct(Box::new(op), answer, size_hint, true, false)
            .await
    }

    /// Like [`Writer::write`], but answers once the change is committed and
    /// visible, before it is durable: a crash within
    /// [`CHECKPOINT_INTERVAL`] may forget it. Only for changes whose loss
    /// the system tolerates (a delivery outcome: the delivery is simply
    /// attempted again). `f` runs on the batch's hot tables. With
    /// `may_linger`, a batch of such writes alone waits up to [`LINGER`] for
    /// more before committing (cheaper commits, later answers): for callers
    /// that do not wait on the answer to go on.
    pub async fn write_volatile<T, F>(&self, may_linger: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HotTables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = Op::new(Hot(f));
        self.direct(Box::new(op), answer, 0, false, may_linger)
            .await
    }

    /// Appends `payload` to the write-ahead log, and once it is synced runs
    /// `f` on the hot tables of the next batch; answers after that
    /// commit. After a crash the record is applied again by the
    /// [`Replayer`], so `f` must do exactly what replaying `payload` does.
    pub async fn write_logged<T, F>(&self, payload: Arc<[u8]>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HotTables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (op, answer) = Op::new(Hot(f));
        let job = LogJob::Write {
            op: Box::new(op),
            payload,
        };
        match tokio::time::timeout(self.enqueue_timeout, self.log_tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(StoreError::Unavailable("the writer has stopped")),
            Err(_) => return Err(StoreError::Unavailable("the write queue is full")),
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Unavailable("the writer has stopped")))
    }

    async fn direct<T>(
        &self,
        op: Box<dyn PendingWrite>,
        answer: oneshot::Receiver<Result<T, StoreError>>,
        size: usize,
        durable: bool,
        may_linger: bool,
    ) -> Result<T, StoreError> {
        let job = Job::Write {
            op,
            size,
            durable,
            may_linger,
        };
        match tokio::time::timeout(self.enqueue_timeout, self.apply_tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(StoreError::Unavailable("the writer has stopped")),
            Err(_) => return Err(StoreError::Unavailable("the write queue is full")),
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Unavailable("the writer has stopped")))
    }

    /// A number that moves on after every commit that wrote a source or a
    /// destination ([`note_settings_written`]), before its callers are
    /// answered, and after the file is reopened: while it stays the same, a
    /// record read before is still current, so delivery lanes keep their
    /// destination and ingest its sources instead of reading them per
    /// request.
    pub fn settings_version(&self) -> u64 {
        self.settings_version.load(Ordering::SeqCst)
    }

    /// False while the write-ahead log cannot be appended to.
    pub fn log_healthy(&self) -> bool {
        self.log_healthy.load(Ordering::SeqCst)
    }

    /// Commits what is queued (durably), then stops both threads. Later
    /// writes fail with `Unavailable`.
    pub async fn stop(&self) {
        // The log thread forwards its queue and then a stop to the apply
        // thread; the direct stop covers a log thread that never started.
        let _ = self.log_tx.send(LogJob::Stop).await;
        let (log_thread, apply_thread) = match self.threads.lock() {
            Ok(mut guard) => (guard.0.take(), guard.1.take()),
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                (guard.0.take(), guard.1.take())
            }
        };
        if let Some(handle) = log_thread {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let _ = self.apply_tx.send(Job::Stop).await;
        if let Some(handle) = apply_thread {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// The log thread: groups queued ingests, appends and syncs them, and hands
/// them to the apply thread in log order.
struct Logger {
    wal: Wal,
    rx: mpsc::Receiver<LogJob>,
    apply_tx: mpsc::Sender<Job>,
    /// The last lsn the database holds durably (set by the apply thread).
    checkpointed: Arc<AtomicU64>,
    limits: WriterLimits,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Logger {
    fn run(mut self) {
        // A timer to probe the log while it is failing, so `/readyz` turns
        // healthy again once it works even if no ingest arrives.
        let timer = timer("write-ahead log probe");
        let mut buffer = Vec::new();
        let mut stopping = false;
        while !stopping {
            let wait = (!self.healthy.load(Ordering::SeqCst)).then_some(LOG_PROBE_EVERY);
            let Ok(first) = recv_within(timer.as_ref(), &mut self.rx, wait) else {
                if self.wal.probe().is_ok() {
                    tracing::warn!("the write-ahead log is writable again");
                    self.healthy.store(true, Ordering::SeqCst);
                }
                continue;
            };
            let Some(first) = first else {
                break;
            };
            let mut ops = Vec::new();
            let mut payloads: Vec<Arc<[u8]>> = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    LogJob::Write { op, payload } => {
                        bytes += payload.len();
                        ops.push(op);
                        payloads.push(payload);
                    }
                    LogJob::Stop => stopping = true,
                }
                let room =
                    ops.len() < self.limits.max_batch_ops && bytes < self.limits.max_batch_bytes;
                if stopping || room {
                    next = self.rx.try_recv().ok();
                }
            }
            if ops.is_empty() {
                continue;
            }
            crash_point("wal-append");
            let started = Instant::now();
            let first_lsn = match self.wal.write(payloads.iter().map(|p| &p[..]), &mut buffer) {
                Ok(first_lsn) => first_lsn,
                Err(e) => {
                    self.refuse_group(&e);
                    for op in ops {
                        op.finish(false);
                    }
                    continue;
                }
            };
            let written = started.elapsed();
            let group = ops.len();
            let sync = SyncPromise::new();
            let job = Job::Logged {
                ops: ops
                    .into_iter()
                    .zip(payloads.iter().map(|p| p.len()))
                    .collect(),
                first_lsn,
                sync: sync.token(),
            };
            if let Err(mpsc::error::SendError(Job::Logged { ops, .. })) =
                self.apply_tx.blocking_send(job)
            {
                for (op, _) in ops {
                    op.finish(false);
                }
            }
            crash_point("wal-written");
            let syncing = Instant::now();
            match self.wal.sync() {
                Ok(()) => {
                    self.healthy.store(true, Ordering::SeqCst);
                    self.metrics
                        .observe_wal_sync(written + syncing.elapsed(), group);
                    sync.settle(true);
                    crash_point("wal-synced");
                }
                Err(e) => {
                    self.refuse_group(&e);
                    sync.settle(false);
                }
            }
            self.wal
                .retire_through(self.checkpointed.load(Ordering::SeqCst));
        }
        self.rx.close();
        while let Ok(LogJob::Write { op, .. }) = self.rx.try_recv() {
            op.finish(false);
        }
        let _ = self.apply_tx.blocking_send(Job::Stop);
    }

    /// Marks the log failing after a group could not be written or synced
    /// (the log was cut back to before it).
    fn refuse_group(&self, e: &std::io::Error) {
        self.healthy.store(false, Ordering::SeqCst);
        tracing::error!(error = %e, "cannot append to the write-ahead log; ingest is refused until it works again");
    }
}

/// The apply thread: the only one that writes to redb.
struct Applier {
    db: Arc<DbSlot>,
    rx: mpsc::Receiver<Job>,
    limits: WriterLimits,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    checkpointed: Arc<AtomicU64>,
    wal_dir: PathBuf,
    replayer: Replayer,
    /// The highest lsn applied by a committed transaction.
    applied_lsn: u64,
    /// The highest lsn handed over by the log thread in a group known to be
    /// synced (applied or not): how far a recovery replays the log.
    received_lsn: u64,
    /// Log bytes applied since the last checkpoint.
    logged_bytes: usize,
    /// When the oldest commit not yet made durable by a checkpoint was made.
    unsynced_since: Option<Instant>,
    /// Moved on after commits that wrote settings ([`Writer::settings_version`]).
    settings_version: Arc<AtomicU64>,
}

impl Applier {
    fn run(mut self) {
        // A timer for the idle checkpoint; without one the thread still
        // works, checkpointing only when writes arrive.
        let timer = timer("idle checkpoint");
        let mut stopping = false;
        while !stopping {
            let wait = self
                .unsynced_since
                .map(|since| CHECKPOINT_INTERVAL.saturating_sub(since.elapsed()));
            let Ok(first) = recv_within(timer.as_ref(), &mut self.rx, wait) else {
                // Idle with commits not yet durable: checkpoint.
                if self.commit(&mut [], true, &[]) != Committed::Yes {
                    self.recover(&mut stopping);
                }
                continue;
            };
            let Some(first) = first else {
                break;
            };
            let mut gathered = Gathered::default();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                stopping |= self.take(job, &mut gathered);
                // After a stop request, drain everything already queued so
                // no accepted write is dropped on shutdown.
                if stopping || gathered.has_room(&self.limits) {
                    next = self.rx.try_recv().ok();
                }
            }
            if !stopping && gathered.may_linger && gathered.batch.len() < LINGER_OPS {
                stopping = self.linger(timer.as_ref(), &mut gathered);
            }
            let Gathered {
                mut batch,
                durable,
                groups,
                ..
            } = gathered;
            if batch.is_empty() && !stopping {
                continue;
            }
            let durable = durable || stopping || self.checkpoint_due();
            let committed = self.commit(&mut batch, durable, &groups);
            if SETTINGS_WRITTEN.with(|written| written.replace(false))
                && committed == Committed::Yes
            {
                // After the commit, before anyone is answered: whoever
                // reads the version and then the record sees the record
                // current for that version or newer. (A failed commit is
                // followed by a reopen, which moves it on too.)
                self.settings_version.fetch_add(1, Ordering::SeqCst);
            }
            for op in batch {
                op.finish(committed == Committed::Yes);
            }
            match committed {
                Committed::Yes => {}
                Committed::No => self.recover(&mut stopping),
                Committed::LogFailed => self.apply_refused_but_synced(&groups, &mut stopping),
            }
        }
        self.rx.close();
        // Anything that raced in after the stop is refused, not silently lost.
        while let Ok(job) = self.rx.try_recv() {
            match job {
                Job::Write { op, .. } => op.finish(false),
                Job::Logged { ops, .. } => {
                    for (op, _) in ops {
                        op.finish(false);
                    }
                }
                Job::Stop => {}
            }
        }
    }

    /// Adds `job` to the batch being gathered; true for a stop request.
    fn take(&mut self, job: Job, gathered: &mut Gathered) -> bool {
        match job {
            Job::Write {
                op,
                size,
                durable,
                may_linger,
            } => {
                gathered.bytes += size;
                gathered.durable |= durable;
                gathered.may_linger &= may_linger;
                gathered.batch.push(op);
                false
            }
            Job::Logged {
                ops,
                first_lsn,
                sync,
            } => {
                let last_lsn = first_lsn + ops.len() as u64 - 1;
                gathered.groups.push(HandedGroup { sync, last_lsn });
                gathered.may_linger = false;
                for (op, size) in ops {
                    gathered.bytes += size;
                    self.logged_bytes += size;
                    gathered.batch.push(op);
                }
                false
            }
            Job::Stop => true,
        }
    }

    /// Waits (up to [`LINGER`]) for more writes to join a small batch of
    /// delivery outcomes; true if a stop request came meanwhile.
    fn linger(&mut self, timer: Option<&tokio::runtime::Runtime>, gathered: &mut Gathered) -> bool {
        // Without a timer a wait could not be bounded: commit at once.
        if timer.is_none() {
            return false;
        }
        let deadline = Instant::now() + LINGER;
        while gathered.may_linger
            && gathered.batch.len() < LINGER_OPS
            && gathered.has_room(&self.limits)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match recv_within(timer, &mut self.rx, Some(left)) {
                Ok(Some(job)) => {
                    if self.take(job, gathered) {
                        return true;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Whatever else is already queued joins too.
        while gathered.has_room(&self.limits) {
            match self.rx.try_recv() {
                Ok(job) => {
                    if self.take(job, gathered) {
                        return true;
                    }
                }
                Err(_) => break,
            }
        }
        false
    }

    fn checkpoint_due(&self) -> bool {
        self.unsynced_since
            .is_some_and(|since| since.elapsed() >= CHECKPOINT_INTERVAL)
            || self.logged_bytes >= CHECKPOINT_BYTES
    }

    /// Applies `batch` in one transaction; a durable commit is a checkpoint.
    /// Its logged `groups` must all be synced before it commits.
    fn commit(
        &mut self,
        batch: &mut [Box<dyn PendingWrite>],
        durable: bool,
        groups: &[HandedGroup],
    ) -> Committed {
        let started = Instant::now();
        // The highest log position among the batch's logged writes.
        let max_lsn = groups.iter().map(|group| group.last_lsn).max();
        let applied = max_lsn.map_or(self.applied_lsn, |lsn| lsn.max(self.applied_lsn));
        let committed = match self.db.get() {
            Ok(db) => commit_batch(
                &db,
                batch,
                durable.then_some(applied),
                groups,
                self.limits.quick_repair,
            ),
            Err(_) => Committed::No,
        };
        if !batch.is_empty() {
            self.metrics.observe_commit(started.elapsed(), batch.len());
        }
        let in_log = match committed {
            Committed::Yes => true,
            Committed::LogFailed => false,
            // Possibly failed before its syncs were waited for.
            Committed::No => groups.iter().all(|group| group.sync.wait()),
        };
        if in_log {
            // A recovery after a failed commit replays them.
            if let Some(lsn) = max_lsn {
                self.received_lsn = self.received_lsn.max(lsn);
            }
        }
        if committed != Committed::Yes {
            if committed == Committed::No {
                self.healthy.store(false, Ordering::SeqCst);
            }
            return committed;
        }
        self.applied_lsn = applied;
        if durable {
            self.checkpointed.store(applied, Ordering::SeqCst);
            self.logged_bytes = 0;
            self.unsynced_since = None;
        } else if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        Committed::Yes
    }

    /// After a batch was refused because one of its logged groups failed
    /// to sync: the groups of it that did sync are in the log, and a crash
    /// before the next checkpoint would replay them, so they are applied
    /// from the log now, as a restart would (with a checkpoint). Otherwise
    /// the database would differ from what a replay makes of the log: a
    /// later write (a provider's retry of one of them) committed live would
    /// meet them only after a crash. They were refused all the same: the
    /// provider's retry finds a duplicate.
    fn apply_refused_but_synced(&mut self, groups: &[HandedGroup], stopping: &mut bool) {
        let Some(last) = groups
            .iter()
            .filter(|group| group.sync.wait())
            .map(|group| group.last_lsn)
            .max()
        else {
            return;
        };
        if last <= self.applied_lsn {
            return;
        }
        let caught_up = self
            .db
            .get()
            .and_then(|db| catch_up(&db, &self.wal_dir, self.applied_lsn, last, &self.replayer));
        match caught_up {
            Ok(applied) => {
                self.applied_lsn = self.applied_lsn.max(applied);
                self.received_lsn = self.received_lsn.max(applied);
                self.checkpointed.store(self.applied_lsn, Ordering::SeqCst);
                self.logged_bytes = 0;
                self.unsynced_since = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot apply the synced part of a refused batch; reopening storage");
                self.healthy.store(false, Ordering::SeqCst);
                self.recover(stopping);
            }
        }
    }

    /// Reopens the database after a failed commit, retrying with backoff
    /// until it is writable again (e.g. once disk space is freed), then
    /// applies the log again from the last checkpoint: the reopened file is
    /// back at that checkpoint, and the ingests acknowledged since live only
    /// in the log. Writes queued in the meantime are refused at once, so
    /// callers answer 503 promptly instead of waiting out the queue timeout
    /// (a refused ingest that was already logged is applied by this replay:
    /// the provider's retry then finds it a duplicate).
    fn recover(&mut self, stopping: &mut bool) {
        let mut delay = FIRST_REOPEN_DELAY;
        loop {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                match self.rx.try_recv() {
                    Ok(Job::Write { op, .. }) => op.finish(false),
                    Ok(Job::Logged {
                        ops,
                        first_lsn,
                        sync,
                    }) => {
                        // Refused either way; once synced it is in the log,
                        // and the replay below applies it.
                        if sync.wait() {
                            let last = first_lsn + ops.len() as u64 - 1;
                            self.received_lsn = self.received_lsn.max(last);
                        }
                        for (op, _) in ops {
                            op.finish(false);
                        }
                    }
                    Ok(Job::Stop) => {
                        *stopping = true;
                        return;
                    }
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let reopened = self.db.reopen().and_then(|()| {
                let db = self.db.get()?;
                catch_up(
                    &db,
                    &self.wal_dir,
                    self.checkpointed.load(Ordering::SeqCst),
                    self.received_lsn,
                    &self.replayer,
                )
            });
            match reopened {
                Ok(applied) => {
                    self.applied_lsn = applied.max(self.checkpointed.load(Ordering::SeqCst));
                    self.checkpointed.store(self.applied_lsn, Ordering::SeqCst);
                    self.logged_bytes = 0;
                    self.unsynced_since = None;
                    // The file is back at its last checkpoint.
                    self.settings_version.fetch_add(1, Ordering::SeqCst);
                    self.healthy.store(true, Ordering::SeqCst);
                    tracing::warn!("storage reopened after a failed write; writes resume");
                    return;
                }
                Err(e) => tracing::error!(error = %e, "storage cannot be reopened yet"),
            }
            delay = (delay * 2).min(MAX_REOPEN_DELAY);
        }
    }
}

/// What became of a batch's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Yes,
    /// redb failed: the file must be reopened ([`Applier::recover`]).
    No,
    /// A logged group in it could not be synced: the batch is refused, the
    /// database is fine ([`Applier::apply_refused_but_synced`]).
    LogFailed,
}

/// The fate of one logged group's sync. The log thread hands a group to the
/// apply thread as soon as it is written, so redb's work on it overlaps its
/// fsync; the apply thread commits it only once this says it is synced. One
/// per group, so a group that failed (and whose lsns the log gives again)
/// can never be taken for the one that follows it.
#[derive(Default)]
struct GroupSync {
    /// `Some(true)` synced, `Some(false)` failed (cut from the log).
    state: std::sync::Mutex<Option<bool>>,
    settled: std::sync::Condvar,
}

impl GroupSync {
    fn settle(&self, synced: bool) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(synced);
        self.settled.notify_all();
    }

    /// Waits until the sync is done: true if the group is in the log. Never
    /// long: the log thread syncs a group right after handing it over, and
    /// settles it even if it dies first ([`SyncPromise`]).
    fn wait(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(synced) = *state {
                return synced;
            }
            state = self
                .settled
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// The log thread's side of a [`GroupSync`]: settles it as failed if
/// dropped unsettled (a panic between handing the group over and syncing
/// it), so the apply thread never waits forever.
struct SyncPromise {
    sync: Arc<GroupSync>,
    settled: bool,
}

impl SyncPromise {
    fn new() -> SyncPromise {
        SyncPromise {
            sync: Arc::default(),
            settled: false,
        }
    }

    fn token(&self) -> Arc<GroupSync> {
        self.sync.clone()
    }

    fn settle(mut self, synced: bool) {
        self.sync.settle(synced);
        self.settled = true;
    }
}

impl Drop for SyncPromise {
    fn drop(&mut self) {
        if !self.settled {
            self.sync.settle(false);
        }
    }
}

/// A logged group in a batch: its sync, and its last lsn.
struct HandedGroup {
    sync: Arc<GroupSync>,
    last_lsn: u64,
}

/// A timer for a writer thread's timed waits (it runs outside tokio);
/// `None` if it cannot be built, and the thread then just waits.
fn timer(what: &str) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no {what} timer"))
        .ok()
}

/// The next job (`None` once every sender is gone), waiting at most `wait`
/// when given and a timer exists: `Err` means nothing came in time.
fn recv_within<T>(
    timer: Option<&tokio::runtime::Runtime>,
    rx: &mut mpsc::Receiver<T>,
    wait: Option<Duration>,
) -> Result<Option<T>, tokio::time::error::Elapsed> {
    match (timer, wait) {
        // The timeout is made inside the runtime (it needs its timer).
        (Some(timer), Some(wait)) => {
            timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await })
        }
        _ => Ok(rx.blocking_recv()),
    }
}

/// How long storage stays refused after a failed commit before the first
/// reopen: long enough that `/readyz` reliably shows the failure and a
/// full disk does not turn into a tight fail-reopen-fail loop.
const FIRST_REOPEN_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to reopen the database.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(5);

/// Applies every log record after `after_lsn` (up to `up_to_lsn`) to `db`
/// and makes the result durable, recording the new position; returns it.
/// Run at start-up before anyone is served, and after a reopen.
pub fn catch_up(
    db: &Database,
    wal_dir: &std::path::Path,
    after_lsn: u64,
    up_to_lsn: u64,
    replayer: &Replayer,
) -> Result<u64, StoreError> {
    let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(CATCH_UP_CHUNK);
    let last = wal::replay(wal_dir, after_lsn, up_to_lsn, |_, payload| {
        chunk.push(payload.to_vec());
        if chunk.len() == CATCH_UP_CHUNK {
            apply_chunk(db, &chunk, replayer)?;
            chunk.clear();
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        apply_chunk(db, &chunk, replayer)?;
    }
    if last > after_lsn {
        let mut t = db.begin_write()?;
        t.set_quick_repair(true);
        t.open_table(WAL_STATE)?.insert(APPLIED_LSN, last)?;
        t.commit()?;
    }
    Ok(last)
}

/// Applies log records in one non-durable transaction (the checkpoint at
/// the end of [`catch_up`] makes them durable).
fn apply_chunk(db: &Database, records: &[Vec<u8>], replayer: &Replayer) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    {
        let mut tables = HotTables::open(&txn)?;
        for record in records {
            replayer(&mut tables, record)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Applies a batch in one transaction and commits it; `checkpoint` makes
/// the commit durable and records that lsn as applied. The commit waits
/// for the syncs of the batch's logged `groups` (applied while they ran),
/// and is abandoned if one failed.
fn commit_batch(
    db: &Database,
    batch: &mut [Box<dyn PendingWrite>],
    checkpoint: Option<u64>,
    groups: &[HandedGroup],
    quick_repair: bool,
) -> Committed {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            return Committed::No;
        }
    };
    match checkpoint {
        Some(_) => txn.set_quick_repair(quick_repair),
        None => {
            if let Err(e) = txn.set_durability(Durability::None) {
                tracing::error!(error = %e, "cannot make a non-durable commit");
                let _ = txn.abort();
                return Committed::No;
            }
        }
    }
    let mut shared = Batch {
        txn: &txn,
        hot: None,
    };
    for op in batch.iter_mut() {
        if let Applied::Broken = op.apply(&mut shared) {
            tracing::error!("a write failed inside redb; aborting the batch");
            drop(shared);
            let _ = txn.abort();
            return Committed::No;
        }
    }
    // Closes the ingest tables: their roots go back into the transaction.
    drop(shared);
    if !groups.iter().all(|group| group.sync.wait()) {
        tracing::error!("the write-ahead log could not be synced; the batch is refused");
        let _ = txn.abort();
        return Committed::LogFailed;
    }
    if let Some(lsn) = checkpoint {
        let recorded = match txn.open_table(WAL_STATE) {
            Ok(mut table) => table
                .insert(APPLIED_LSN, lsn)
                .map(|_| ())
                .map_err(StoreError::from),
            Err(e) => Err(StoreError::from(e)),
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record the checkpoint");
            let _ = txn.abort();
            return Committed::No;
        }
        crash_point("checkpoint");
    } else {
        crash_point("apply");
    }
    match txn.commit() {
        Ok(()) => Committed::Yes,
        Err(e) => {
            tracing::error!(error = %e, "commit failed; storage is marked unavailable");
            Committed::No
        }
    }
}

/// Crash tests: `KRAFTER_TEST_CRASH_AT=<point>` kills the process with
/// SIGKILL (exactly kill -9: no cleanup, no flush) the first time the writer reaches `point`
/// after `KRAFTER_TEST_CRASH_AFTER` (default 50) passes — so a test can
/// crash right inside a window the write-ahead design opens: `wal-append`
/// (a group read, not yet in the log), `wal-written` (written and handed to
/// the apply thread, not yet synced), `wal-synced` (in the log, not yet
/// committed or answered), `apply` (a non-durable commit about to be made)
/// and `checkpoint` (a durable commit about to be made).
fn crash_point(point: &str) {
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let at = std::env::var("KRAFTER_TEST_CRASH_AT").ok()?;
        let after = std::env::var("KRAFTER_TEST_CRASH_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(50);
        Some((at, after))
    });
    if let Some((at, after)) = target {
        if at == point && PASSES.fetch_add(1, Ordering::SeqCst) >= *after {
            eprintln!("KRAFTER_TEST_CRASH_AT={point}: killing this process");
            // SAFETY: kill(2) on our own pid has no memory-safety
            // preconditions; SIGKILL does not return.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");

    fn writer(
        dir: &tempfile::TempDir,
        queue: usize,
        timeout_ms: u64,
    ) -> (Arc<Database>, Arc<Writer>, Arc<Metrics>) {
        let slot = Arc::new(DbSlot::open(dir.path().join("w.redb"), 1 << 20).unwrap());
        let db = slot.get().unwrap();
        let limits = WriterLimits {
            max_batch_ops: 64,
            max_batch_bytes: 1 << 20,
            queue_capacity: queue,
            quick_repair: false,
            enqueue_timeout: Duration::from_millis(timeout_ms),
        };
        let metrics = Arc::new(Metrics::new());
        let wal_dir = dir.path().join("wal");
        let w = Writer::start(WriterSetup {
            db: slot,
            wal: Wal::open(&wal_dir, 0).unwrap(),
            wal_dir,
            applied_lsn: 0,
            replayer: Arc::new(|_, _| Ok(())),
            limits,
            healthy: Arc::new(AtomicBool::new(true)),
            metrics: metrics.clone(),
        });
        (db, Arc::new(w), metrics)
    }

    /// Waits (bounded) until `check` holds, polling every millisecond.
    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_after_a_bounded_wait_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, w, _) = writer(&dir, 1, 200);
        // Occupy the writer thread until released.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let w = w.clone();
            tokio::spawn(async move {
                w.write(0, move |_| {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the writer took the first write");
        // Fill the one queue slot.
        let queued = {
            let w = w.clone();
            tokio::spawn(async move { w.write(0, |_| Ok(1)).await })
        };
        until("the queue slot to fill", || w.apply_tx.capacity() == 0).await;
        let started = std::time::Instant::now();
        let refused = w.write(0, |_| Ok(2)).await;
        let waited = started.elapsed();
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        // Refused after the configured wait, not at once and not never.
        assert!(waited >= Duration::from_millis(180), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The accepted ones still complete.
        release_tx.send(()).unwrap();
        assert!(busy.await.unwrap().is_ok());
        assert_eq!(queued.await.unwrap().unwrap(), 1);
        w.stop().await;
    }

    /// Hands the apply thread a logged group of one write (setting `key`
    /// of `T`) at `lsn`, as the log thread does before syncing it; the test
    /// then settles its sync.
    async fn hand_logged_write(
        w: &Writer,
        lsn: u64,
        key: u64,
    ) -> (oneshot::Receiver<Result<(), StoreError>>, Arc<GroupSync>) {
        let (op, answer) = Op::new(move |txn: &WriteTransaction| {
            txn.open_table(T)?.insert(key, key)?;
            Ok(())
        });
        let sync = Arc::new(GroupSync::default());
        let job = Job::Logged {
            ops: vec![(Box::new(op) as Box<dyn PendingWrite>, 8)],
            first_lsn: lsn,
            sync: sync.clone(),
        };
        assert!(w.apply_tx.send(job).await.is_ok());
        (answer, sync)
    }

    fn stored(db: &Database, key: u64) -> Option<u64> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).ok()?;
        table.get(key).unwrap().map(|v| v.value())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logged_write_is_committed_only_after_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w, _) = writer(&dir, 64, 5_000);
        let (mut answer, sync) = hand_logged_write(&w, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(answer.try_recv().is_err(), "answered before its sync");
        assert_eq!(stored(&db, 1), None, "visible before its sync");
        sync.settle(true);
        answer.await.unwrap().unwrap();
        assert_eq!(stored(&db, 1), Some(1));
        w.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_logged_write_whose_sync_fails_is_refused_and_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w, _) = writer(&dir, 64, 5_000);
        let (answer, sync) = hand_logged_write(&w, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        sync.settle(false);
        let refused = answer.await.unwrap();
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(stored(&db, 1), None);
        // Only that batch is refused: the next write commits at once.
        w.write(0, |txn| {
            txn.open_table(T)?.insert(2, 2)?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((stored(&db, 1), stored(&db, 2)), (None, Some(2)));
        w.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_with_the_lsns_of_a_failed_one_commits_on_its_own_sync() {
        // After a failed sync the log gives the same lsns to the next group:
        // each waits on its own sync, so the failure never reaches it.
        let dir = tempfile::tempdir().unwrap();
        let (db, w, _) = writer(&dir, 64, 5_000);
        let (failed, failed_sync) = hand_logged_write(&w, 1, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        failed_sync.settle(false);
        assert!(failed.await.unwrap().is_err());
        let (next, next_sync) = hand_logged_write(&w, 1, 2).await;
        next_sync.settle(true);
        next.await.unwrap().unwrap();
        assert_eq!((stored(&db, 1), stored(&db, 2)), (None, Some(2)));
        w.stop().await;
    }

    #[test]
    fn a_sync_promise_dropped_unsettled_fails_its_group() {
        let promise = SyncPromise::new();
        let sync = promise.token();
        drop(promise);
        assert!(!sync.wait());
    }

    /// The commits counted so far.
    fn commits(metrics: &Metrics) -> f64 {
        let exposition = metrics.render();
        exposition
            .lines()
            .find_map(|l| l.strip_prefix("krafter_storage_commit_duration_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no commit count in {exposition}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_settings_version_moves_on_only_after_a_commit_that_wrote_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, w, _metrics) = writer(&dir, 64, 5_000);
        let start = w.settings_version();
        w.write(0, |txn| {
            txn.open_table(T)?.insert(1, 1)?;
            Ok(())
        })
        .await
        .unwrap();
        w.write_volatile(true, |_tables| Ok(())).await.unwrap();
        assert_eq!(w.settings_version(), start, "nothing changed settings");
        w.write(0, |txn| {
            note_settings_written();
            txn.open_table(T)?.insert(2, 2)?;
            Ok(())
        })
        .await
        .unwrap();
        // Moved on before the writer answered.
        let after_write = w.settings_version();
        assert!(after_write > start);
        w.write_volatile(false, |_tables| {
            note_settings_written();
            Ok(())
        })
        .await
        .unwrap();
        assert!(w.settings_version() > after_write);
        w.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_arriving_one_by_one_share_commits_when_nobody_waits_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, w, metrics) = writer(&dir, 1024, 5_000);
        let before = commits(&metrics);
        // 24 writes a quarter of a millisecond apart: an idle writer would
        // commit each alone.
        let runtime = tokio::runtime::Handle::current();
        let issuer = {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for _ in 0..24 {
                    let w = w.clone();
                    answers.push(
                        runtime
                            .spawn(async move { w.write_volatile(true, |_tables| Ok(())).await }),
                    );
                    std::thread::sleep(Duration::from_micros(250));
                }
                answers
            })
        };
        for answer in issuer.join().unwrap() {
            answer.await.unwrap().unwrap();
        }
        let lingering = commits(&metrics) - before;
        assert!(
            lingering <= 12.0,
            "{lingering} commits for 24 outcomes arriving over ~6 ms"
        );
        w.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_a_refused_op_does_not_spoil_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (db, w, metrics) = writer(&dir, 1024, 5_000);
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.write(0, move |txn| {
                    if i % 10 == 0 {
                        // Refuses before writing, as the contract asks.
                        return Err(StoreError::Conflict("no".into()));
                    }
                    txn.open_table(T)?.insert(i, i)?;
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 180);
        // 200 writes arrived together: they shared commits (fsyncs).
        let commits = commits(&metrics);
        assert!(
            (1.0..=100.0).contains(&commits),
            "{commits} commits for 200 concurrent writes"
        );
        w.stop().await;
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(T).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&table).unwrap(), 180);
        // After stop, writes are refused rather than lost silently.
        assert!(matches!(
            w.write(0, |_| Ok(())).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    /// A store holding one source with two destinations, the second as
    /// `second` leaves it.
    async fn store_with_two_destinations(
        dir: &tempfile::TempDir,
        second: impl FnOnce(&mut crate::model::records::DestinationRecord),
    ) -> (
        crate::store::redb::RedbStore,
        crate::model::ids::SourceId,
        crate::model::records::DestinationRecord,
    ) {
        use crate::store::conformance::{destination, source};
        use crate::store::redb::{destinations, sources, RedbStore};

        let config = crate::config::StorageConfig {
            path: dir.path().join("data"),
            ..crate::config::StorageConfig::default()
        };
        let store = RedbStore::open(&config, Arc::new(Metrics::new())).unwrap();
        let src = source("wh_batch0001");
        let first = destination(src.id, &[]);
        let mut other = destination(src.id, &[]);
        second(&mut other);
        let (source_id, stored) = (src.id, other.clone());
        store
            .write(move |txn| {
                sources::insert(txn, &src)?;
                destinations::insert(txn, &first, 100)?;
                destinations::insert(txn, &other, 100)
            })
            .await
            .unwrap();
        (store, source_id, stored)
    }

    /// Applies `batch` in one transaction, as the apply thread does, and
    /// answers its callers.
    fn commit_as_one_batch(
        store: &crate::store::redb::RedbStore,
        mut batch: Vec<Box<dyn PendingWrite>>,
    ) {
        let db = store.db.get().unwrap();
        assert_eq!(
            commit_batch(&db, &mut batch, None, &[], false),
            Committed::Yes
        );
        for op in batch {
            op.finish(true);
        }
    }

    /// How many deliveries a stored event fanned out to.
    fn fanned_out(outcome: Result<crate::store::IngestOutcome, StoreError>) -> usize {
        match outcome {
            Ok(crate::store::IngestOutcome::Stored { deliveries }) => deliveries.len(),
            other => panic!("{other:?}"),
        }
    }

    /// The ingest tables (and the destinations they read once) are shared
    /// by consecutive ingests of a batch; a change in between must close
    /// them, so the next ingest fans out by what the change left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ingest_after_a_destination_change_in_the_same_batch_sees_the_change() {
        use crate::store::conformance::event_now;
        use crate::store::redb::destinations;
        use crate::store::redb::records::Record;

        let dir = tempfile::tempdir().unwrap();
        let (store, source_id, disabled) = store_with_two_destinations(&dir, |_| {}).await;
        let disabled_id = disabled.id;
        let ingest = |event: crate::store::redb::records::EventRecord| {
            Op::new(Hot(move |tables: &mut HotTables<'_>| {
                tables.ingest(&event, &event.encode())
            }))
        };
        let (first, first_answer) = ingest(event_now(source_id, "t", None));
        let (change, change_answer) = Op::new(move |txn: &WriteTransaction| {
            destinations::update(txn, source_id, disabled_id, |d| {
                d.enabled = false;
                Ok(())
            })
        });
        let (second, second_answer) = ingest(event_now(source_id, "t", None));
        let batch: Vec<Box<dyn PendingWrite>> =
            vec![Box::new(first), Box::new(change), Box::new(second)];
        commit_as_one_batch(&store, batch);
        assert_eq!(fanned_out(first_answer.await.unwrap()), 2);
        assert!(change_answer.await.unwrap().is_ok());
        assert_eq!(fanned_out(second_answer.await.unwrap()), 1);
    }

    /// A delivery outcome that disables a destination, applied through the
    /// same open tables between two ingests of a batch, makes the second
    /// ingest read that source's destinations again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_that_disables_a_destination_mid_batch_stops_its_fan_out_at_once() {
        use crate::store::conformance::{attempt, event_now, outcome};
        use crate::store::redb::records::Record;
        use crate::store::{DueItem, IngestOutcome, Next};

        let dir = tempfile::tempdir().unwrap();
        // Failing for long enough that the next failure disables it.
        let (store, source_id, failing) =
            store_with_two_destinations(&dir, |d| d.failing_since_ms = Some(0)).await;
        let earlier = event_now(source_id, "t", None);
        let queued = store
            .writer
            .write_logged(earlier.encode().into(), move |tables| {
                tables.ingest(&earlier, &earlier.encode())
            })
            .await
            .unwrap();
        let IngestOutcome::Stored { deliveries } = queued else {
            panic!("{queued:?}");
        };
        let to_failing = deliveries
            .iter()
            .find(|d| d.destination_id == failing.id)
            .unwrap();
        let mut disabling = outcome(
            &failing,
            DueItem {
                delivery_id: to_failing.id,
                event_id: to_failing.event_id,
                due_ms: to_failing.next_attempt_ms.unwrap() as u64,
            },
            attempt(1, crate::model::time::now_ms(), false),
            Next::Failed,
        );
        disabling.disable_after_ms = 0;

        let ingest = |event: crate::store::redb::records::EventRecord| {
            Op::new(Hot(move |tables: &mut HotTables<'_>| {
                tables.ingest(&event, &event.encode())
            }))
        };
        let (first, first_answer) = ingest(event_now(source_id, "t", None));
        let (record, record_answer) = Op::new(Hot(move |tables: &mut HotTables<'_>| {
            tables.record_attempt(&disabling)
        }));
        let (second, second_answer) = ingest(event_now(source_id, "t", None));
        let batch: Vec<Box<dyn PendingWrite>> =
            vec![Box::new(first), Box::new(record), Box::new(second)];
        commit_as_one_batch(&store, batch);
        assert_eq!(fanned_out(first_answer.await.unwrap()), 2);
        assert!(record_answer.await.unwrap().unwrap().disabled_destination);
        assert_eq!(fanned_out(second_answer.await.unwrap()), 1);
    }
}
