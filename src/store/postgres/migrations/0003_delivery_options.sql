-- Destination records are now written in record version 2 (per-destination
-- delivery options, SPEC §13). A release that only knows version 1 cannot
-- decode them: this migration exists so such a release refuses to start on
-- this database ("the database's schema is newer than this Krafter")
-- instead of failing on every destination a newer node has written.
-- Upgrade every node of a cluster together.
COMMENT ON TABLE destinations IS 'records in version 2 or later: delivery options (SPEC §13)';
