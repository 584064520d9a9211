//! The sandbox against real attacks and real tools, on this host's kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
