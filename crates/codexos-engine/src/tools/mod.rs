//! Built-in tools (filled in next).
