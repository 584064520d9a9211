//! The store's integration tests, on SQLite, or on PostgreSQL when
//! `CODEXOS_TEST_POSTGRES` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
