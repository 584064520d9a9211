//! Turns a policy into the child's plan: the filesystem view as mount
//! operations, the Landlock rules, the resource limits.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::child::{LandlockPlan, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountOp};
use crate::policy::{Limits, SandboxPolicy};

/// System trees shown read-only, when the host has them.
const SYSTEM_PATHS: [&str; 9] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];
/// Device nodes a command may use; everything else in /dev is absent.
const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];
/// Host secrets that live inside the trees above, masked in every sandbox.
const HOST_SECRETS: [&str; 6] =
    ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/ssl/private", "/etc/sudoers.d"];

// Landlock access rights (linux/landlock.h), by the ABI that introduced them.
pub(crate) const FS_EXECUTE: u64 = 1 << 0;
pub(crate) const FS_WRITE_FILE: u64 = 1 << 1;
pub(crate) const FS_READ_FILE: u64 = 1 << 2;
pub(crate) const FS_READ_DIR: u64 = 1 << 3;
const FS_ABI1_ALL: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// The mount operations and Landlock rules for one sandbox.
#[derive(Debug)]
pub(crate) struct View {
    pub mount_ops: Vec<MountOp>,
    pub landlock_rules: Vec<(PathBuf, u64)>,
}

/// Builds the view below `new_root` (a host directory the child mounts a
/// tmpfs on). Paths inside the sandbox equal the host paths they show.
/// `egress_socket`: the host path of the egress proxy's socket, bound into
/// the view when the network is allow-listed.
pub(crate) fn view(
    policy: &SandboxPolicy,
    new_root: &Path,
    tmp_size_bytes: u64,
    egress_socket: Option<&Path>,
) -> Result<View, String> {
    let mut builder =
        ViewBuilder { new_root: new_root.to_owned(), ops: Vec::new(), rules: Vec::new(), mounted: Vec::new() };
    let read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;
    builder.rules.push((PathBuf::from("/"), FS_READ_DIR));
    for system in SYSTEM_PATHS {
        let path = Path::new(system);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // Merged-/usr hosts: /bin -> usr/bin. The link, not a second mount.
                let target = std::fs::read_link(path).map_err(|err| format!("{system}: {err}"))?;
                builder.ops.push(MountOp::Symlink { target: cstring(&target)?, link: builder.inside(path)? });
            }
            Ok(meta) if meta.is_dir() => {
                builder.bind(path, true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
                builder.rules.push((path.to_owned(), read));
            }
            _ => {}
        }
    }
    // /dev: a small tmpfs with the harmless devices bound in.
    builder.mkdirs(Path::new("/dev"))?;
    builder
        .ops
        .push(MountOp::Tmpfs { target: builder.inside(Path::new("/dev"))?, options: c"mode=0755,size=64k".to_owned() });
    for device in DEVICES.iter().map(Path::new).filter(|device| device.exists()) {
        builder.ops.push(MountOp::Touch(builder.inside(device)?));
        builder.ops.push(MountOp::Bind { source: cstring(device)?, target: builder.inside(device)? });
        // Read-only mounts still allow writing to a device, but not changing
        // the host's inode (chmod, chown) through it.
        builder.ops.push(MountOp::Restrict {
            target: builder.inside(device)?,
            attributes: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
            recursive: false,
        });
        builder.rules.push((device.to_owned(), FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV));
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = builder.inside(&Path::new("/dev").join(name))?;
        builder.ops.push(MountOp::Symlink { target: cstring(Path::new(target))?, link });
    }
    let scratch_options =
        |mode: &str| CString::new(format!("mode={mode},size={tmp_size_bytes}")).map_err(|err| err.to_string());
    builder.mkdirs(Path::new("/dev/shm"))?;
    builder
        .ops
        .push(MountOp::Tmpfs { target: builder.inside(Path::new("/dev/shm"))?, options: scratch_options("1777")? });
    builder.rules.push((PathBuf::from("/dev/shm"), u64::MAX));
    builder.rules.push((PathBuf::from("/dev"), FS_READ_DIR));
    // /proc of the new PID namespace: only the sandbox's processes.
    builder.mkdirs(Path::new("/proc"))?;
    builder.ops.push(MountOp::Proc { target: builder.inside(Path::new("/proc"))? });
    builder.rules.push((PathBuf::from("/proc"), FS_READ_FILE | FS_READ_DIR));
    // A private /tmp, counted against the memory limit.
    builder.mkdirs(Path::new("/tmp"))?;
    builder.ops.push(MountOp::Tmpfs { target: builder.inside(Path::new("/tmp"))?, options: scratch_options("1777")? });
    builder.rules.push((PathBuf::from("/tmp"), u64::MAX));

    for path in &policy.read_only_paths {
        builder.bind(path, path.is_dir(), MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
        builder.rules.push((path.clone(), if path.is_dir() { read } else { FS_EXECUTE | FS_READ_FILE }));
    }
    for path in policy.read_write_paths.iter().chain(std::iter::once(&policy.workspace)) {
        builder.bind(path, path.is_dir(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
        builder.rules.push((path.clone(), u64::MAX));
    }
    protect_git(&mut builder, &policy.workspace)?;
    if let Some(socket) = egress_socket {
        let inside = Path::new(crate::relay::SOCKET_INSIDE.to_str().map_err(|err| err.to_string())?);
        builder.ops.push(MountOp::Touch(builder.inside(inside)?));
        builder.ops.push(MountOp::Bind { source: cstring(socket)?, target: builder.inside(inside)? });
    }
    let hidden =
        HOST_SECRETS.iter().map(PathBuf::from).chain(policy.hidden_paths.iter().cloned()).chain(ssh_host_keys());
    for path in hidden {
        if !path.exists() || !builder.is_visible(&path) {
            continue;
        }
        let inside = builder.inside(&path)?;
        if path.is_dir() {
            builder.ops.push(MountOp::Tmpfs { target: inside.clone(), options: c"mode=0,size=4k".to_owned() });
            builder.ops.push(MountOp::Restrict { target: inside, attributes: MOUNT_ATTR_RDONLY, recursive: false });
        } else {
            builder.ops.push(MountOp::Bind { source: c"/dev/null".to_owned(), target: inside.clone() });
            builder.ops.push(MountOp::Restrict {
                target: inside,
                attributes: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                recursive: false,
            });
        }
    }
    Ok(View { mount_ops: builder.ops, landlock_rules: builder.rules })
}

/// Code that later runs outside the sandbox (git hooks, a config with
/// `core.fsmonitor`, `core.hooksPath` or aliases) must not be writable from
/// inside. `.git` itself becomes a mount point, so it cannot be renamed away
/// and replaced by a fresh one; its `hooks` and `config` are read-only.
fn protect_git(builder: &mut ViewBuilder, workspace: &Path) -> Result<(), String> {
    let git_dir = workspace.join(".git");
    match std::fs::symlink_metadata(&git_dir) {
        Ok(meta) if meta.is_dir() => {}
        // No repository, or a `.git` file pointing elsewhere (worktrees,
        // submodules): nothing here for git to run.
        _ => return Ok(()),
    }
    let hooks = git_dir.join("hooks");
    if std::fs::symlink_metadata(&hooks).is_err() {
        // Git's own layout; without it an agent could create the directory.
        std::fs::create_dir(&hooks).map_err(|err| format!("cannot create {}: {err}", hooks.display()))?;
    }
    let inside = builder.inside(&git_dir)?;
    builder.ops.push(MountOp::Bind { source: inside.clone(), target: inside });
    for protected in [hooks, git_dir.join("config")] {
        match std::fs::symlink_metadata(&protected) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; the sandbox protects git hooks and config only where they really are",
                    protected.display()
                ));
            }
            Ok(_) => {
                let inside = builder.inside(&protected)?;
                builder.ops.push(MountOp::Bind { source: inside.clone(), target: inside.clone() });
                builder.ops.push(MountOp::Restrict {
                    target: inside,
                    attributes: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    recursive: true,
                });
            }
            Err(_) => {}
        }
    }
    Ok(())
}

struct ViewBuilder {
    new_root: PathBuf,
    ops: Vec<MountOp>,
    rules: Vec<(PathBuf, u64)>,
    /// Host trees bound into the view (their subtrees are visible). Fresh
    /// file systems (/tmp, /dev, /proc) show nothing of the host's and are
    /// not listed.
    mounted: Vec<PathBuf>,
}

impl ViewBuilder {
    /// Where host `path` appears below the new root before pivot_root.
    fn inside(&self, path: &Path) -> Result<CString, String> {
        let relative = path.strip_prefix("/").map_err(|_| format!("{} is not absolute", path.display()))?;
        cstring(&self.new_root.join(relative))
    }

    fn is_visible(&self, path: &Path) -> bool {
        self.mounted.iter().any(|mounted| path.starts_with(mounted))
    }

    /// Creates the directories leading to `path` (and `path`) in the new root.
    fn mkdirs(&mut self, path: &Path) -> Result<(), String> {
        let mut partial = PathBuf::from("/");
        for component in path.components().skip(1) {
            partial.push(component);
            let op = MountOp::Mkdir(self.inside(&partial)?);
            self.ops.push(op);
        }
        Ok(())
    }

    fn bind(&mut self, path: &Path, is_dir: bool, attributes: u64) -> Result<(), String> {
        match path.parent() {
            Some(parent) if is_dir => {
                self.mkdirs(parent)?;
                self.ops.push(MountOp::Mkdir(self.inside(path)?));
            }
            Some(parent) => {
                self.mkdirs(parent)?;
                self.ops.push(MountOp::Touch(self.inside(path)?));
            }
            None => return Err("the root cannot be bound".to_owned()),
        }
        let target = self.inside(path)?;
        self.ops.push(MountOp::Bind { source: cstring(path)?, target: target.clone() });
        self.ops.push(MountOp::Restrict { target, attributes, recursive: true });
        self.mounted.push(path.to_owned());
        Ok(())
    }
}

/// The host's SSH private keys (`/etc/ssh/ssh_host_*_key`).
fn ssh_host_keys() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/etc/ssh") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("ssh_host_") && name.ends_with("_key")
        })
        .collect()
}

/// Landlock rights and scopes this kernel's ABI knows, applied to our rules.
/// `connect_ports`: the only TCP ports that may be connected to (none: no
/// TCP at all).
pub(crate) fn landlock_plan(abi: u32, rules: &[(PathBuf, u64)], connect_ports: &[u16]) -> Result<LandlockPlan, String> {
    let mut handled_fs = FS_ABI1_ALL;
    if abi >= 2 {
        handled_fs |= FS_REFER;
    }
    if abi >= 3 {
        handled_fs |= FS_TRUNCATE;
    }
    if abi >= 5 {
        handled_fs |= FS_IOCTL_DEV;
    }
    // TCP bind is never allowed; connect only to the listed ports.
    let handled_net = if abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 };
    let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 };
    let file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;
    let mut planned = Vec::with_capacity(rules.len());
    for (path, access) in rules {
        // Rules on files may only hold rights that apply to files.
        let is_dir = path.is_dir() || !path.exists();
        let allowed = if is_dir { *access & handled_fs } else { *access & handled_fs & file_rights };
        planned.push((cstring(path)?, allowed));
    }
    let connect_ports =
        if handled_net == 0 { Vec::new() } else { connect_ports.iter().map(|port| u64::from(*port)).collect() };
    Ok(LandlockPlan {
        handled_fs,
        handled_net,
        scoped,
        rules: planned,
        connect_ports,
        restrict_flags: 0,
        process_name: None,
    })
}

/// rlimits (resource, soft, hard) for the command: always, even where
/// cgroups limit the tree too.
pub(crate) fn rlimits(limits: &Limits, memory_through_cgroup: bool) -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
    let mut rlimits = vec![(libc::RLIMIT_CORE, 0, 0)];
    if let Some(seconds) = limits.cpu_seconds {
        // A second of grace between the soft limit (SIGXCPU, which names
        // the cause) and the hard one (SIGKILL).
        rlimits.push((libc::RLIMIT_CPU, seconds, seconds.saturating_add(1)));
    }
    if let Some(files) = limits.open_files {
        rlimits.push((libc::RLIMIT_NOFILE, files, files));
    }
    if let Some(bytes) = limits.file_size_bytes {
        rlimits.push((libc::RLIMIT_FSIZE, bytes, bytes));
    }
    if let (Some(bytes), false) = (limits.memory_bytes, memory_through_cgroup) {
        // Without a memory cgroup, address space is the only lever left.
        rlimits.push((libc::RLIMIT_AS, bytes, bytes));
    }
    rlimits
}

pub(crate) fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{} contains a NUL byte", path.display()))
}
