//! Model providers (filled in next).
