//! The tables the hot path writes — every ingest and every delivery
//! outcome — opened once per run of such writes in a batch.
//!
//! Opening a redb table looks it up in the table tree and closing it writes
//! its root back; done for each of the eight tables of every event and the
//! four of every outcome, that cost more than the inserts themselves. The
//! writer keeps one [`HotTables`] open across consecutive hot writes of a
//! batch and closes it before any other change, which then sees everything
//! they wrote.

use std::collections::HashMap;

use redb::{Table, WriteTransaction};

use super::tables::{
    ATTEMPTS, DEDUP, DELIVERIES, DESTINATIONS, DUE, EVENTS, EVENT_DELIVERIES, SOURCES,
    SOURCE_EVENTS,
};
use super::StoreError;
use crate::model::body_filter::Target;
use crate::model::ids::SourceId;

/// Open hot tables of one write transaction (see the module doc).
pub struct HotTables<'t> {
    pub(super) dedup: Table<'t, (u128, &'static str), u128>,
    pub(super) sources: Table<'t, u128, &'static [u8]>,
    pub(super) destinations: Table<'t, (u128, u128), &'static [u8]>,
    pub(super) events: Table<'t, u128, &'static [u8]>,
    pub(super) source_events: Table<'t, (u128, u128), &'static [u8]>,
    pub(super) deliveries: DeliveryTables<'t>,
    pub(super) attempts: Table<'t, (u128, u32), &'static [u8]>,
    /// Each source's enabled destinations, read (and their filters parsed)
    /// once for a run of ingests; a write to a destination through these
    /// tables forgets its source's.
    pub(super) fan_out: HashMap<SourceId, Vec<Target>>,
}

/// The tables a pending delivery lives in: its record, its queue entry
/// and — unless it is part of its event's first fan-out, whose ids are a
/// key range of `deliveries` already — its row in `by_event`
/// ([`EVENT_DELIVERIES`]).
pub struct DeliveryTables<'t> {
    pub(super) deliveries: Table<'t, u128, &'static [u8]>,
    pub(super) by_event: Table<'t, (u128, u128), ()>,
    pub(super) due: Table<'t, (u128, u64, u128), u128>,
}

impl<'t> DeliveryTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(DeliveryTables {
            deliveries: txn.open_table(DELIVERIES)?,
            by_event: txn.open_table(EVENT_DELIVERIES)?,
            due: txn.open_table(DUE)?,
        })
    }
}

impl<'t> HotTables<'t> {
    /// Opens the hot tables of `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(HotTables {
            dedup: txn.open_table(DEDUP)?,
            sources: txn.open_table(SOURCES)?,
            destinations: txn.open_table(DESTINATIONS)?,
            events: txn.open_table(EVENTS)?,
            source_events: txn.open_table(SOURCE_EVENTS)?,
            deliveries: DeliveryTables::open(txn)?,
            attempts: txn.open_table(ATTEMPTS)?,
            fan_out: HashMap::new(),
        })
    }
}
