-- Context search: a per-tenant inverted index (BM25 ranked in Rust, the
-- same code as the ScyllaDB store, see sinks/src/store/search.rs) over past
-- tickets (kind 'ticket') and imported knowledge-base articles (kind
-- 'article'), plus the tenant's imported asset inventory.
CREATE TABLE IF NOT EXISTS search_docs (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    extra TEXT NOT NULL,
    url TEXT,
    status TEXT,
    doc_len INTEGER NOT NULL,
    -- JSON array of the document's distinct terms: which postings a
    -- re-index must delete.
    terms_json TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, doc_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS search_postings (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    term TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    tf INTEGER NOT NULL,
    doc_len INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind, term, doc_id)
) WITHOUT ROWID;

-- Document count and total length per (tenant, kind), for BM25's idf and
-- average document length; kept in the same write as each document.
CREATE TABLE IF NOT EXISTS search_stats (
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    docs INTEGER NOT NULL,
    total_len INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, kind)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inventory_assets (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    ip TEXT,
    hostname TEXT,
    asset_type TEXT,
    owner TEXT,
    site TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;

-- Lower-cased IP, host name, short host name and asset name -> asset.
CREATE TABLE IF NOT EXISTS inventory_keys (
    tenant_id TEXT NOT NULL,
    lookup_key TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (tenant_id, lookup_key, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inventory_keys_by_name ON inventory_keys (tenant_id, name);
