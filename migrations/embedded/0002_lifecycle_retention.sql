-- Tenant suspension, lookups by correlation id, and the indexes the
-- retention sweep deletes expired claims by (the same TTLs as ScyllaDB's).
ALTER TABLE tenants ADD COLUMN suspended TEXT;
CREATE INDEX IF NOT EXISTS history_by_correlation ON enhancement_history (tenant_id, correlation_id);
CREATE INDEX IF NOT EXISTS webhook_dedup_by_age ON webhook_dedup (created_at_ms);
CREATE INDEX IF NOT EXISTS event_dedup_by_age ON event_dedup (created_at_ms);
CREATE INDEX IF NOT EXISTS note_idempotency_by_age ON note_idempotency (updated_at_ms);
