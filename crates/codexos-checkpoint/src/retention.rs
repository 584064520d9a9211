//! Retention: which checkpoints of an execution to keep, by count and by the bytes they hold
//! together.

use std::collections::HashSet;

use crate::error::Result;
use crate::hash::CheckpointId;
use crate::store::Store;

/// Bounds on the checkpoints kept for one execution; `None` is no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// At most this many checkpoints (the newest are kept).
    pub max_checkpoints: Option<usize>,
    /// At most this many bytes of content (blobs and directory listings) held by the kept
    /// checkpoints together, each shared object counted once.
    pub max_bytes: Option<u64>,
}

impl Store {
    /// Of the checkpoints `newest_first`, the ones `retention` keeps: the newest, then each
    /// older one while both bounds still hold with it. The newest is kept whatever its size,
    /// so that the latest state can always be rolled back to. Pass the result (with the
    /// checkpoints of any other execution sharing the store) to [`Store::prune`].
    ///
    /// The byte bound counts what the kept checkpoints hold together, not the sum of what each
    /// added: the oldest checkpoint of an execution carries the whole first copy of the
    /// workspace, which stays in the store as long as any later checkpoint shares it.
    pub fn select_retained(&self, newest_first: &[CheckpointId], retention: &Retention) -> Result<Vec<CheckpointId>> {
        let (mut trees, mut blobs) = (HashSet::new(), HashSet::new());
        let mut bytes = 0;
        let mut kept = Vec::new();
        for id in newest_first {
            if retention.max_checkpoints.is_some_and(|max| kept.len() >= max.max(1)) {
                break;
            }
            bytes += self.mark(self.read_record(id)?.tree, &mut trees, &mut blobs)?;
            if !kept.is_empty() && retention.max_bytes.is_some_and(|max| bytes > max) {
                break;
            }
            kept.push(*id);
        }
        Ok(kept)
    }
}
