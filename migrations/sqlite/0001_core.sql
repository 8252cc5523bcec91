-- Core schema of the local store. Instants are INTEGER microseconds since the
-- Unix epoch (UTC); ids are hyphenated UUID text so ops can read them.

CREATE TABLE api_keys (
    hash       BLOB PRIMARY KEY,           -- SHA-256 of the key; the key itself is never stored
    user_id    TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    bootstrap  INTEGER NOT NULL DEFAULT 0,  -- 1 for the generated admin key
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE resources (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    capacity      INTEGER NOT NULL CHECK (capacity >= 1),
    timezone      TEXT NOT NULL,
    slot_minutes  INTEGER NOT NULL CHECK (slot_minutes BETWEEN 5 AND 1440),
    opening_hours TEXT,                     -- JSON array, NULL = always open
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE reservations (
    id           TEXT NOT NULL PRIMARY KEY,
    resource_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL CHECK (ends_at > starts_at),
    party_size   INTEGER NOT NULL CHECK (party_size >= 1),
    status       TEXT NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'rejected')),
    version      INTEGER NOT NULL,
    sync_state   TEXT NOT NULL,
    notes        TEXT,
    metadata     TEXT,                      -- JSON object
    request_hash TEXT NOT NULL,             -- hex SHA-256 of the create request (client-id retries)
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Capacity checks and availability: the confirmed holds of one resource in a
-- starts_at range, answered from the index alone.
CREATE INDEX reservations_holds ON reservations (resource_id, starts_at, ends_at, party_size, id)
    WHERE status = 'confirmed';
-- Keyset pagination, ordered by (starts_at, id), with and without filters.
CREATE INDEX reservations_by_start ON reservations (starts_at, id);
CREATE INDEX reservations_by_resource ON reservations (resource_id, starts_at, id);
CREATE INDEX reservations_by_user ON reservations (user_id, starts_at, id);

-- Responses remembered for the Idempotency-Key header.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,             -- the key holder's user id
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    location     TEXT,
    etag         TEXT,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
