-- Plans of the apply that follow the size of the tables.
--
-- PL/pgSQL caches each statement's plan in the session, and after five calls
-- may keep a generic plan for good. A node's connections make their first
-- calls when `reservations` is empty, so a generic plan could read it with a
-- sequential scan, which stays cheap only while the table is small: nothing
-- replans it as the table grows, except new statistics (ANALYZE), and
-- autovacuum may be off or not have run yet. The check that a batch holds
-- only new ids then scanned the whole table on every call: 65 ms per call of
-- 10 rows once 200,000 rows had arrived, against 3.3 ms planned per call
-- (psql, 100 calls; BENCHMARKS.md, 2026-12-01 from 20:11 UTC). Seen at 2,000
-- creates/s with sync on: PostgreSQL used 0.7-0.8 of a core for what costs
-- 0.1 with current plans.
--
-- A custom plan for each call sees the table's current size (PostgreSQL
-- estimates it from the file even without statistics) and the arrays' real
-- lengths. The planning costs about 0.6 ms per call, within noise for
-- batches of 1,000 rows. Statement triggers fired by the apply run under the
-- same setting. A later CREATE OR REPLACE of the function must repeat it
-- (the SET clause is part of the definition); a test checks it.
ALTER FUNCTION reservoir_apply_rows(text, jsonb, uuid[], uuid[], text[], bigint[], bigint[], integer[],
                                    text[], bigint[], text[], text[], text[], bigint[], bigint[])
    SET plan_cache_mode = force_custom_plan;
