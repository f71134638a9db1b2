-- Embedded store (libSQL/SQLite). Every table is keyed by tenant first, as
-- the ScyllaDB tables are partitioned by tenant: no query reads across
-- tenants.
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    sdp_base_url TEXT NOT NULL,
    sdp_auth TEXT NOT NULL,
    sdp_token TEXT NOT NULL,
    webhook_secret TEXT NOT NULL,
    previous_webhook_secret TEXT,
    previous_valid_until_ms INTEGER NOT NULL DEFAULT 0,
    api_token_hash TEXT NOT NULL UNIQUE,
    requests_per_minute INTEGER NOT NULL,
    enabled_events TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS enhancement_history (
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT,
    error_message TEXT,
    failed_stage TEXT,
    subject TEXT,
    description TEXT,
    note_text TEXT,
    note_id TEXT,
    similar_tickets INTEGER NOT NULL DEFAULT 0,
    kb_articles INTEGER NOT NULL DEFAULT 0,
    ip_references INTEGER NOT NULL DEFAULT 0,
    nodes_success INTEGER NOT NULL DEFAULT 0,
    nodes_failed INTEGER NOT NULL DEFAULT 0,
    timings_json TEXT NOT NULL DEFAULT '{}',
    received_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX IF NOT EXISTS history_by_ticket ON enhancement_history (tenant_id, ticket_id);
CREATE INDEX IF NOT EXISTS history_by_time ON enhancement_history (tenant_id, completed_at_ms);

CREATE TABLE IF NOT EXISTS feedback (
    tenant_id TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    rating INTEGER NOT NULL,
    helpful INTEGER,
    comment TEXT,
    technician TEXT,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, feedback_id)
);
CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (tenant_id, created_at_ms);

CREATE TABLE IF NOT EXISTS note_idempotency (
    tenant_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    state TEXT NOT NULL,
    note_id TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, job_id)
);

CREATE TABLE IF NOT EXISTS webhook_dedup (
    tenant_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id)
);

CREATE TABLE IF NOT EXISTS event_dedup (
    tenant_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    event TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, ticket_id, event)
);
