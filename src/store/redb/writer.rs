//! The single writer: every change to the database goes through here.
//!
//! redb allows one write transaction at a time and each durable commit costs
//! an fsync (1–3 ms here). One thread owns all writes: it takes whatever
//! operations are queued (up to a count and a byte budget), applies them in
//! one transaction, commits once, and only then answers each caller. Work
//! that arrives during one fsync forms the next batch, so there is no
//! artificial linger when idle and throughput grows with concurrency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::{DbSlot, StoreError};
use crate::metrics::Metrics;

/// One operation in a batch. `apply` runs inside the shared transaction;
/// `finish` answers the caller once the batch's fate is known.
trait PendingWrite: Send {
    fn apply(&mut self, txn: &WriteTransaction) -> Applied;
    fn finish(self: Box<Self>, committed: bool);
}

/// What applying one operation did to the shared transaction.
enum Applied {
    /// Wrote (or decided not to write) cleanly; the batch can commit.
    Clean,
    /// redb itself failed mid-operation: the transaction can't be trusted.
    Broken,
}

enum Job {
    Write {
        op: Box<dyn PendingWrite>,
        size: usize,
    },
    Stop,
}

struct Op<T, F> {
    f: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> PendingWrite for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(&mut self, txn: &WriteTransaction) -> Applied {
        let Some(f) = self.f.take() else {
            return Applied::Clean;
        };
        let result = f(txn);
        let applied = match &result {
            Err(StoreError::Backend(_)) | Err(StoreError::Io { .. }) => Applied::Broken,
            _ => Applied::Clean,
        };
        self.result = Some(result);
        applied
    }

    fn finish(self: Box<Self>, committed: bool) {
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

/// Handle to the writer thread; cheap to share behind the store.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    enqueue_timeout: Duration,
}

impl Writer {
    /// Starts the writer thread over `db`. `healthy` goes false when a
    /// commit fails (redb then refuses everything until the file is
    /// reopened) and true again once the writer has reopened it.
    pub(crate) fn start(
        db: Arc<DbSlot>,
        limits: WriterLimits,
        healthy: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(limits.queue_capacity);
        let thread = std::thread::Builder::new()
            .name("krafter-writer".into())
            .spawn(move || run(db, rx, limits, healthy, metrics))
            .ok();
        Writer {
            tx,
            thread: std::sync::Mutex::new(thread),
            enqueue_timeout: limits.enqueue_timeout,
        }
    }

    /// Runs `f` inside the next batch's transaction and returns its result
    /// once the batch is durably committed.
    ///
    /// Contract for `f`: check everything that can fail for logical reasons
    /// (not found, conflict) *before* writing, so an `Err` never leaves half
    /// an operation in a transaction that others will commit.
    pub async fn write<T, F>(&self, size_hint: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op {
            f: Some(f),
            result: None,
            reply,
        });
        let job = Job::Write {
            op,
            size: size_hint,
        };
        match tokio::time::timeout(self.enqueue_timeout, self.tx.send(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(StoreError::Unavailable("the writer has stopped")),
            Err(_) => return Err(StoreError::Unavailable("the write queue is full")),
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Unavailable("the writer has stopped")))
    }

    /// Commits what is queued, then stops the thread. Later writes fail
    /// with `Unavailable`.
    pub async fn stop(&self) {
        let _ = self.tx.send(Job::Stop).await;
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn run(
    db: Arc<DbSlot>,
    mut rx: mpsc::Receiver<Job>,
    limits: WriterLimits,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut batch: Vec<Box<dyn PendingWrite>> = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write { op, size } => {
                    bytes += size;
                    batch.push(op);
                }
                Job::Stop => stopping = true,
            }
            // After a stop request, drain everything already queued so no
            // accepted write is dropped on shutdown.
            let room = batch.len() < limits.max_batch_ops && bytes < limits.max_batch_bytes;
            if stopping || room {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let committed = match db.get() {
            Ok(current) => commit_batch(&current, &mut batch, limits.quick_repair),
            Err(_) => false,
        };
        metrics.observe_commit(started.elapsed(), batch.len());
        if !committed {
            healthy.store(false, Ordering::SeqCst);
        }
        for op in batch {
            op.finish(committed);
        }
        if !committed {
            recover(&db, &mut rx, &healthy, &mut stopping);
        }
    }
    rx.close();
    // Anything that raced in after the stop is refused, not silently lost.
    while let Ok(Job::Write { op, .. }) = rx.try_recv() {
        op.finish(false);
    }
}

/// How long storage stays refused after a failed commit before the first
/// reopen: long enough that `/readyz` reliably shows the failure and a
/// full disk does not turn into a tight fail-reopen-fail loop.
const FIRST_REOPEN_DELAY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts to reopen the database.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(5);

/// Reopens the database after a failed commit, retrying with backoff until
/// it is writable again (e.g. once disk space is freed). Writes queued in
/// the meantime are refused at once, so callers answer 503 promptly
/// instead of waiting out the queue timeout.
fn recover(db: &DbSlot, rx: &mut mpsc::Receiver<Job>, healthy: &AtomicBool, stopping: &mut bool) {
    let mut delay = FIRST_REOPEN_DELAY;
    loop {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            match rx.try_recv() {
                Ok(Job::Write { op, .. }) => op.finish(false),
                Ok(Job::Stop) => {
                    *stopping = true;
                    return;
                }
                Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(10)),
                Err(TryRecvError::Disconnected) => return,
            }
        }
        match db.reopen() {
            Ok(()) => {
                healthy.store(true, Ordering::SeqCst);
                tracing::warn!("storage reopened after a failed write; writes resume");
                return;
            }
            Err(e) => tracing::error!(error = %e, "storage cannot be reopened yet"),
        }
        delay = (delay * 2).min(MAX_REOPEN_DELAY);
    }
}

fn commit_batch(db: &Database, batch: &mut [Box<dyn PendingWrite>], quick_repair: bool) -> bool {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a write transaction");
            return false;
        }
    };
    txn.set_quick_repair(quick_repair);
    for op in batch.iter_mut() {
        if let Applied::Broken = op.apply(&txn) {
            tracing::error!("a write failed inside redb; aborting the batch");
            let _ = txn.abort();
            return false;
        }
    }
    match txn.commit() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "commit failed; storage is marked unavailable");
            false
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
        let w = Writer::start(
            slot,
            limits,
            Arc::new(AtomicBool::new(true)),
            metrics.clone(),
        );
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
        until("the queue slot to fill", || w.tx.capacity() == 0).await;
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
        let exposition = metrics.render();
        let commits: f64 = exposition
            .lines()
            .find_map(|l| l.strip_prefix("krafter_storage_commit_duration_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no commit count in {exposition}"));
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
}
