//! End-to-end tests of the `codexos` binary: the real server on port 0,
//! driven over HTTP and through the CLI, on SQLite or (with
//! `CODEXOS_TEST_POSTGRES`) on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
