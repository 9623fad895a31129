-- The ingest span's W3C trace context, kept with the event (SPEC §15
-- `telemetry.otlp_endpoint`): every delivery attempt of the event, on any
-- node and after any restart, joins the trace of the ingest that stored
-- it. Version-00 `traceparent` text ("00-<trace id>-<span id>-<flags>");
-- NULL when tracing was off, for test events, and for every event stored
-- before this migration.
ALTER TABLE events ADD COLUMN traceparent text;
