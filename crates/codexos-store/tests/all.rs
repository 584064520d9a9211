//! The store's integration tests, on SQLite, or on PostgreSQL when
//! `CODEXOS_TEST_POSTGRES` is set.

mod suite;
