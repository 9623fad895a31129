-- The audit log (SPEC §15): who changed what, written in the same
-- transaction as the change. `entry` is the whole entry as JSON; the other
-- columns exist for the list's filters and for retention.
CREATE TABLE audit_log (
    id         uuid PRIMARY KEY,
    at_ms      bigint NOT NULL,
    actor_key  text,
    actor_name text NOT NULL,
    action     text NOT NULL,
    entry      text NOT NULL
);
CREATE INDEX audit_log_at_ms ON audit_log (at_ms);

-- The durable queue of alerts to `alerts.url` (SPEC §15); `record` is
-- the queued alert as JSON.
CREATE TABLE alerts (
    id              uuid PRIMARY KEY,
    next_attempt_ms bigint NOT NULL,
    record          text NOT NULL
);

-- The dashboard overview's counters, one row per minute (SPEC §15);
-- `record` is the minute's counts as JSON. Several nodes add into a row.
CREATE TABLE minute_stats (
    minute bigint PRIMARY KEY,
    record text NOT NULL
);
