//! Tree objects: the listing of one directory, as git keeps it, so that a checkpoint after a
//! one-file change writes the changed file and the directories above it, not the whole listing
//! of the workspace.
//!
//! The encoding is ours, binary and versioned: a magic line, the entry count, then the
//! entries sorted by name bytes, each a kind byte, the name (length-prefixed bytes, so names
//! that are not UTF-8 survive) and the kind's fields, integers little-endian. Decoding checks
//! everything a restore relies on: a name is one path component (never empty, `.`, `..`, or
//! holding `/` or NUL), names are strictly increasing (no duplicates), modes are permission
//! bits only, and no byte is left over.

use crate::hash::ObjectHash;

const MAGIC: &[u8; 8] = b"cxtree1\n";
const KIND_FILE: u8 = 1;
const KIND_DIR: u8 = 2;
const KIND_SYMLINK: u8 = 3;
const KIND_UNCAPTURED: u8 = 4;

/// The permission bits a checkpoint keeps: read, write and execute for owner, group and
/// others. Set-user-id, set-group-id and sticky bits are left out on purpose: a rollback run by
/// the worker must not mint set-id programs.
pub(crate) const MODE_BITS: u32 = 0o777;

/// Linux's longest symbolic link target (PATH_MAX less the terminating NUL).
const MAX_LINK_TARGET: usize = 4095;

/// Why an entry of the workspace is not (fully) in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// A Unix socket: kept as a placeholder, left alone by restores.
    Socket,
    /// A named pipe: kept as a placeholder, left alone by restores.
    Fifo,
    /// A character or block device: kept as a placeholder, left alone by restores.
    Device,
    /// A file or directory we may not read: kept as a placeholder, left alone by restores.
    Unreadable,
    /// It was listed, then gone before it could be read: not in the checkpoint.
    Vanished,
    /// It changed type while it was being read (a file became a directory, say): not in the
    /// checkpoint.
    Changed,
}

impl SkipReason {
    fn code(self) -> Option<u8> {
        match self {
            SkipReason::Socket => Some(1),
            SkipReason::Fifo => Some(2),
            SkipReason::Device => Some(3),
            SkipReason::Unreadable => Some(4),
            SkipReason::Vanished | SkipReason::Changed => None,
        }
    }

    fn from_code(code: u8) -> Option<SkipReason> {
        [SkipReason::Socket, SkipReason::Fifo, SkipReason::Device, SkipReason::Unreadable]
            .into_iter()
            .find(|reason| reason.code() == Some(code))
    }
}

/// What a name in a directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File {
        mode: u32,
        size: u64,
        blob: ObjectHash,
    },
    Dir {
        mode: u32,
        tree: ObjectHash,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Something whose content cannot be kept (a socket, a device, an unreadable file): its
    /// name is kept so that a restore leaves it alone rather than deleting it.
    Uncaptured {
        reason: SkipReason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) node: Node,
}

/// One directory's entries, sorted by name bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    pub(crate) entries: Vec<TreeEntry>,
}

impl Tree {
    pub(crate) fn get(&self, name: &[u8]) -> Option<&Node> {
        self.entries
            .binary_search_by(|entry| entry.name.as_slice().cmp(name))
            .ok()
            .map(|index| &self.entries[index].node)
    }

    /// The encoding; entries must already be sorted and unique.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.entries.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            let kind = match entry.node {
                Node::File { .. } => KIND_FILE,
                Node::Dir { .. } => KIND_DIR,
                Node::Symlink { .. } => KIND_SYMLINK,
                Node::Uncaptured { .. } => KIND_UNCAPTURED,
            };
            out.push(kind);
            out.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
            out.extend_from_slice(&entry.name);
            match &entry.node {
                Node::File { mode, size, blob } => {
                    out.extend_from_slice(&(*mode as u16).to_le_bytes());
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&blob.0);
                }
                Node::Dir { mode, tree } => {
                    out.extend_from_slice(&(*mode as u16).to_le_bytes());
                    out.extend_from_slice(&tree.0);
                }
                Node::Symlink { target } => {
                    out.extend_from_slice(&(target.len() as u32).to_le_bytes());
                    out.extend_from_slice(target);
                }
                Node::Uncaptured { reason } => out.push(reason.code().unwrap_or(0)),
            }
        }
        out
    }

    /// Decodes and checks a tree; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Tree, String> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err("not a tree object (bad magic)".to_owned());
        }
        let count = reader.u32()? as usize;
        // Every entry takes at least four bytes, so a count beyond that is a lie; checking it
        // keeps a corrupt count from reserving gigabytes.
        if count > bytes.len() / 4 {
            return Err(format!("entry count {count} exceeds the object's size"));
        }
        let mut entries: Vec<TreeEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = reader.u8()?;
            let name_len = usize::from(reader.u16()?);
            let name = reader.take(name_len)?.to_vec();
            check_name(&name)?;
            if let Some(previous) = entries.last()
                && previous.name >= name
            {
                return Err(format!("entry {:?} is out of order or repeated", String::from_utf8_lossy(&name)));
            }
            let node = match kind {
                KIND_FILE => {
                    let mode = check_mode(reader.u16()?)?;
                    let size = reader.u64()?;
                    let blob = reader.hash()?;
                    Node::File { mode, size, blob }
                }
                KIND_DIR => {
                    let mode = check_mode(reader.u16()?)?;
                    let tree = reader.hash()?;
                    Node::Dir { mode, tree }
                }
                KIND_SYMLINK => {
                    let len = reader.u32()? as usize;
                    if len == 0 || len > MAX_LINK_TARGET {
                        return Err(format!("symbolic link target of {len} bytes"));
                    }
                    let target = reader.take(len)?.to_vec();
                    if target.contains(&0) {
                        return Err("symbolic link target holds a NUL byte".to_owned());
                    }
                    Node::Symlink { target }
                }
                KIND_UNCAPTURED => {
                    let code = reader.u8()?;
                    let reason = SkipReason::from_code(code).ok_or_else(|| format!("unknown skip reason {code}"))?;
                    Node::Uncaptured { reason }
                }
                other => return Err(format!("unknown entry kind {other}")),
            };
            entries.push(TreeEntry { name, node });
        }
        if reader.at != bytes.len() {
            return Err(format!("{} bytes after the last entry", bytes.len() - reader.at));
        }
        Ok(Tree { entries })
    }
}

/// A name must be a single, ordinary path component: anything else could make a restore write
/// outside the directory it is restoring.
fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(format!("invalid entry name {:?}", String::from_utf8_lossy(name)));
    }
    Ok(())
}

fn check_mode(mode: u16) -> Result<u32, String> {
    let mode = u32::from(mode);
    if mode & !MODE_BITS != 0 {
        return Err(format!("mode {mode:o} has bits beyond the permissions"));
    }
    Ok(mode)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or("truncated tree object")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn hash(&mut self) -> Result<ObjectHash, String> {
        Ok(ObjectHash(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            (0..=MODE_BITS, any::<u64>(), any::<[u8; 32]>()).prop_map(|(mode, size, blob)| Node::File {
                mode,
                size,
                blob: ObjectHash(blob)
            }),
            (0..=MODE_BITS, any::<[u8; 32]>()).prop_map(|(mode, tree)| Node::Dir { mode, tree: ObjectHash(tree) }),
            proptest::collection::vec(1..=255u8, 1..64).prop_map(|target| Node::Symlink { target }),
            prop_oneof![
                Just(SkipReason::Socket),
                Just(SkipReason::Fifo),
                Just(SkipReason::Device),
                Just(SkipReason::Unreadable)
            ]
            .prop_map(|reason| Node::Uncaptured { reason }),
        ]
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..=255)
            .prop_filter("not . or ..", |name| name != b"." && name != b"..")
    }

    fn tree() -> impl Strategy<Value = Tree> {
        proptest::collection::btree_map(name(), node(), 0..20).prop_map(|entries| Tree {
            entries: entries.into_iter().map(|(name, node)| TreeEntry { name, node }).collect(),
        })
    }

    proptest! {
        #[test]
        fn trees_round_trip(tree in tree()) {
            prop_assert_eq!(Tree::decode(&tree.encode()), Ok(tree));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = Tree::decode(&bytes);
            let _ = Tree::decode(&with_magic);
        }

        #[test]
        fn any_truncation_is_refused(tree in tree(), cut in any::<proptest::sample::Index>()) {
            let bytes = tree.encode();
            let cut = cut.index(bytes.len());
            prop_assert!(Tree::decode(&bytes[..cut]).is_err());
        }
    }

    fn one_entry(name: &[u8], node: Node) -> Vec<u8> {
        Tree { entries: vec![TreeEntry { name: name.to_vec(), node }] }.encode()
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        let link = Node::Symlink { target: b"x".to_vec() };
        for name in [&b".."[..], b".", b"a/b", b"/", b"a\0b", b""] {
            assert!(Tree::decode(&one_entry(name, link.clone())).is_err(), "{name:?}");
        }
    }

    #[test]
    fn repeated_or_unsorted_names_and_set_id_bits_are_refused() {
        let file = |mode| Node::File { mode, size: 1, blob: ObjectHash([7; 32]) };
        let mut bytes = Tree {
            entries: vec![
                TreeEntry { name: b"b".to_vec(), node: file(0o644) },
                TreeEntry { name: b"a".to_vec(), node: file(0o644) },
            ],
        }
        .encode();
        assert!(Tree::decode(&bytes).unwrap_err().contains("out of order"));
        bytes = Tree {
            entries: vec![
                TreeEntry { name: b"a".to_vec(), node: file(0o644) },
                TreeEntry { name: b"a".to_vec(), node: file(0o644) },
            ],
        }
        .encode();
        assert!(Tree::decode(&bytes).is_err());
        assert!(Tree::decode(&one_entry(b"a", file(0o4755))).unwrap_err().contains("beyond the permissions"));
    }

    #[test]
    fn lookups_find_names_by_bytes() {
        let tree = Tree {
            entries: vec![
                TreeEntry { name: b"a".to_vec(), node: Node::Symlink { target: b"1".to_vec() } },
                TreeEntry { name: vec![0xff, 0xfe], node: Node::Symlink { target: b"2".to_vec() } },
            ],
        };
        assert_eq!(tree.get(&[0xff, 0xfe]), Some(&Node::Symlink { target: b"2".to_vec() }));
        assert_eq!(tree.get(b"b"), None);
    }
}
