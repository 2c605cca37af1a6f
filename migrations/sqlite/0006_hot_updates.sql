-- clawcut-worker schema, version 6: on PostgreSQL, room on each heap page
-- for in-place updates of the lease columns (see its twin). SQLite rewrites
-- a row in place whatever it changes: nothing to do, the version is kept
-- so both backends number their migrations alike.
SELECT 1;
