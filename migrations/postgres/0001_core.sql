-- The shared system of record. Every node syncs its local writes here; this
-- database settles conflicts between nodes (two nodes filling the last seat).
-- Columns carry the API's field names so ops can query them directly.

CREATE TABLE resources (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    capacity      integer NOT NULL CHECK (capacity >= 1),
    timezone      text NOT NULL,
    slot_minutes  integer NOT NULL CHECK (slot_minutes BETWEEN 5 AND 1440),
    opening_hours jsonb,
    version       bigint NOT NULL,
    origin_node   text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    id            uuid PRIMARY KEY,
    resource_id   uuid NOT NULL REFERENCES resources (id),
    user_id       text NOT NULL,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    party_size    integer NOT NULL CHECK (party_size >= 1),
    status        text NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'rejected')),
    version       bigint NOT NULL,
    reject_reason text,
    request_hash  text,                     -- fingerprint of the create request (client-id retries on any node)
    notes         text,
    metadata      jsonb,
    origin_node   text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    synced_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

-- API keys, shared so that a key issued on one node works on all of them.
-- Only SHA-256 hashes are stored, as on the nodes.
CREATE TABLE api_keys (
    hash        bytea PRIMARY KEY,
    user_id     text NOT NULL,
    role        text NOT NULL CHECK (role IN ('user', 'admin')),
    origin_node text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The change feed (Postgres -> every node). Each row version is stamped with
-- the id of the transaction that wrote it and a sequence number. A node reads
-- rows after its cursor (change_txid, change_seq) but only those whose
-- transaction id is below the oldest transaction still running
-- (pg_snapshot_xmin): every such transaction has finished, so no row can
-- later appear behind the cursor -- the watermark gap of plain bigserial or
-- timestamp cursors, where a transaction that took a lower number commits
-- after a higher one was already read, cannot happen.
CREATE SEQUENCE reservoir_change_seq;

ALTER TABLE resources
    ADD COLUMN change_txid bigint NOT NULL DEFAULT 0,
    ADD COLUMN change_seq  bigint NOT NULL DEFAULT 0,
    ADD COLUMN changed_by  text NOT NULL DEFAULT '';
ALTER TABLE reservations
    ADD COLUMN change_txid bigint NOT NULL DEFAULT 0,
    ADD COLUMN change_seq  bigint NOT NULL DEFAULT 0,
    ADD COLUMN changed_by  text NOT NULL DEFAULT '';

CREATE FUNCTION reservoir_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_txid := pg_current_xact_id()::text::bigint;
    NEW.change_seq := nextval('reservoir_change_seq');
    -- Set by reservoir_apply_batch; empty for changes made by hand.
    NEW.changed_by := coalesce(current_setting('reservoir.node', true), '');
    RETURN NEW;
END;
$$;
CREATE TRIGGER resources_change BEFORE INSERT OR UPDATE ON resources
    FOR EACH ROW EXECUTE FUNCTION reservoir_stamp_change();
CREATE TRIGGER reservations_change BEFORE INSERT OR UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservoir_stamp_change();
CREATE INDEX resources_changes ON resources (change_txid, change_seq);
CREATE INDEX reservations_changes ON reservations (change_txid, change_seq);

-- The global capacity check reads confirmed holds of one resource by time.
CREATE INDEX reservations_holds ON reservations (resource_id, starts_at)
    INCLUDE (ends_at, party_size) WHERE status = 'confirmed';
CREATE INDEX reservations_by_user ON reservations (user_id, starts_at);

-- Instants travel as integer microseconds since the Unix epoch (exact, unlike
-- a float of seconds).
CREATE FUNCTION reservoir_instant(micros bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN 'epoch'::timestamptz + micros * interval '1 microsecond';

-- Applies one batch from a node in one round trip.
--
-- * Resources are upserted by id; only a newer version replaces a stored one.
-- * Reservations: the resources they touch are locked with transaction-level
--   advisory locks, in the order of the lock keys, so two nodes' batches can
--   never deadlock. Then each reservation, in batch order:
--     - a version not newer than the stored one changes nothing (re-sent
--       batches are harmless, an old version never overwrites a newer one);
--     - a confirmed reservation that is new, moved, enlarged or re-confirmed is
--       checked against the confirmed holds already stored: if it would
--       overbook the resource at any instant it is stored as `rejected`, at
--       version + 1, with a reason. First to arrive wins;
--     - once rejected here, a reservation stays rejected.
-- Returns the stored outcome of every reservation in the batch.
CREATE FUNCTION reservoir_apply_batch(node text, resource_rows jsonb, reservation_rows jsonb)
RETURNS TABLE (kind text, id uuid, status text, version bigint, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lock_key     bigint;
    r            record;
    cur          record;
    cap          integer;
    held         bigint;
    new_status   text;
    new_version  bigint;
    new_reason   text;
BEGIN
    -- Stamps the rows this batch writes with the node (see the trigger).
    PERFORM set_config('reservoir.node', node, true);
    -- Delivered at commit: wakes the other nodes' change feeds at once.
    PERFORM pg_notify('reservoir_changes', node);

    INSERT INTO resources AS s (id, name, capacity, timezone, slot_minutes, opening_hours, version,
                                origin_node, created_at, updated_at)
    SELECT x.id, x.name, x.capacity, x.timezone, x.slot_minutes, x.opening_hours, x.version, node,
           reservoir_instant(x.created_at), reservoir_instant(x.updated_at)
    FROM jsonb_to_recordset(resource_rows) AS x(id uuid, name text, capacity integer, timezone text,
         slot_minutes integer, opening_hours jsonb, version bigint, created_at bigint, updated_at bigint)
    ON CONFLICT ON CONSTRAINT resources_pkey DO UPDATE
        SET name = excluded.name, capacity = excluded.capacity, timezone = excluded.timezone,
            slot_minutes = excluded.slot_minutes, opening_hours = excluded.opening_hours,
            version = excluded.version, updated_at = excluded.updated_at, synced_at = now()
        WHERE s.version < excluded.version;

    FOR lock_key IN
        SELECT DISTINCT hashtextextended(e ->> 'resource_id', 0) AS k
        FROM jsonb_array_elements(reservation_rows) AS e
        ORDER BY k
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;

    FOR r IN
        SELECT x.*
        FROM jsonb_array_elements(reservation_rows) WITH ORDINALITY AS e(doc, ord),
             jsonb_to_record(e.doc) AS x(id uuid, resource_id uuid, user_id text, starts_at bigint,
                 ends_at bigint, party_size integer, status text, version bigint, notes text,
                 metadata jsonb, request_hash text, created_at bigint, updated_at bigint)
        ORDER BY e.ord
    LOOP
        SELECT s.version, s.status, s.starts_at, s.ends_at, s.party_size, s.reject_reason
        INTO cur FROM reservations AS s WHERE s.id = r.id FOR UPDATE;

        IF FOUND AND cur.version >= r.version THEN
            kind := 'reservation'; id := r.id; status := cur.status;
            version := cur.version; reason := cur.reject_reason;
            RETURN NEXT;
            CONTINUE;
        END IF;

        new_status := r.status;
        new_version := r.version;
        new_reason := NULL;
        IF FOUND AND cur.status = 'rejected' THEN
            new_status := 'rejected';
            new_reason := cur.reject_reason;
        ELSIF r.status = 'confirmed' AND (NOT FOUND
                OR cur.status <> 'confirmed'
                OR cur.starts_at <> reservoir_instant(r.starts_at)
                OR cur.ends_at <> reservoir_instant(r.ends_at)
                OR cur.party_size < r.party_size) THEN
            SELECT c.capacity INTO cap FROM resources AS c WHERE c.id = r.resource_id;
            -- An unknown resource fails the foreign key below: a permanent
            -- error the node dead-letters.
            IF FOUND THEN
                -- The busiest instant of [starts_at, ends_at) among the other
                -- confirmed holds: a sweep over start (+) and end (-) events,
                -- ends first at equal instants (ranges are half-open).
                SELECT coalesce(max(load), 0) INTO held FROM (
                    SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING) AS load
                    FROM (
                        SELECT greatest(h.starts_at, reservoir_instant(r.starts_at)) AS at, h.party_size AS delta
                        FROM reservations AS h
                        WHERE h.resource_id = r.resource_id AND h.status = 'confirmed' AND h.id <> r.id
                          AND h.starts_at < reservoir_instant(r.ends_at)
                          AND h.ends_at > reservoir_instant(r.starts_at)
                        UNION ALL
                        SELECT h.ends_at, -h.party_size
                        FROM reservations AS h
                        WHERE h.resource_id = r.resource_id AND h.status = 'confirmed' AND h.id <> r.id
                          AND h.starts_at < reservoir_instant(r.ends_at)
                          AND h.ends_at > reservoir_instant(r.starts_at)
                    ) AS events
                ) AS loads;
                IF held + r.party_size > cap THEN
                    new_status := 'rejected';
                    new_version := r.version + 1;
                    new_reason := format('resource %s (capacity %s) already holds %s at that time; %s more do not fit',
                                         r.resource_id, cap, held, r.party_size);
                END IF;
            END IF;
        END IF;

        INSERT INTO reservations AS s (id, resource_id, user_id, starts_at, ends_at, party_size, status,
                                       version, reject_reason, request_hash, notes, metadata, origin_node,
                                       created_at, updated_at)
        VALUES (r.id, r.resource_id, r.user_id, reservoir_instant(r.starts_at), reservoir_instant(r.ends_at),
                r.party_size, new_status, new_version, new_reason, r.request_hash, r.notes, r.metadata, node,
                reservoir_instant(r.created_at), reservoir_instant(r.updated_at))
        ON CONFLICT ON CONSTRAINT reservations_pkey DO UPDATE
            SET starts_at = excluded.starts_at, ends_at = excluded.ends_at, party_size = excluded.party_size,
                status = excluded.status, version = excluded.version, reject_reason = excluded.reject_reason,
                notes = excluded.notes, metadata = excluded.metadata, updated_at = excluded.updated_at,
                synced_at = now()
            WHERE s.version < excluded.version;

        kind := 'reservation'; id := r.id; status := new_status;
        version := new_version; reason := new_reason;
        RETURN NEXT;
    END LOOP;
END;
$$;
