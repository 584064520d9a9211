//! The stat cache: for each regular file of a workspace, the `stat` fields it had when it was
//! last hashed and the hash, so that a snapshot re-reads only the files whose `stat` changed
//! (git's index, kept in the store, never in the workspace).
//!
//! Racy timestamps: a file written again within the timestamp granularity of the moment it was
//! hashed keeps the same `mtime` and `ctime` (and, with the same length, the same size) while
//! its content changed. An entry is therefore *settled*, and trusted next time, only if the
//! file's `mtime` and `ctime` are older than the start of the walk that hashed it by more than
//! [`RACY_MARGIN_NS`]; a later write then necessarily carries a later timestamp. Files changed
//! less than that before a snapshot are hashed again by the next one: a few files per step.
//! `ctime` also catches `touch -d` (or `tar x`) putting an old `mtime` back, and the inode a
//! replacement by rename.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::fsops::StatKey;
use crate::hash::ObjectHash;

/// How much older than the hashing a file's timestamps must be for its entry to be trusted:
/// above the kernel's clock tick for file times (1 to 10 ms) and the coarsest granularity of
/// the file systems a workspace may sit on (FAT's two seconds), plus some leeway for the system
/// clock and the file system's clock to disagree.
pub(crate) const RACY_MARGIN_NS: i128 = 2_000_000_000;

const MAGIC: &[u8; 8] = b"cxidx1\n\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheEntry {
    pub(crate) key: StatKey,
    pub(crate) blob: ObjectHash,
    /// Whether the timestamps were settled when the file was hashed (see the module's doc).
    pub(crate) settled: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct StatCache {
    /// The workspace the entries are about (its canonical path), so that a cache whose
    /// workspace is gone can be dropped by `prune`.
    pub(crate) workspace: PathBuf,
    /// By path relative to the workspace, as bytes.
    pub(crate) entries: HashMap<Vec<u8>, CacheEntry>,
}

/// Whether a file whose `stat` is `key`, hashed by a walk that began at `walk_started_ns`
/// (nanoseconds since the epoch), can be trusted to be unchanged while its `stat` is.
pub(crate) fn settled(key: &StatKey, walk_started_ns: i128) -> bool {
    key.mtime_ns.max(key.ctime_ns) + RACY_MARGIN_NS < walk_started_ns
}

impl StatCache {
    /// The blob of the file at `path` if the cache vouches for it: a settled entry whose
    /// `stat` is the same as now.
    pub(crate) fn lookup(&self, path: &[u8], key: &StatKey) -> Option<ObjectHash> {
        self.entries.get(path).filter(|entry| entry.settled && entry.key == *key).map(|entry| entry.blob)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let workspace = self.workspace.as_os_str().as_encoded_bytes();
        let mut out = Vec::with_capacity(32 + workspace.len() + self.entries.len() * 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(workspace.len() as u32).to_le_bytes());
        out.extend_from_slice(workspace);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, entry) in &self.entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
            let key = &entry.key;
            out.extend_from_slice(&key.dev.to_le_bytes());
            out.extend_from_slice(&key.ino.to_le_bytes());
            out.extend_from_slice(&key.mode.to_le_bytes());
            out.extend_from_slice(&key.size.to_le_bytes());
            out.extend_from_slice(&key.mtime_ns.to_le_bytes());
            out.extend_from_slice(&key.ctime_ns.to_le_bytes());
            out.push(u8::from(entry.settled));
            out.extend_from_slice(&entry.blob.0);
        }
        out
    }

    /// Decodes a cache; `None` if it is damaged, in which case the caller starts from an empty
    /// one (the cache only saves work, it never decides what is in a checkpoint on its own).
    pub(crate) fn decode(bytes: &[u8]) -> Option<StatCache> {
        use std::os::unix::ffi::OsStrExt;
        let mut reader = Reader { bytes };
        if reader.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(reader.array()?) as usize;
        let workspace = PathBuf::from(std::ffi::OsStr::from_bytes(reader.take(len)?));
        let count = u64::from_le_bytes(reader.array()?);
        if count > bytes.len() as u64 / 32 {
            return None;
        }
        let mut entries = HashMap::with_capacity(count as usize);
        for _ in 0..count {
            let len = u32::from_le_bytes(reader.array()?) as usize;
            let path = reader.take(len)?.to_vec();
            let key = StatKey {
                dev: u64::from_le_bytes(reader.array()?),
                ino: u64::from_le_bytes(reader.array()?),
                mode: u32::from_le_bytes(reader.array()?),
                size: u64::from_le_bytes(reader.array()?),
                mtime_ns: i128::from_le_bytes(reader.array()?),
                ctime_ns: i128::from_le_bytes(reader.array()?),
            };
            let settled = match reader.array::<1>()? {
                [0] => false,
                [1] => true,
                _ => return None,
            };
            let blob = ObjectHash(reader.array()?);
            entries.insert(path, CacheEntry { key, blob, settled });
        }
        reader.bytes.is_empty().then_some(StatCache { workspace, entries })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i128 = 1_000_000_000;

    fn key(mtime_ns: i128, ctime_ns: i128) -> StatKey {
        StatKey { dev: 1, ino: 2, mode: 0o100644, size: 3, mtime_ns, ctime_ns }
    }

    #[test]
    fn only_timestamps_well_before_the_walk_are_settled() {
        let walk = 1_000 * SECOND;
        assert!(settled(&key(walk - 3 * SECOND, walk - 3 * SECOND), walk));
        // Written in the same tick as the walk, or just before it: a same-size write right
        // after the hashing would keep these timestamps, so they must be hashed again.
        assert!(!settled(&key(walk, walk), walk));
        assert!(!settled(&key(walk - SECOND, walk - SECOND), walk));
        // An old mtime put back by `touch -d` does not hide a recent ctime.
        assert!(!settled(&key(walk - 100 * SECOND, walk - 1), walk));
        // Timestamps in the future (a skewed clock) are never trusted.
        assert!(!settled(&key(walk + 100 * SECOND, walk + 100 * SECOND), walk));
    }

    #[test]
    fn lookups_need_a_settled_entry_with_the_same_stat() {
        let blob = ObjectHash([9; 32]);
        let mut cache = StatCache::default();
        cache.entries.insert(b"a".to_vec(), CacheEntry { key: key(1, 1), blob, settled: true });
        cache.entries.insert(b"racy".to_vec(), CacheEntry { key: key(1, 1), blob, settled: false });
        assert_eq!(cache.lookup(b"a", &key(1, 1)), Some(blob));
        assert_eq!(cache.lookup(b"a", &key(1, 2)), None);
        assert_eq!(cache.lookup(b"a", &StatKey { ino: 5, ..key(1, 1) }), None);
        assert_eq!(cache.lookup(b"racy", &key(1, 1)), None);
        assert_eq!(cache.lookup(b"missing", &key(1, 1)), None);
    }

    #[test]
    fn caches_round_trip_and_damage_is_detected() {
        let mut cache = StatCache { workspace: PathBuf::from("/ws"), entries: HashMap::new() };
        for (index, path) in [&b"a/b"[..], b"\xff\xfe", b"c"].into_iter().enumerate() {
            let entry = CacheEntry {
                key: key(index as i128, -1),
                blob: ObjectHash([index as u8; 32]),
                settled: index % 2 == 0,
            };
            cache.entries.insert(path.to_vec(), entry);
        }
        let bytes = cache.encode();
        assert_eq!(StatCache::decode(&bytes), Some(cache));
        for cut in 0..bytes.len() {
            assert_eq!(StatCache::decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }
}
