-- New reservations stored without looking for them first.
--
-- Since 0004 a batch of new, distinct ids is stored by one plain INSERT,
-- but deciding that it was one cost a probe of the primary key for every
-- row, and a count of the ids, before the INSERT made the same checks again
-- (the primary key refuses a stored id, or an id twice). A batch whose rows
-- are all at version 1, which is what a create sends and so nearly all of
-- a drain or a stream of bookings, now goes straight to the INSERT. If the
-- key refuses a row (a batch sent again after a lost answer, a client retry
-- stored meanwhile by another node, an id twice), the INSERT's work is
-- rolled back with its subtransaction and the general statement of 0003
-- stores the batch, as it did for every batch the probe found not new. A
-- batch with later versions (cancellations, rejections sent back) is
-- probed first, as before: it usually holds known ids, and a failed INSERT
-- would be wasted work.
--
-- The unique violation used to be raised again as a serialization failure,
-- so the node retried the batch. The general statement now handles it in
-- the same call: it starts after the INSERT failed, so its snapshot has the
-- row that made it fail (READ COMMITTED; PL/pgSQL takes a snapshot per
-- statement), and it still refuses to guess when a row appears under it.
--
-- The rest is 0004's function unchanged; 0005's setting is repeated, as the
-- SET clause is part of the definition.
--
-- Measured: see BENCHMARKS.md (psql harness, 60 batches of 1,000 new rows).

CREATE OR REPLACE FUNCTION reservoir_apply_rows(node text, resource_rows jsonb,
    ids uuid[], resource_ids uuid[], user_ids text[], starts bigint[], ends bigint[], parties integer[],
    statuses text[], versions bigint[], notes text[], metadata text[], hashes text[],
    created bigint[], updated bigint[])
RETURNS TABLE (kind text, id uuid, status text, version bigint, reason text)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    n           integer := coalesce(cardinality(ids), 0);
    -- The outcome of each row, in batch order.
    out_id      uuid[];
    out_status  text[];
    out_version bigint[];
    out_reason  text[];
    -- The checked rows, in batch order.
    chk_id      uuid[];
    chk_res     uuid[];
    chk_start   timestamptz[];
    chk_end     timestamptz[];
    chk_party   integer[];
    chk_version bigint[];
    -- Resources over capacity somewhere once every checked row is stored.
    hot         uuid[];
    -- Checked rows rejected by the one-by-one pass.
    rej_id      uuid[] := '{}';
    rej_version bigint[] := '{}';
    rej_reason  text[] := '{}';
    -- This transaction's id, as the change stamp stores it.
    txid        bigint := pg_current_xact_id()::text::bigint;
    complete    boolean;
    -- Every row is new and no id comes twice: the common case of a drain.
    fresh       boolean;
    i           integer;
    cap         integer;
    held        bigint;
    reach       bigint;
BEGIN
    -- Stamps the rows this batch writes with the node (see the trigger).
    PERFORM set_config('reservoir.node', node, true);
    -- Delivered at commit: wakes the other nodes' change feeds at once.
    PERFORM pg_notify('reservoir_changes', node);

    IF resource_rows IS NOT NULL AND jsonb_array_length(resource_rows) > 0 THEN
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
    END IF;

    IF n = 0 THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM unnest(ARRAY[cardinality(resource_ids), cardinality(user_ids), cardinality(starts),
                       cardinality(ends), cardinality(parties), cardinality(statuses), cardinality(versions),
                       cardinality(notes), cardinality(metadata), cardinality(hashes), cardinality(created),
                       cardinality(updated)]) AS c(len)
               WHERE c.len IS DISTINCT FROM n) THEN
        RAISE EXCEPTION 'reservoir_apply_rows: the column arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The same keys as 0001 and 0002 (the hash of the id's text), taken in
    -- the same order, in one statement: the lock calls run after the sort
    -- (a volatile function in the select list is evaluated after ORDER BY).
    PERFORM pg_advisory_xact_lock(keys.k)
    FROM (SELECT DISTINCT hashtextextended(r::text, 0) AS k FROM unnest(resource_ids) AS r) AS keys
    ORDER BY keys.k;

    -- The fast path: a batch of new reservations only (what a drain and a
    -- stream of bookings send) is stored by one plain INSERT, and each row's
    -- outcome is the row as sent. Known ids, or an id twice, take the general
    -- statement below, which needs the stored rows and one row per id. A
    -- batch of first versions is tried as new: the primary key decides. Any
    -- other batch is probed first (one lookup per row, after the locks are
    -- held, as the general statement runs), as it usually holds known ids.
    IF 1 = ALL (versions) THEN
        fresh := true;
    ELSE
        fresh := NOT EXISTS (SELECT FROM reservations AS c WHERE c.id = ANY (ids))
                 AND NOT EXISTS (SELECT FROM unnest(ids) AS d(id) GROUP BY d.id HAVING count(*) > 1);
    END IF;

    IF fresh THEN
        BEGIN
            INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, version,
                                      request_hash, notes, metadata, origin_node, created_at, updated_at,
                                      change_txid, change_seq, changed_by)
            SELECT x.id, x.resource_id, x.user_id,
                   'epoch'::timestamptz + x.starts_at * interval '1 microsecond',
                   'epoch'::timestamptz + x.ends_at * interval '1 microsecond',
                   x.party_size, x.status, x.version, x.request_hash, x.notes, x.metadata::jsonb, node,
                   'epoch'::timestamptz + x.created_at * interval '1 microsecond',
                   'epoch'::timestamptz + x.updated_at * interval '1 microsecond',
                   txid, nextval('reservoir_change_seq'), node
            FROM unnest(ids, resource_ids, user_ids, starts, ends, parties, statuses, versions, notes, metadata,
                        hashes, created, updated)
                 WITH ORDINALITY AS x(id, resource_id, user_id, starts_at, ends_at, party_size, status, version,
                     notes, metadata, request_hash, created_at, updated_at, ord)
            ORDER BY x.ord;
        EXCEPTION WHEN unique_violation THEN
            -- A stored id (a batch sent again, a client retry stored by
            -- another node, one stored after the probe) or an id twice.
            -- Everything the INSERT did is undone; the general statement
            -- stores the batch.
            fresh := false;
        END;
    END IF;

    IF fresh THEN
        out_id := ids;
        out_status := statuses;
        out_version := versions;
        out_reason := array_fill(NULL::text, ARRAY[n]);
        SELECT array_agg(c.id ORDER BY c.ord), array_agg(c.resource_id ORDER BY c.ord),
               array_agg('epoch'::timestamptz + c.starts_at * interval '1 microsecond' ORDER BY c.ord),
               array_agg('epoch'::timestamptz + c.ends_at * interval '1 microsecond' ORDER BY c.ord),
               array_agg(c.party_size ORDER BY c.ord), array_agg(c.version ORDER BY c.ord)
        INTO chk_id, chk_res, chk_start, chk_end, chk_party, chk_version
        FROM unnest(ids, resource_ids, starts, ends, parties, statuses, versions)
             WITH ORDINALITY AS c(id, resource_id, starts_at, ends_at, party_size, status, version, ord)
        WHERE c.status = 'confirmed';
    ELSE
        -- One statement stores the batch. It starts after the locks are held, so
        -- its snapshot has every batch that held them before.
        WITH input AS (
            SELECT x.*
            FROM unnest(ids, resource_ids, user_ids, starts, ends, parties, statuses, versions, notes, metadata,
                        hashes, created, updated)
                 WITH ORDINALITY AS x(id, resource_id, user_id, starts_at, ends_at, party_size, status, version,
                     notes, metadata, request_hash, created_at, updated_at, ord)
        ),
        -- One row per id (a statement may write a row only once): the newest
        -- version, the first sent among equal ones.
        latest AS (
            SELECT DISTINCT ON (i.id)
                   i.id, i.resource_id, i.user_id,
                   'epoch'::timestamptz + i.starts_at * interval '1 microsecond' AS starts_at,
                   'epoch'::timestamptz + i.ends_at * interval '1 microsecond' AS ends_at,
                   i.party_size, i.status, i.version, i.notes, i.metadata::jsonb AS metadata, i.request_hash,
                   'epoch'::timestamptz + i.created_at * interval '1 microsecond' AS created_at,
                   'epoch'::timestamptz + i.updated_at * interval '1 microsecond' AS updated_at, i.ord
            FROM input AS i
            ORDER BY i.id, i.version DESC, i.ord
        ),
        inserted AS (
            INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, version,
                                      request_hash, notes, metadata, origin_node, created_at, updated_at,
                                      change_txid, change_seq, changed_by)
            SELECT l.id, l.resource_id, l.user_id, l.starts_at, l.ends_at, l.party_size, l.status, l.version,
                   l.request_hash, l.notes, l.metadata, node, l.created_at, l.updated_at,
                   txid, nextval('reservoir_change_seq'), node
            FROM latest AS l
            ORDER BY l.ord
            ON CONFLICT ON CONSTRAINT reservations_pkey DO NOTHING
            RETURNING id
        ),
        known AS (
            SELECT l.*, c.version < l.version AS applied,
                   CASE WHEN c.version >= l.version THEN c.status
                        WHEN c.status = 'rejected' THEN 'rejected'
                        ELSE l.status END AS new_status,
                   greatest(c.version, l.version) AS new_version,
                   CASE WHEN c.version >= l.version OR c.status = 'rejected' THEN c.reject_reason END AS new_reason,
                   c.version < l.version AND l.status = 'confirmed'
                       AND (c.status = 'cancelled'
                            OR (c.status = 'confirmed' AND (c.starts_at <> l.starts_at OR c.ends_at <> l.ends_at
                                                            OR c.party_size < l.party_size))) AS checked
            FROM latest AS l
            JOIN reservations AS c ON c.id = l.id
            WHERE l.id NOT IN (SELECT n.id FROM inserted AS n)
        ),
        updated AS (
            UPDATE reservations AS s
            SET starts_at = k.starts_at, ends_at = k.ends_at, party_size = k.party_size, status = k.new_status,
                version = k.new_version, reject_reason = k.new_reason, notes = k.notes, metadata = k.metadata,
                updated_at = k.updated_at, synced_at = now(),
                change_txid = txid, change_seq = nextval('reservoir_change_seq'), changed_by = node
            FROM known AS k
            WHERE s.id = k.id AND k.applied AND s.version < k.version
        ),
        plan AS (
            SELECT l.id, l.resource_id, l.starts_at, l.ends_at, l.party_size, l.version, l.ord,
                   l.status AS new_status, l.version AS new_version, NULL::text AS new_reason,
                   l.status = 'confirmed' AS checked
            FROM latest AS l JOIN inserted AS n ON n.id = l.id
            UNION ALL
            SELECT k.id, k.resource_id, k.starts_at, k.ends_at, k.party_size, k.version, k.ord,
                   k.new_status, k.new_version, k.new_reason, k.checked
            FROM known AS k
        )
        SELECT o.ids, o.statuses, o.versions, o.reasons,
               k.ids, k.resources, k.starts, k.ends, k.parties, k.versions,
               (SELECT count(*) FROM plan) = (SELECT count(*) FROM latest)
        INTO out_id, out_status, out_version, out_reason,
             chk_id, chk_res, chk_start, chk_end, chk_party, chk_version, complete
        FROM (SELECT array_agg(i.id ORDER BY i.ord) AS ids,
                     array_agg(p.new_status ORDER BY i.ord) AS statuses,
                     array_agg(p.new_version ORDER BY i.ord) AS versions,
                     array_agg(p.new_reason ORDER BY i.ord) AS reasons
              FROM input AS i JOIN plan AS p ON p.id = i.id) AS o,
             (SELECT array_agg(p.id ORDER BY p.ord) AS ids,
                     array_agg(p.resource_id ORDER BY p.ord) AS resources,
                     array_agg(p.starts_at ORDER BY p.ord) AS starts,
                     array_agg(p.ends_at ORDER BY p.ord) AS ends,
                     array_agg(p.party_size ORDER BY p.ord) AS parties,
                     array_agg(p.version ORDER BY p.ord) AS versions
              FROM plan AS p WHERE p.checked) AS k;

        IF NOT complete THEN
            RAISE EXCEPTION 'a reservation of this batch was written concurrently; retry the batch'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    IF chk_id IS NOT NULL THEN
        -- As 0002: the resources whose load exceeds their capacity at some
        -- instant that a checked row covers. The holds overlapping a checked
        -- row [s, e) are those starting in [s - longest, e) that end after s.
        SELECT array_agg(DISTINCT l.resource_id) INTO hot
        FROM (
            SELECT ev.resource_id, ev.capacity,
                   sum(ev.delta) OVER (PARTITION BY ev.resource_id ORDER BY ev.at, ev.delta
                                       ROWS UNBOUNDED PRECEDING) AS load
            FROM (
                SELECT DISTINCT h.id, h.resource_id, h.starts_at, h.ends_at, h.party_size, r.capacity
                FROM unnest(chk_res, chk_start, chk_end) AS c(resource_id, starts_at, ends_at)
                JOIN resources AS r ON r.id = c.resource_id
                LEFT JOIN reservoir_spans AS sp ON sp.resource_id = c.resource_id
                CROSS JOIN LATERAL (
                    SELECT o.id, o.resource_id, o.starts_at, o.ends_at, o.party_size
                    FROM reservations AS o
                    WHERE o.resource_id = c.resource_id AND o.status = 'confirmed'
                      AND o.starts_at < c.ends_at
                      AND o.starts_at >= coalesce(c.starts_at - sp.longest * interval '1 microsecond',
                                                  '-infinity'::timestamptz)
                      AND o.ends_at > c.starts_at
                    OFFSET 0
                ) AS h
            ) AS h
            CROSS JOIN LATERAL (VALUES (h.resource_id, h.capacity, h.starts_at, h.party_size),
                                       (h.resource_id, h.capacity, h.ends_at, -h.party_size))
                AS ev(resource_id, capacity, at, delta)
        ) AS l
        WHERE l.load > l.capacity;
    END IF;

    IF hot IS NOT NULL THEN
        FOR i IN 1 .. array_length(chk_id, 1) LOOP
            CONTINUE WHEN NOT chk_res[i] = ANY (hot);
            SELECT c.capacity INTO cap FROM resources AS c WHERE c.id = chk_res[i];
            SELECT sp.longest INTO reach FROM reservoir_spans AS sp WHERE sp.resource_id = chk_res[i];
            SELECT coalesce(max(load), 0) INTO held FROM (
                SELECT sum(events.delta) OVER (ORDER BY events.at, events.delta ROWS UNBOUNDED PRECEDING) AS load
                FROM (
                    SELECT greatest(h.starts_at, chk_start[i]) AS held_from, h.ends_at AS held_to,
                           h.party_size AS seats
                    FROM reservations AS h
                    WHERE h.resource_id = chk_res[i] AND h.status = 'confirmed'
                      AND h.starts_at < chk_end[i]
                      AND h.starts_at >= coalesce(chk_start[i] - reach * interval '1 microsecond',
                                                  '-infinity'::timestamptz)
                      AND h.ends_at > chk_start[i]
                      AND h.id <> ALL (chk_id[i:])
                ) AS holds
                CROSS JOIN LATERAL (VALUES (holds.held_from, holds.seats), (holds.held_to, -holds.seats))
                    AS events(at, delta)
            ) AS loads;
            IF held + chk_party[i] > cap THEN
                UPDATE reservations AS s
                SET status = 'rejected', version = chk_version[i] + 1,
                    reject_reason = format('resource %s (capacity %s) already holds %s at that time; %s more do not fit',
                                           chk_res[i], cap, held, chk_party[i])
                WHERE s.id = chk_id[i];
                rej_id := rej_id || chk_id[i];
                rej_version := rej_version || (chk_version[i] + 1);
                rej_reason := rej_reason || format('resource %s (capacity %s) already holds %s at that time; %s more do not fit',
                                                   chk_res[i], cap, held, chk_party[i]);
            END IF;
        END LOOP;
    END IF;

    RETURN QUERY
    SELECT 'reservation'::text, o.id, coalesce(j.status, o.status), coalesce(j.version, o.version),
           CASE WHEN j.id IS NULL THEN o.reason ELSE j.reason END
    FROM unnest(out_id, out_status, out_version, out_reason) WITH ORDINALITY
        AS o(id, status, version, reason, ord)
    LEFT JOIN (SELECT r.id, 'rejected'::text AS status, r.version, r.reason
               FROM unnest(rej_id, rej_version, rej_reason) AS r(id, version, reason)) AS j
        ON j.id = o.id
    ORDER BY o.ord;
END;
$$;
