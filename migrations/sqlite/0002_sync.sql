-- Transactional outbox for the PostgreSQL sync: the writer adds a row in the
-- same transaction as every write; the sync task sends the entity's current
-- state and deletes the rows Postgres has acknowledged.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('resource', 'reservation')),
    entity_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL          -- unix microseconds
);

-- Writes Postgres refused for a permanent reason (bad data, a constraint):
-- kept for ops, out of the queue so the rows behind them keep flowing.
CREATE TABLE dead_letters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    error     TEXT NOT NULL,
    failed_at INTEGER NOT NULL
);

-- Small facts about this database, e.g. whether rows written before
-- Postgres was configured have been queued for it.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
