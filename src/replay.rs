//! Runs bulk replay jobs (SPEC §10) in the background.
//!
//! A job is stored before its 202 is sent (`store::replays`); from then on
//! a task here advances it chunk by chunk until it completes, and every
//! start-up resumes the jobs still `running`. Each chunk's deliveries and
//! the job's cursor are one commit, so stopping at any point — graceful
//! shutdown, a crash, `kill -9` — loses nothing and repeats nothing.

use crate::model::ids::{ReplayId, SourceId};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::engine::Engine;
use crate::model::records::ReplayState;
use crate::store::{Store, StoreError};
use crate::store::{CHUNK_EVENTS, CHUNK_SCAN};

/// First and longest wait before a job retries after a storage error.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Handle to the replay runner; cheap to clone.
#[derive(Clone)]
pub struct Replays {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Engine,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Jobs with a task, so one job never runs twice at once.
    active: Mutex<HashSet<ReplayId>>,
}

/// How a job's run first ended: its final state, or the first storage
/// error (after which the job keeps retrying in the background).
pub type FirstOutcome = Result<ReplayState, StoreError>;

impl Replays {
    /// A runner over `store`, waking `engine`'s lanes as deliveries land.
    pub fn new(store: Store, engine: Engine) -> Replays {
        Replays {
            inner: Arc::new(Inner {
                store,
                engine,
                stop: CancellationToken::new(),
                tracker: TaskTracker::new(),
                active: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// With several nodes, a job whose node died would wait for some node
    /// to restart: every node looks for running jobs it has no task for
    /// every `period` and runs them too. Two nodes on one job is safe (each
    /// chunk locks the job), only redundant.
    pub fn adopt_orphans_every(&self, period: Duration) {
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = this.inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(period) => this.resume_all(),
                }
            }
        });
    }

    /// Resumes, in the background, every job left `running` by the last
    /// run of the process (stopped, crashed or killed).
    pub fn resume_all(&self) {
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            match this.inner.store.running_replays().await {
                Ok(jobs) => {
                    if !jobs.is_empty() {
                        tracing::info!(jobs = jobs.len(), "resuming bulk replays");
                    }
                    for (source, job) in jobs {
                        drop(this.start(source, job));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list bulk replays to resume"),
            }
        });
    }

    /// Starts running a stored job. The receiver gets its first outcome
    /// (dropping it is fine: the job runs on regardless).
    pub fn start(&self, source: SourceId, job: ReplayId) -> oneshot::Receiver<FirstOutcome> {
        let (report, outcome) = oneshot::channel();
        let fresh = lock(&self.inner.active).insert(job);
        if !fresh || self.inner.stop.is_cancelled() {
            if fresh {
                lock(&self.inner.active).remove(&job);
            }
            let _ = report.send(Err(StoreError::Unavailable(
                "the replay is already running or the server is stopping",
            )));
            return outcome;
        }
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            run(&inner, source, job, report).await;
            lock(&inner.active).remove(&job);
        });
        outcome
    }

    /// Stops every job after its current chunk and waits for them; the
    /// ones not finished stay `running` and resume at the next start.
    pub async fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

async fn run(
    inner: &Inner,
    source: SourceId,
    job: ReplayId,
    report: oneshot::Sender<FirstOutcome>,
) {
    let mut report = Some(report);
    let mut pause = RETRY_FIRST;
    while !inner.stop.is_cancelled() {
        let step = inner
            .store
            .advance_replay(
                source,
                job,
                crate::model::time::now_ms(),
                CHUNK_EVENTS,
                CHUNK_SCAN,
            )
            .await;
        match step {
            Ok(advanced) => {
                pause = RETRY_FIRST;
                for destination in &advanced.destinations {
                    inner.engine.wake(source, *destination);
                }
                let state = advanced.state.unwrap_or(ReplayState::Cancelled);
                if state != ReplayState::Running {
                    if let Some(report) = report.take() {
                        let _ = report.send(Ok(state));
                    }
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "bulk replay paused by a storage error; will retry");
                if let Some(report) = report.take() {
                    let _ = report.send(Err(e));
                }
                tokio::select! {
                    _ = inner.stop.cancelled() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
    if let Some(report) = report.take() {
        let _ = report.send(Ok(ReplayState::Running));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
