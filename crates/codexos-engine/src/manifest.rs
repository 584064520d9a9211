//! Agent manifests (filled in next).
