-- Row-level security is PostgreSQL's (see its 0007): an embedded SQLite
-- file has one user, the platform itself, and every query filters by
-- tenant in the store. This migration keeps the two histories numbered alike.
SELECT 1;
