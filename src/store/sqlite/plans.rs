//! Query-plan checks: every hot query must be answered from an index, never a
//! full table scan, so latency stays flat as the table grows to millions.
//! The service keeps no planner statistics (`forget_planner_statistics` in
//! `sqlite/mod.rs`), so these plans, made without any, are the ones it runs.

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use sqlx::{Connection, SqlitePool, query_as};
    use uuid::Uuid;

    use crate::{
        config::Config,
        domain::reservation::Status,
        store::sqlite::{
            open,
            outbox::OUTBOX_RESERVATIONS,
            queries::HOLDS,
            reads::{ReservationCursor, ReservationFilter, list_query},
            writer::{ACK_SYNCED, LOCAL_VERSIONS},
        },
    };

    /// A migrated database, its read pool and the writer's connection.
    async fn database() -> (tempfile::TempDir, SqlitePool, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let (reads, write) = open(&Config::with_data_dir(dir.path())).await.unwrap();
        (dir, reads.pool().clone(), write)
    }

    async fn plan(pool: &SqlitePool, mut q: sqlx::QueryBuilder<'_, sqlx::Sqlite>) -> String {
        details(q.build_query_as().fetch_all(pool).await.unwrap())
    }

    /// The steps of an `EXPLAIN QUERY PLAN`, in one line.
    fn details(rows: Vec<(i64, i64, i64, String)>) -> String {
        rows.into_iter()
            .map(|r| r.3)
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// Every shape of filter a list can have, and the index it is built for.
    fn list_cases() -> Vec<(ReservationFilter, &'static str)> {
        let t: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let resource = Some(Uuid::nil());
        let user = || Some("alice".to_owned());
        vec![
            (ReservationFilter::default(), "reservations_by_start"),
            (
                ReservationFilter {
                    from: Some(t),
                    ..Default::default()
                },
                "reservations_by_start",
            ),
            (
                ReservationFilter {
                    from: Some(t),
                    to: Some(t),
                    ..Default::default()
                },
                "reservations_by_start",
            ),
            (
                ReservationFilter {
                    resource_id: resource,
                    ..Default::default()
                },
                "reservations_by_resource",
            ),
            (
                ReservationFilter {
                    resource_id: resource,
                    from: Some(t),
                    ..Default::default()
                },
                "reservations_by_resource",
            ),
            (
                ReservationFilter {
                    resource_id: resource,
                    status: Some(Status::Confirmed),
                    from: Some(t),
                    to: Some(t),
                    ..Default::default()
                },
                "reservations_by_resource",
            ),
            (
                ReservationFilter {
                    user_id: user(),
                    ..Default::default()
                },
                "reservations_by_user",
            ),
            (
                ReservationFilter {
                    user_id: user(),
                    from: Some(t),
                    ..Default::default()
                },
                "reservations_by_user",
            ),
        ]
    }

    /// Where a list page can start: the first page, and after a cursor.
    fn positions() -> [Option<ReservationCursor>; 2] {
        [
            None,
            Some(ReservationCursor {
                starts_at: 1,
                id: Uuid::nil(),
            }),
        ]
    }

    fn assert_indexed(plan: &str, index: &str) {
        assert!(
            plan.contains(&format!("USING INDEX {index}"))
                || plan.contains(&format!("USING COVERING INDEX {index}")),
            "expected {index} in plan: {plan}"
        );
        // An unfiltered first page walks the ordered index and stops at LIMIT;
        // anything else must SEARCH (seek) rather than SCAN.
        assert!(
            !plan.contains("SCAN reservations") || plan.contains("SCAN reservations USING"),
            "full scan in plan: {plan}"
        );
        assert!(
            !plan.contains("USE TEMP B-TREE FOR ORDER BY"),
            "sort step in plan: {plan}"
        );
    }

    #[tokio::test]
    async fn holds_are_read_from_the_resource_index_alone() {
        let (_dir, pool, _write) = database().await;
        let plan = details(
            query_as(&format!("EXPLAIN QUERY PLAN {HOLDS}"))
                .bind(Uuid::nil().to_string())
                .bind(0i64)
                .bind(1i64)
                .bind(1i64)
                .bind(None::<String>)
                .fetch_all(&pool)
                .await
                .unwrap(),
        );
        // Covering (no table seek per hold), and bounded on both sides of
        // starts_at, not just on the resource.
        assert!(
            plan.contains(
                "USING COVERING INDEX reservations_by_resource (resource_id=? AND starts_at>? AND starts_at<?)"
            ),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn every_list_filter_uses_an_ordered_index() {
        let (_dir, pool, _write) = database().await;
        for (filter, index) in &list_cases() {
            for after in &positions() {
                let plan = plan(
                    &pool,
                    list_query("EXPLAIN QUERY PLAN ", filter, after.as_ref(), 51),
                )
                .await;
                assert_indexed(&plan, index);
            }
        }
    }

    /// A CHECK with an IN list of more than two constants compiles into a
    /// temporary b-tree that is built each time a statement runs: it was a
    /// fifth of the writer's work per create (migration 0006).
    #[tokio::test]
    async fn writes_to_reservations_build_no_temporary_table() {
        // The writer's own connection: a read-only one compiles no CHECKs.
        let (_dir, _pool, write) = database().await;
        for sql in [
            "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, \
             version, sync_state, request_hash, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            "UPDATE reservations SET status = 'cancelled', version = ?2 WHERE id = ?1",
        ] {
            let mut explain = write.prepare(&format!("EXPLAIN {sql}")).unwrap();
            // Unbound parameters are NULL; EXPLAIN only lists the program.
            let mut rows = explain.raw_query();
            let mut program: Vec<String> = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                program.push(row.get(1).unwrap());
            }
            assert!(
                program.iter().any(|op| op == "Halt"),
                "not a program: {program:?}"
            );
            assert!(
                !program.iter().any(|op| op == "OpenEphemeral"),
                "{sql} opens a temporary table: {program:?}"
            );
        }
    }

    /// A database made before migration 0006, holding rows of every status,
    /// comes through it intact, and the new CHECK still refuses what the
    /// old one refused.
    #[tokio::test]
    async fn the_status_check_migration_keeps_rows_and_the_constraint() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("old.db"))
            .create_if_missing(true);
        // One connection, as the service migrates with: a second one, opened
        // before the migration, could EXPLAIN with the schema it had cached.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        let at = before
            .migrations
            .iter()
            .position(|m| m.version == 6)
            .expect("migration 0006 exists");
        before.migrations = before.migrations[..at].to_vec().into();
        before.run(&pool).await.unwrap();
        let insert = "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, \
                      status, version, sync_state, request_hash, created_at, updated_at) \
                      VALUES (?1, 'r', 'u', 1, 2, 1, ?2, 1, 'local', 'h', 1, 1)";
        for status in ["confirmed", "cancelled", "rejected"] {
            sqlx::query(insert)
                .bind(status)
                .bind(status)
                .execute(&pool)
                .await
                .unwrap();
        }

        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .unwrap();

        let (check,): (String,) = query_as("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        let rows: Vec<(String, String)> =
            query_as("SELECT id, status FROM reservations ORDER BY rowid")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            rows.iter()
                .map(|(id, status)| (id.as_str(), status.as_str()))
                .collect::<Vec<_>>(),
            [
                ("confirmed", "confirmed"),
                ("cancelled", "cancelled"),
                ("rejected", "rejected")
            ]
        );
        // (sql, id, status): ?1 is the id, ?2 the status in both statements.
        let update = "UPDATE reservations SET status = ?2 WHERE id = ?1";
        for (sql, id, bad) in [
            (insert, "new-1", "bogus"),
            (insert, "new-2", "Confirmed"),
            (insert, "new-3", ""),
            (update, "confirmed", "gone"),
        ] {
            let error = sqlx::query(sql)
                .bind(id)
                .bind(bad)
                .execute(&pool)
                .await
                .expect_err("an unknown status must be refused");
            assert!(
                error.to_string().contains("CHECK constraint failed"),
                "{sql} with {bad:?}: {error}"
            );
        }
        // A connection opened afterwards, as the writer is, compiles the new
        // definition.
        pool.close().await;
        let mut fresh = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let program: Vec<(i64, String)> = query_as(&format!("EXPLAIN {insert}"))
            .fetch_all(&mut fresh)
            .await
            .unwrap();
        assert!(program.iter().any(|(_, op)| op == "Insert"));
        assert!(!program.iter().any(|(_, op)| op == "OpenEphemeral"));
    }

    /// The opcodes of a statement: (opcode, p1, p2) per instruction.
    async fn program(
        pool: &SqlitePool,
        mut q: sqlx::QueryBuilder<'_, sqlx::Sqlite>,
    ) -> Vec<(String, i64, i64)> {
        let rows: Vec<(i64, String, i64, i64)> = q.build_query_as().fetch_all(pool).await.unwrap();
        rows.into_iter()
            .map(|(_, op, p1, p2)| (op, p1, p2))
            .collect()
    }

    /// A list with `from` seeks a week before `from` (see `list_query`), so
    /// most index entries it visits end before `from`. `ends_at` must be
    /// read from the index, where the row is rejected before the (deferred)
    /// table seek, not from the table: that was a table seek per entry, about
    /// 500 for a page of 51.
    #[tokio::test]
    async fn list_from_checks_ends_at_inside_the_index() {
        let (_dir, pool, _write) = database().await;
        let cases = list_cases();
        // Only filters with `from` seek before it.
        let cases = cases.iter().filter(|(filter, _)| filter.from.is_some());
        for (filter, index) in cases {
            let (root,): (i64,) = query_as("SELECT rootpage FROM sqlite_schema WHERE name = ?1")
                .bind(index)
                .fetch_one(&pool)
                .await
                .unwrap();
            let (ends_at,): (i64,) =
                query_as("SELECT seqno FROM pragma_index_info(?1) WHERE name = 'ends_at'")
                    .bind(index)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{index} has no ends_at column: {e}"));
            for after in &positions() {
                let program =
                    program(&pool, list_query("EXPLAIN ", filter, after.as_ref(), 51)).await;
                let cursor_of_index = program
                    .iter()
                    .find(|(op, _, p2)| op == "OpenRead" && *p2 == root)
                    .map(|(_, p1, _)| *p1)
                    .unwrap_or_else(|| panic!("{index} is not opened: {program:?}"));
                assert!(
                    program.iter().any(|(op, p1, p2)| op == "Column"
                        && *p1 == cursor_of_index
                        && *p2 == ends_at),
                    "ends_at is not read from {index}: {program:?}"
                );
            }
        }
    }

    /// The sync's outbox read looks each queued reservation up by id. Under
    /// the statistics of a table of 1,000 to 60,000 rows (which the service
    /// kept until 2026-12-01), SQLite chose to scan all of `reservations`
    /// for every batch.
    #[tokio::test]
    async fn the_outbox_batch_looks_reservations_up_by_id() {
        let (_dir, pool, _write) = database().await;
        let plan = details(
            query_as(&format!("EXPLAIN QUERY PLAN {}", *OUTBOX_RESERVATIONS))
                .bind(0i64)
                .bind(1000i64)
                .fetch_all(&pool)
                .await
                .unwrap(),
        );
        assert!(
            plan.contains("SEARCH e USING INDEX sqlite_autoindex_reservations_1 (id=?)")
                && !plan.contains("SCAN e"),
            "{plan}"
        );
    }

    /// The writer's plan of `sql`, whose one parameter is a JSON array.
    fn writer_plan(write: &rusqlite::Connection, sql: &str) -> String {
        let mut explain = write.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = explain
            .query_map(["[]"], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        details(rows)
    }

    /// The writer's statements that join a JSON list of ids to
    /// `reservations` look each id up, rather than scan the table and
    /// search the list for every row: under the statistics of a table
    /// analyzed while it held a few dozen rows, both scanned.
    fn assert_lookups_by_id(write: &rusqlite::Connection) {
        for sql in [ACK_SYNCED, LOCAL_VERSIONS] {
            let plan = writer_plan(write, sql);
            assert!(
                plan.contains(
                    "SEARCH reservations USING INDEX sqlite_autoindex_reservations_1 (id=?)"
                ) && !plan.contains("SCAN reservations"),
                "{sql}: {plan}"
            );
        }
    }

    #[tokio::test]
    async fn the_writers_lookups_of_many_ids_search_by_id() {
        let (_dir, _pool, write) = database().await;
        assert_lookups_by_id(&write);
    }

    /// Statistics that an earlier version (or an operator's `ANALYZE`)
    /// stored are dropped when the database is opened, before any
    /// connection of the service has read them: a connection keeps what it
    /// read when it loaded the schema, even after the tables are dropped.
    #[tokio::test]
    async fn statistics_stored_earlier_are_dropped_at_open() {
        let (dir, pool, write) = database().await;
        write
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) \
                 INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, \
                 status, version, sync_state, request_hash, created_at, updated_at) \
                 SELECT 'id-' || i, 'r', 'u', i, i + 1, 1, 'confirmed', 1, 'local', 'h', 1, 1 FROM n; \
                 ANALYZE;",
            )
            .unwrap();
        let stored = |conn: &rusqlite::Connection| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'sqlite_stat%'",
                [],
                |row| row.get(0),
            )
            .unwrap()
        };
        assert!(stored(&write) > 0, "ANALYZE stored nothing");
        drop(write);
        pool.close().await;

        let (_reads, write) = open(&Config::with_data_dir(dir.path())).await.unwrap();
        assert_eq!(stored(&write), 0, "statistics survived the open");
        assert_lookups_by_id(&write);
    }
}
