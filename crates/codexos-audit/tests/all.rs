//! Whole logs verified through the public API: intact ones, and every kind of tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
