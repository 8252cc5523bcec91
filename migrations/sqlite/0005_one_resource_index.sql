-- One index per resource instead of two. reservations_holds (the confirmed
-- holds, for capacity checks and availability) and reservations_by_resource
-- (every row, for lists by resource) both led with (resource_id, starts_at),
-- and every create inserted into both: two b-tree descents and, since
-- creates spread over resources, two scattered pages dirtied and written to
-- the WAL at each commit. This index serves both: lists keep their
-- (starts_at, id) order, and the capacity check reads ends_at, party_size
-- and status from the index itself, skipping cancelled and rejected rows
-- there instead of leaving them out of the index. Dropping one index cut the
-- writer's work per create (see BENCHMARKS.md).
DROP INDEX reservations_holds;
DROP INDEX reservations_by_resource;
CREATE INDEX reservations_by_resource
    ON reservations (resource_id, starts_at, id, ends_at, party_size, status);
