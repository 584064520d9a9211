//! Checkpoints against real directories: exact restores, `.git`, sharing, safety, forks,
//! pruning, and random trees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
