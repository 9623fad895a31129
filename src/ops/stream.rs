//! The live event stream of a source (SPEC §14): what the SSE endpoint,
//! `krafter listen`, `krafter events tail` and the dashboard's live events
//! page read.
//!
//! How a stream learns of new events: it always reads **from storage, by
//! cursor** (the last event id it has passed), oldest first — so "first the
//! stored events after `Last-Event-ID`, then live ones" is one loop with no
//! seam, and it works the same on every backend and across several nodes
//! sharing one PostgreSQL. Storage is polled every [`POLL`]; a per-process
//! [`Hub`] is bumped after each committed ingest so a stream on this node
//! looks again as soon as the new event can be sent, instead of waiting for
//! the next poll. Nothing is fanned out per event: the bump is one `watch`
//! store, and a stream listens to it at most once per poll.
//!
//! The ordering trap: an event id is a ULID made when the request has been
//! read, and two ingests may commit in the opposite order of their ids.
//! "Send everything after the last id sent" would then skip an event that
//! commits late with a smaller id. A stream therefore only sends events
//! whose id is older than [`SETTLE`] (the settle window): an ingest commits
//! within that time after making its id, so once an id time is older than
//! the window, no smaller id can still appear. Sent ids are strictly
//! increasing, which makes the last id seen an exact resume point. The
//! price is that a live event arrives about [`SETTLE`] after it was
//! received; with several nodes their clocks must agree to well within it
//! (NTP does).
//!
//! A slow client cannot grow memory: events go to the response through a
//! bounded channel of [`BUFFER`] items, read one page at a time; a stream
//! whose client has not taken an item for [`STALL`] (or `server.idle_timeout`
//! when shorter) ends and closes the client's connection. (The server's
//! idle watchdog alone is not enough: a stalled reader's kernel still takes
//! a few bytes now and then, so the connection never looks silent.)

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::events::EventDetail;
use super::{Caller, OpError, Ops};
use crate::model::ids::{EventId, SourceId};
use crate::model::records::Scope;
use crate::model::time::now_ms;
use crate::store::StoreError;

/// How old an event id must be before a stream sends it (see the module
/// documentation: no event can commit later with a smaller id).
pub const SETTLE: Duration = Duration::from_secs(2);

/// How often a stream looks at storage when nothing woke it (events
/// ingested on other nodes arrive within this after settling).
pub const POLL: Duration = Duration::from_secs(1);

/// The longest gap between two writes on an open stream: a comment line is
/// sent when nothing else was (SPEC §14). Shorter when `server.idle_timeout`
/// is below twice this, so a healthy idle stream is never closed as idle.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Items waiting between a stream and its client's connection.
pub const BUFFER: usize = 16;

/// A client that takes nothing for this long is dropped (or for
/// `server.idle_timeout`, when shorter).
pub const STALL: Duration = Duration::from_secs(30);

/// Events read from storage per look.
const PAGE: usize = 100;

/// Longest `type` pattern a stream takes.
pub const MAX_PATTERN: usize = 1024;

/// Wakes this process's streams after commits, and ends them at shutdown.
#[derive(Debug)]
pub struct Hub {
    committed: watch::Sender<u64>,
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            committed: watch::channel(0).0,
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// An event was committed on this node: streams look again once it
    /// has settled. One store into a `watch`, whatever the number of
    /// streams.
    pub fn committed(&self) {
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ends every open stream (server shutdown), so graceful shutdown
    /// never waits on a response that would never finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// What a stream hands its response, in order.
#[derive(Debug)]
pub enum StreamItem {
    /// A stored event, with its detail (SPEC §10).
    Event {
        source_id: SourceId,
        id: EventId,
        detail: Box<EventDetail>,
    },
    /// Nothing was sent for a while: a comment line keeps the connection
    /// (and any proxy on the way) open.
    Heartbeat,
}

/// Closes the client's connection: called when the client stopped reading,
/// since a response nobody reads cannot end by itself.
pub type OnStall = Box<dyn FnOnce() + Send + 'static>;

/// Where a stream starts and what it sends.
#[derive(Default)]
pub struct StreamRequest {
    /// Send the stored events after this one first (`Last-Event-ID` or
    /// `?after=`); `None`: only events received from now on.
    pub after: Option<EventId>,
    /// Only events whose type matches (destination filter syntax).
    pub type_pattern: Option<String>,
    /// What drops the connection of a client that stopped reading.
    pub on_stall: Option<OnStall>,
}

/// The receiving end of an open stream: the response reads it.
pub type EventStream = mpsc::Receiver<StreamItem>;

/// Ids below this have settled (see [`SETTLE`]).
fn horizon() -> u128 {
    crate::model::ids::ulid_floor(now_ms() - SETTLE.as_millis() as i64)
}

impl Ops {
    /// The hub that wakes this node's streams and closes them.
    pub fn stream_hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// Opens a live stream of a source's events (see the module
    /// documentation). Checks the scope, the pattern and that the source
    /// exists before answering, so errors are answered as such and not as
    /// a broken stream.
    pub async fn open_stream(
        &self,
        caller: &Caller,
        source_id: SourceId,
        request: StreamRequest,
    ) -> Result<EventStream, OpError> {
        caller.require(Scope::Read)?;
        let type_pattern = request.type_pattern.filter(|p| !p.is_empty());
        if type_pattern
            .as_ref()
            .is_some_and(|p| p.chars().count() > MAX_PATTERN)
        {
            return Err(OpError::BadRequest(format!(
                "type must be at most {MAX_PATTERN} characters"
            )));
        }
        self.store()
            .source(source_id)
            .await
            .map_err(|e| OpError::from_store(e, "source"))?;
        // Without a resume point, "live" starts at the settle horizon: an
        // event received just before the stream opened but not yet
        // committed is still sent.
        let cursor = match request.after {
            Some(id) => id.as_u128(),
            None => horizon().saturating_sub(1),
        };
        let idle = self.inner.config.server.idle_timeout;
        let heartbeat = HEARTBEAT.min(idle / 2);
        let (tx, rx) = mpsc::channel(BUFFER);
        let run = Run {
            ops: self.clone(),
            source_id,
            type_pattern,
            cursor,
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            stall: STALL.min(idle).max(Duration::from_secs(1)),
            on_stall: request.on_stall,
            tx,
        };
        tokio::spawn(run.run());
        Ok(rx)
    }
}

/// One stream's producer task.
struct Run {
    ops: Ops,
    source_id: SourceId,
    type_pattern: Option<String>,
    /// Every event id up to this one has been sent or passed over.
    cursor: u128,
    heartbeat: Duration,
    stall: Duration,
    on_stall: Option<OnStall>,
    tx: mpsc::Sender<StreamItem>,
}

/// Why a stream stops.
enum End {
    /// The client went away, stalled, or the source was deleted.
    Done,
}

impl Run {
    async fn run(mut self) {
        let mut committed = self.ops.inner.hub.committed.subscribe();
        let mut closing = self.ops.inner.hub.closing.subscribe();
        let mut last_write = Instant::now();
        loop {
            if *closing.borrow() {
                return;
            }
            match self.send_settled(&mut last_write).await {
                Ok(true) => continue, // a full page: more may be waiting
                Ok(false) => {}
                Err(End::Done) => return,
            }
            // Wait for the next look: the poll, or an event committed on
            // this node once it has settled. Heartbeats meanwhile.
            let mut next_look = Instant::now() + POLL;
            let mut listening = true;
            loop {
                let beat_at = last_write + self.heartbeat;
                tokio::select! {
                    () = tokio::time::sleep_until(next_look) => break,
                    () = tokio::time::sleep_until(beat_at) => {
                        if self.send(StreamItem::Heartbeat).await.is_err() {
                            return;
                        }
                        last_write = Instant::now();
                    }
                    changed = committed.changed(), if listening => {
                        listening = false;
                        if changed.is_ok() {
                            // The new id is about now: it settles after SETTLE.
                            let settled = Instant::now() + SETTLE + Duration::from_millis(20);
                            next_look = next_look.min(settled);
                        }
                    }
                    _ = closing.changed() => return,
                    () = self.tx.closed() => return,
                }
            }
        }
    }

    /// Sends the settled events after the cursor, one page; answers
    /// whether the page was full (look again at once).
    async fn send_settled(&mut self, last_write: &mut Instant) -> Result<bool, End> {
        let before = horizon();
        let store = self.ops.store().clone();
        let page = match store
            .events_after(
                self.source_id,
                self.cursor,
                before,
                self.type_pattern.clone(),
                PAGE,
            )
            .await
        {
            Ok(page) => page,
            Err(StoreError::NotFound) => return Err(End::Done),
            Err(e) => {
                // Storage hiccup: keep the stream, look again later.
                tracing::warn!(error = %e, "live stream cannot read events; will retry");
                return Ok(false);
            }
        };
        for id in page.items {
            match store.event_detail(self.source_id, id).await {
                Ok((summary, event, deliveries)) => {
                    let item = StreamItem::Event {
                        source_id: self.source_id,
                        id,
                        detail: Box::new(EventDetail {
                            summary,
                            event,
                            deliveries,
                        }),
                    };
                    self.send(item).await?;
                    *last_write = Instant::now();
                }
                // Removed by retention between the two reads: nothing to send.
                Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "live stream cannot read an event; will retry");
                    return Ok(false);
                }
            }
            self.cursor = id.as_u128();
        }
        match page.next {
            Some(next) => {
                self.cursor = self.cursor.max(next);
                Ok(true)
            }
            None => {
                // The whole range below the horizon has been examined.
                self.cursor = self.cursor.max(before.saturating_sub(1));
                Ok(false)
            }
        }
    }

    /// Hands one item to the response; a client that takes nothing for
    /// the stall bound (or has gone) ends the stream and drops its connection.
    async fn send(&mut self, item: StreamItem) -> Result<(), End> {
        match self.tx.send_timeout(item, self.stall).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::info!("dropping a live stream whose client stopped reading");
                if let Some(drop_connection) = self.on_stall.take() {
                    drop_connection();
                }
                Err(End::Done)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Done),
        }
    }
}
