-- ServiceDesk Plus rate limit shared by every process that calls a
-- tenant's SDP: one row per tenant holding the theoretical arrival time
-- (epoch ms) of its next SDP call (GCRA), moved by compare-and-set.
-- Zoho OAuth credentials need no column: they are kept, sealed like the
-- token, in tenants.sdp_token of tenants whose sdp_auth is 'zoho-oauth'.
CREATE TABLE IF NOT EXISTS sdp_rate_limit (
    tenant_id TEXT PRIMARY KEY,
    tat_ms INTEGER NOT NULL
);
