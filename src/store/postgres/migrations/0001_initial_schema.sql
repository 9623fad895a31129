-- Krafter's PostgreSQL schema, version 1.
--
-- Ids are the ULIDs the API shows, stored as `uuid` (16 bytes, compared
-- bytewise, so `ORDER BY id` is the u128 order and keyset cursors are the
-- same values as on redb). Times are Unix milliseconds (`bigint`).
--
-- Rows the relay reads and writes on its hot paths (events, deliveries,
-- attempts, sessions, API keys) are plain columns. Configuration rows that
-- are read and changed whole by shared Rust code (sources, destinations,
-- replay jobs) keep their record as a versioned postcard blob in `record`,
-- with the columns that queries filter on beside it.
--
-- Strings that come from outside (an event's type and provider event id,
-- an API key's name) are `bytea` holding their UTF-8: PostgreSQL's `text`
-- cannot hold U+0000, which a JSON payload or a request may carry, and
-- every behaviour must be the same as on redb.

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    name          bytea NOT NULL,
    scopes        text[] NOT NULL,
    prefix        text NOT NULL,
    -- SHA-256 of the key; authentication is one lookup here.
    hash          bytea NOT NULL UNIQUE,
    created_at_ms bigint NOT NULL
);

-- Dashboard sessions by the SHA-256 of their id; revoking a key ends them.
CREATE TABLE dashboard_sessions (
    id_hash       bytea PRIMARY KEY,
    key_id        uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf          text NOT NULL,
    created_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);
CREATE INDEX dashboard_sessions_of_key ON dashboard_sessions (key_id, created_at_ms);

CREATE TABLE sources (
    id     uuid PRIMARY KEY,
    slug   text NOT NULL UNIQUE,
    record bytea NOT NULL
);

-- Deleting a source removes its destinations at once; its events and
-- deliveries are purged later, in short transactions.
CREATE TABLE destinations (
    source_id uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    id        uuid NOT NULL,
    enabled   boolean NOT NULL,
    record    bytea NOT NULL,
    PRIMARY KEY (source_id, id)
);

-- Events keyed by source first: a source's events in id (= time) order are
-- one index range (listing, retention). No foreign key to sources: a
-- deleted source's events are purged afterwards, in chunks.
CREATE TABLE events (
    source_id         uuid NOT NULL,
    id                uuid NOT NULL,
    received_at_ms    bigint NOT NULL,
    event_type        bytea NOT NULL,
    provider_event_id bytea,
    -- The provider event id when it de-duplicates (inbound events; test
    -- events have none).
    dedup_key         bytea,
    size_bytes        bigint NOT NULL,
    -- postcard of [(name, value bytes)].
    headers           bytea NOT NULL,
    body              bytea NOT NULL,
    PRIMARY KEY (source_id, id),
    UNIQUE (id)
);
CREATE UNIQUE INDEX events_dedup ON events (source_id, dedup_key) WHERE dedup_key IS NOT NULL;

-- status: 0 pending, 1 succeeded, 2 failed, 3 cancelled. A pending
-- delivery is queued under `due_ms` (the queue key, `next_attempt_ms`
-- clamped at 0); the due queue is the partial index on pending rows, one
-- range per destination, so a slow destination's backlog never sits in
-- front of another's.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    source_id       uuid NOT NULL,
    destination_id  uuid NOT NULL,
    status          smallint NOT NULL,
    attempts        integer NOT NULL,
    next_attempt_ms bigint,
    due_ms          bigint,
    created_at_ms   bigint NOT NULL,
    updated_at_ms   bigint NOT NULL,
    CHECK (status <> 0 OR due_ms IS NOT NULL)
);
CREATE INDEX deliveries_of_event ON deliveries (event_id);
CREATE INDEX deliveries_due ON deliveries (destination_id, due_ms, id) WHERE status = 0;

CREATE TABLE attempts (
    delivery_id      uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    started_at_ms    bigint NOT NULL,
    duration_ms      bigint NOT NULL,
    status_code      integer,
    -- Krafter's own words; a U+0000 in them is stored as U+FFFD.
    error_kind       text,
    error_message    text,
    response_snippet bytea NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- Bulk replay jobs, a source's in one range; no foreign key (a job of a
-- deleted source is marked cancelled, then purged with the orphans).
CREATE TABLE replays (
    source_id uuid NOT NULL,
    id        uuid NOT NULL,
    running   boolean NOT NULL,
    record    bytea NOT NULL,
    PRIMARY KEY (source_id, id)
);
CREATE INDEX replays_running ON replays (source_id, id) WHERE running;
