-- The status CHECK of reservations as three comparisons instead of an IN
-- list. SQLite compiles `status IN ('confirmed', 'cancelled', 'rejected')`
-- (a constant list of more than two values) into a temporary b-tree that is
-- built anew each time a statement runs: every create and every cancel
-- opened a temporary database, created a table in it, inserted the three
-- values, probed it and closed it again. Under callgrind that was about a
-- fifth of the writer's instructions per create (committed one at a time)
-- and a third of the create itself; see BENCHMARKS.md. The comparisons
-- accept and refuse exactly the same values.
--
-- SQLite cannot ALTER a constraint. Its documented procedure for changing
-- CHECK constraints without rebuilding the table (https://www.sqlite.org/
-- lang_altertable.html, "Making Other Kinds Of Table Schema Changes") edits
-- the table's CREATE statement in sqlite_schema; the rows and their format do
-- not change, so it takes no time however many rows are stored. A table
-- rebuild would rewrite every row and index at the first start after an
-- upgrade.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql, 'CHECK (status IN (''confirmed'', ''cancelled'', ''rejected''))',
                       'CHECK (status = ''confirmed'' OR status = ''cancelled'' OR status = ''rejected'')')
WHERE type = 'table' AND name = 'reservations';
PRAGMA writable_schema = OFF;

-- Fails the migration (and rolls it back) unless the text was found and
-- replaced exactly once.
CREATE TEMP TABLE reservoir_migration_check (replaced INTEGER CHECK (replaced = 1));
INSERT INTO reservoir_migration_check
SELECT (length(sql) - length(replace(sql, 'status = ''cancelled''', ''))) / length('status = ''cancelled''')
FROM sqlite_schema WHERE type = 'table' AND name = 'reservations';
DROP TABLE reservoir_migration_check;

-- Any schema change bumps the schema cookie, which tells every connection to
-- read the schema again (the procedure's "increment the schema version"
-- step, without knowing the current number).
CREATE TABLE reservoir_schema_bump (x);
DROP TABLE reservoir_schema_bump;
