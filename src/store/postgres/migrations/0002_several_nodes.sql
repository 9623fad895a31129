-- Several Krafter nodes on one database (SPEC §12).

-- The database's clock, in Unix ms: leases compare times written by
-- different nodes, whose clocks may disagree.
CREATE FUNCTION krafter_now_ms() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- One row: a value sealed with the secrets key of the node that started
-- first. A node whose key cannot open it refuses to start, instead of
-- failing every signature later.
CREATE TABLE secrets_check (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sealed    bytea NOT NULL
);

-- Which node runs each destination's deliveries. A node renews its leases
-- well within `delivery.lease_ttl`; another takes a lease over only once
-- it has expired, and the epoch goes up on every change of owner, so an
-- attempt finished by the previous owner is not recorded (fencing). A
-- released lease keeps its row (expired), so epochs never repeat.
CREATE TABLE lane_leases (
    destination_id uuid PRIMARY KEY,
    owner          uuid NOT NULL,
    epoch          bigint NOT NULL,
    expires_at_ms  bigint NOT NULL
);

-- Background duties one node at a time performs (retention).
CREATE TABLE duty_leases (
    name          text PRIMARY KEY,
    owner         uuid NOT NULL,
    expires_at_ms bigint NOT NULL
);

-- The nodes alive (each renews its row with its leases), so that each
-- claims a fair share of the lanes instead of the first one taking all.
CREATE TABLE nodes (
    id         uuid PRIMARY KEY,
    seen_at_ms bigint NOT NULL
);
