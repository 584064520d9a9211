//! Host capability probe: which kernel protections can this process use?
//!
//! The sandbox stacks several independent protections (namespaces, Landlock,
//! seccomp, no_new_privs, cgroups). Kernels differ in what they are built
//! with, what is disabled at boot and what an unprivileged or containerised
//! process is allowed to do, so configuration files (`/proc/config.gz`,
//! sysctls) are not a reliable answer. Wherever possible this module asks the
//! kernel by actually attempting the operation in a way that leaves the
//! calling process unchanged, and turns every failure into a human-readable
//! reason instead of an error: [`probe`] never fails and never panics.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;

/// What this host's kernel lets the current process use to sandbox tool calls.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HostCapabilities {
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// Whether each kind of namespace can be created (inside a new user namespace).
    pub namespaces: NamespaceSupport,
    /// Landlock filesystem access control and its ABI version.
    pub landlock: LandlockSupport,
    /// Whether Landlock's denials are reported as violations: the kernel
    /// logs them to its audit log (ABI 7), which we must be able to read.
    pub landlock_audit: Capability,
    /// seccomp in filter mode (`SECCOMP_MODE_FILTER`, i.e. BPF syscall filters).
    pub seccomp: Capability,
    /// The `no_new_privs` process flag (required to install seccomp filters unprivileged).
    pub no_new_privs: Capability,
    /// Mounted cgroup hierarchies and whether we can create child cgroups.
    pub cgroups: CgroupSupport,
    /// Names of the protections that are absent, e.g. `namespaces.user`,
    /// `landlock`, `seccomp`, `no_new_privs`, `cgroups`, `cgroups.writable`.
    pub missing: Vec<String>,
}

impl HostCapabilities {
    /// True when every protection the sandbox uses is available.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Whether one kernel feature is usable, and if not, why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Capability {
    pub available: bool,
    /// Set when not available: what failed, with the kernel's error text.
    pub reason: Option<String>,
}

impl Capability {
    fn available() -> Self {
        Self { available: true, reason: None }
    }

    fn unavailable(reason: impl Into<String>) -> Self {
        Self { available: false, reason: Some(reason.into()) }
    }
}

/// One [`Capability`] per kind of namespace the sandbox creates.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NamespaceSupport {
    pub user: Capability,
    pub pid: Capability,
    pub mount: Capability,
    pub ipc: Capability,
    pub uts: Capability,
    pub net: Capability,
}

impl NamespaceSupport {
    /// Each kind with its name, in a fixed order (used for `missing`).
    fn kinds(&self) -> [(&'static str, &Capability); 6] {
        [
            ("user", &self.user),
            ("pid", &self.pid),
            ("mount", &self.mount),
            ("ipc", &self.ipc),
            ("uts", &self.uts),
            ("net", &self.net),
        ]
    }
}

/// Landlock support: available with an ABI version, or a reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LandlockSupport {
    pub available: bool,
    /// The Landlock ABI version (1, 2, ...); newer versions restrict more kinds of access.
    pub abi: Option<u32>,
    pub reason: Option<String>,
}

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    /// Only legacy per-controller hierarchies.
    V1,
    /// Only the unified hierarchy.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount (often without controllers).
    Hybrid,
    /// No cgroup filesystem is mounted (or mountinfo could not be read).
    None,
}

/// A cgroup v1 controller and where its hierarchy is mounted.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CgroupController {
    pub name: String,
    pub mount: String,
}

/// Mounted cgroup hierarchies and whether this process can use them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CgroupSupport {
    pub version: CgroupVersion,
    /// Where the unified (cgroup2) hierarchy is mounted, if it is.
    pub v2_mount: Option<String>,
    /// Controllers of the v1 hierarchies, in mountinfo order. Named
    /// hierarchies such as `name=systemd` carry no controller and are skipped.
    pub v1_controllers: Vec<CgroupController>,
    /// Controllers available at the root of the unified hierarchy
    /// (`<v2_mount>/cgroup.controllers`); on hybrid hosts often empty.
    pub v2_controllers: Vec<String>,
    /// Whether we could create (and remove) a child cgroup below our own
    /// and, on v2, our cgroup is given the memory and pids controllers.
    pub writable: bool,
    /// The cgroup directory (ours, in the hierarchy we tested) where the
    /// child was created or attempted: the v2 one when v2 has the memory
    /// controller, else the v1 memory one, else the v2 one.
    pub writable_parent: Option<String>,
    /// What went wrong: unreadable files, or why no child could be created.
    pub reason: Option<String>,
    /// Whether a cgroup hierarchy is mounted with `favordynmods`. Without it,
    /// moving a process into a cgroup (as every sandbox start does) waits for
    /// an RCU grace period whenever none has just passed: milliseconds on a
    /// busy host. Fork and exit cost a little more with it.
    pub favor_dynmods: bool,
}

/// Probes the host. Never fails: every unknown becomes a reported reason.
///
/// Costs six short-lived `fork`s and a few small file reads; call it once
/// at startup rather than per tool call.
pub fn probe() -> HostCapabilities {
    let namespaces = probe_namespaces();
    let landlock = probe_landlock();
    let seccomp = probe_seccomp();
    let no_new_privs = probe_no_new_privs();
    let cgroups = probe_cgroups();
    let missing = missing_protections(&namespaces, &landlock, &seccomp, &no_new_privs, &cgroups);
    let landlock_audit = match crate::audit::log(landlock.abi) {
        Ok(_) => Capability::available(),
        Err(reason) => Capability::unavailable(reason),
    };
    HostCapabilities {
        kernel: kernel_release(),
        namespaces,
        landlock,
        landlock_audit,
        seccomp,
        no_new_privs,
        cgroups,
        missing,
    }
}

fn missing_protections(
    namespaces: &NamespaceSupport,
    landlock: &LandlockSupport,
    seccomp: &Capability,
    no_new_privs: &Capability,
    cgroups: &CgroupSupport,
) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, capability) in namespaces.kinds() {
        if !capability.available {
            missing.push(format!("namespaces.{name}"));
        }
    }
    if !landlock.available {
        missing.push("landlock".to_owned());
    }
    if !seccomp.available {
        missing.push("seccomp".to_owned());
    }
    if !no_new_privs.available {
        missing.push("no_new_privs".to_owned());
    }
    if cgroups.version == CgroupVersion::None {
        missing.push("cgroups".to_owned());
    } else if !cgroups.writable {
        // Mounted but unusable: we could not apply resource limits.
        missing.push("cgroups.writable".to_owned());
    }
    missing
}

// ---------------------------------------------------------------------------
// Kernel release
// ---------------------------------------------------------------------------

fn kernel_release() -> String {
    // SAFETY: `utsname` is a struct of plain `c_char` arrays, for which all
    // zero bytes is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname` that outlives the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return format!("unknown (uname failed: {})", io::Error::last_os_error());
    }
    // Read up to the terminating NUL without trusting it to exist, so no
    // pointer-based `CStr` (and no further unsafe) is needed.
    let bytes: Vec<u8> = uts.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

fn probe_namespaces() -> NamespaceSupport {
    // The sandbox always creates a user namespace first: it is what lets an
    // unprivileged user create the others. So every kind is tried together
    // with CLONE_NEWUSER. This also keeps the probe honest when running as
    // root: root could create e.g. a PID namespace without a user namespace
    // even on hosts where unprivileged user namespaces are disabled, and the
    // sandbox would still fail there.
    NamespaceSupport {
        user: probe_unshare(0, "CLONE_NEWUSER"),
        pid: probe_unshare(libc::CLONE_NEWPID, "CLONE_NEWUSER|CLONE_NEWPID"),
        mount: probe_unshare(libc::CLONE_NEWNS, "CLONE_NEWUSER|CLONE_NEWNS"),
        ipc: probe_unshare(libc::CLONE_NEWIPC, "CLONE_NEWUSER|CLONE_NEWIPC"),
        uts: probe_unshare(libc::CLONE_NEWUTS, "CLONE_NEWUSER|CLONE_NEWUTS"),
        net: probe_unshare(libc::CLONE_NEWNET, "CLONE_NEWUSER|CLONE_NEWNET"),
    }
}

/// Exit status the probe child uses when errno cannot be passed through an
/// exit code (errno 0 or above 254); real errno values are far below it.
const UNREPRESENTABLE_ERRNO: libc::c_int = 255;

/// Tries `unshare(CLONE_NEWUSER | extra)` in a throw-away child process.
///
/// A child is needed for two reasons: unshare changes the caller for good
/// (we must not move the server into new namespaces), and
/// `unshare(CLONE_NEWUSER)` refuses with EINVAL in a multi-threaded process,
/// which the caller usually is (tokio). The forked child has one thread.
fn probe_unshare(extra: libc::c_int, flags_text: &str) -> Capability {
    let flags = libc::CLONE_NEWUSER | extra;

    // SAFETY: fork() has no memory-safety preconditions of its own. The
    // hazard is what the child may do afterwards: if the caller has other
    // threads, only the forking thread exists in the child, and any lock
    // another thread held at fork time (malloc, stdio, std's env lock...)
    // stays locked forever there. So the child below only calls
    // async-signal-safe functions: unshare(2), reads the thread-local errno,
    // and _exit(2). It allocates nothing, takes no lock, and never returns
    // into Rust code (no destructors, atexit handlers or stdio flushes run).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Child: unshare, report errno through the exit status, exit.
        // SAFETY: unshare only takes an integer; it affects just this child.
        let code = if unsafe { libc::unshare(flags) } == 0 {
            0
        } else {
            // Reading errno is a thread-local load; no allocation or lock.
            match io::Error::last_os_error().raw_os_error() {
                Some(errno) if (1..UNREPRESENTABLE_ERRNO).contains(&errno) => errno,
                _ => UNREPRESENTABLE_ERRNO,
            }
        };
        // SAFETY: _exit ends the child immediately without running any
        // user-space cleanup, which is exactly what a forked child of a
        // multi-threaded process must do.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return Capability::unavailable(format!("could not fork a probe process: {}", io::Error::last_os_error()));
    }

    let status = match wait_for_child(pid) {
        Ok(status) => status,
        Err(err) => {
            return Capability::unavailable(format!("could not wait for the {flags_text} probe process: {err}"));
        }
    };
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Capability::available(),
            UNREPRESENTABLE_ERRNO => {
                Capability::unavailable(format!("unshare({flags_text}) failed with an unknown error"))
            }
            errno => Capability::unavailable(format!(
                "unshare({flags_text}) failed: {}",
                io::Error::from_raw_os_error(errno)
            )),
        }
    } else if libc::WIFSIGNALED(status) {
        // E.g. a seccomp policy around us that kills on unshare.
        Capability::unavailable(format!(
            "the {flags_text} probe process was killed by signal {}",
            libc::WTERMSIG(status)
        ))
    } else {
        Capability::unavailable(format!("the {flags_text} probe process ended abnormally (wait status {status:#x})"))
    }
}

/// Reaps our child `pid`, retrying when a signal interrupts the wait.
fn wait_for_child(pid: libc::pid_t) -> io::Result<libc::c_int> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the duration of the
        // call, and `pid` is a child this thread just forked.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

// ---------------------------------------------------------------------------
// Landlock
// ---------------------------------------------------------------------------

/// `LANDLOCK_CREATE_RULESET_VERSION` from <linux/landlock.h>: instead of
/// creating a ruleset, return the highest supported ABI version.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;

fn probe_landlock() -> LandlockSupport {
    // SAFETY: with LANDLOCK_CREATE_RULESET_VERSION the kernel requires a null
    // attribute pointer and size 0 and reads no memory; it only returns a
    // number. No file descriptor is created, so nothing leaks.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret > 0 {
        return match u32::try_from(ret) {
            Ok(abi) => LandlockSupport { available: true, abi: Some(abi), reason: None },
            Err(_) => landlock_unavailable(format!("kernel reported an invalid ABI version {ret}")),
        };
    }
    if ret == 0 {
        // Not a documented outcome; do not pretend to know the ABI.
        return landlock_unavailable("kernel reported ABI version 0".to_owned());
    }
    let err = io::Error::last_os_error();
    let reason = match err.raw_os_error() {
        Some(libc::ENOSYS) => format!("Landlock is not built into this kernel: {err}"),
        Some(libc::EOPNOTSUPP) => {
            format!("Landlock is built in but disabled at boot (not in the lsm= list): {err}")
        }
        _ => format!("landlock_create_ruleset failed: {err}"),
    };
    landlock_unavailable(reason)
}

fn landlock_unavailable(reason: String) -> LandlockSupport {
    LandlockSupport { available: false, abi: None, reason: Some(reason) }
}

// ---------------------------------------------------------------------------
// seccomp and no_new_privs
// ---------------------------------------------------------------------------

fn probe_seccomp() -> Capability {
    // prctl is variadic; always pass all four extra arguments as zero so the
    // kernel never sees stray register contents.
    // SAFETY: PR_GET_SECCOMP only reads the calling thread's seccomp mode.
    let mode = unsafe {
        libc::prctl(
            libc::PR_GET_SECCOMP,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match mode {
        // 0: no filter yet. 2: already filtered (e.g. by a container
        // runtime); filters stack, so we can still add ours.
        0 | 2 => {}
        // Strict mode would have killed us on prctl; keep it for completeness.
        1 => return Capability::unavailable("the process is in seccomp strict mode"),
        -1 => {
            return Capability::unavailable(format!(
                "prctl(PR_GET_SECCOMP) failed (kernel built without seccomp?): {}",
                io::Error::last_os_error()
            ));
        }
        other => {
            return Capability::unavailable(format!("prctl(PR_GET_SECCOMP) returned {other}"));
        }
    }

    // Filter support, without installing a filter: a null program pointer
    // makes a filter-capable kernel fail with EFAULT while copying the
    // program, before any privilege check or installation; a kernel without
    // CONFIG_SECCOMP_FILTER fails earlier with EINVAL.
    // SAFETY: the null filter pointer is never dereferenced by user space and
    // makes the kernel reject the request, so the process is left unchanged.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == 0 {
        // Cannot happen with a null program; if it somehow did, a filter is
        // in place, which proves support.
        return Capability::available();
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EFAULT) => Capability::available(),
        Some(libc::EINVAL) => {
            Capability::unavailable(format!("seccomp filter mode is not supported by this kernel: {err}"))
        }
        _ => Capability::unavailable(format!("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) failed: {err}")),
    }
}

fn probe_no_new_privs() -> Capability {
    // Only read the flag: setting it would be irreversible for this process
    // (and would, e.g., stop setuid helpers the server may exec).
    // SAFETY: PR_GET_NO_NEW_PRIVS only reads a flag of the calling thread;
    // the kernel requires the remaining arguments to be zero.
    let ret = unsafe {
        libc::prctl(
            libc::PR_GET_NO_NEW_PRIVS,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        Capability::unavailable(format!("prctl(PR_GET_NO_NEW_PRIVS) failed: {}", io::Error::last_os_error()))
    } else {
        Capability::available()
    }
}

// ---------------------------------------------------------------------------
// cgroups
// ---------------------------------------------------------------------------

/// The cgroup v1 controllers the kernel knows (include/linux/cgroup_subsys.h).
/// Mount super options mix controllers with options such as `rw`, `xattr`,
/// `clone_children` or `release_agent=...`; an allow-list avoids reporting an
/// option as a controller.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Path inside the hierarchy that is mounted: `/` normally, deeper for
    /// bind mounts such as a container's view of its own cgroup.
    pub(crate) root: String,
    pub(crate) mount_point: String,
    /// v1 controllers of this hierarchy; empty for cgroup2 and named hierarchies.
    pub(crate) controllers: Vec<String>,
}

/// The cgroup mounts found in mountinfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupMounts {
    /// The first cgroup2 mount.
    pub(crate) v2: Option<CgroupMount>,
    /// All v1 mounts, including named hierarchies (with no controllers).
    pub(crate) v1: Vec<CgroupMount>,
    /// Some cgroup mount carries `favordynmods` (the kernel's setting for
    /// every hierarchy at once; see [`CgroupSupport::favor_dynmods`]).
    pub(crate) favor_dynmods: bool,
}

impl CgroupMounts {
    /// The first v1 mount carrying `controller`.
    pub(crate) fn v1_with(&self, controller: &str) -> Option<&CgroupMount> {
        self.v1.iter().find(|mount| mount.controllers.iter().any(|c| c == controller))
    }

    fn version(&self) -> CgroupVersion {
        // A v1 mount without controllers (name=systemd) provides no resource
        // control, so it does not make a host "v1" or "hybrid".
        let has_v1 = self.v1.iter().any(|mount| !mount.controllers.is_empty());
        match (has_v1, self.v2.is_some()) {
            (true, true) => CgroupVersion::Hybrid,
            (true, false) => CgroupVersion::V1,
            (false, true) => CgroupVersion::V2,
            (false, false) => CgroupVersion::None,
        }
    }
}

/// Finds the cgroup mounts in the text of `/proc/self/mountinfo`.
///
/// Line format (proc(5)): `id parent major:minor root mount-point options
/// [optional fields...] - fstype source super-options`. The optional fields
/// vary in number, so the fields after them are found from the `-` separator.
/// Unparseable lines are skipped.
pub(crate) fn parse_cgroup_mounts(mountinfo: &str) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The separator comes after at least the six fixed fields.
        let Some(separator) = fields.iter().skip(6).position(|&f| f == "-").map(|i| i + 6) else {
            continue;
        };
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let fstype = fields.get(separator + 1).copied().unwrap_or_default();
        let super_options = fields.get(separator + 3).copied().unwrap_or_default();
        if matches!(fstype, "cgroup" | "cgroup2") && super_options.split(',').any(|option| option == "favordynmods") {
            mounts.favor_dynmods = true;
        }
        let mut mount = CgroupMount {
            root: unescape_mountinfo(root),
            mount_point: unescape_mountinfo(mount_point),
            controllers: Vec::new(),
        };
        match fstype {
            // Later cgroup2 mounts are usually bind mounts of the same
            // hierarchy (e.g. for a container); the first one is the host's.
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(mount),
            "cgroup" => {
                mount.controllers = super_options
                    .split(',')
                    .filter(|option| V1_CONTROLLERS.contains(option))
                    .map(str::to_owned)
                    .collect();
                mounts.v1.push(mount);
            }
            _ => {}
        }
    }
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011` tab, `\012`
/// newline, `\134` backslash) so paths with such characters still work.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`: the process's cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMembership {
    /// 0 for the unified (v2) hierarchy.
    pub(crate) hierarchy_id: u32,
    /// v1 controllers (and `name=...` for named hierarchies); empty for v2.
    pub(crate) controllers: Vec<String>,
    /// Path relative to the hierarchy root (as seen from our cgroup namespace).
    pub(crate) path: String,
}

/// Parses `/proc/self/cgroup`: lines of `hierarchy-id:controllers:path`
/// (cgroups(7)). The path may itself contain `:`, so only the first two
/// colons split. Unparseable lines are skipped.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<CgroupMembership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            let path = parts.next()?.to_owned();
            Some(CgroupMembership { hierarchy_id, controllers, path })
        })
        .collect()
}

/// The directory of cgroup `path` given where its hierarchy is mounted.
///
/// A mount may show only a subtree (its `root` is then e.g. `/docker/<id>`,
/// as in containers without a cgroup namespace); the part of our path below
/// that root is what lies below the mount point. None when our cgroup is not
/// inside the mounted subtree at all.
pub(crate) fn cgroup_dir(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let below = if root.is_empty() {
        path
    } else if path == root {
        ""
    } else {
        path.strip_prefix(root)?.strip_prefix('/')?
    };
    let mut dir = PathBuf::from(&mount.mount_point);
    for component in below.split('/').filter(|c| !c.is_empty()) {
        // A ".." would climb out of the mounted hierarchy; never follow it.
        if component == ".." {
            return None;
        }
        dir.push(component);
    }
    Some(dir)
}

fn probe_cgroups() -> CgroupSupport {
    let mut notes: Vec<String> = Vec::new();
    let mounts = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => parse_cgroup_mounts(&text),
        Err(err) => {
            notes.push(format!("cannot read /proc/self/mountinfo: {err}"));
            CgroupMounts::default()
        }
    };

    let v2_controllers = match &mounts.v2 {
        Some(v2) => {
            let file = Path::new(&v2.mount_point).join("cgroup.controllers");
            match fs::read_to_string(&file) {
                Ok(text) => text.split_whitespace().map(str::to_owned).collect(),
                Err(err) => {
                    notes.push(format!("cannot read {}: {err}", file.display()));
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };

    let v1_controllers = mounts
        .v1
        .iter()
        .flat_map(|mount| {
            mount
                .controllers
                .iter()
                .map(|name| CgroupController { name: name.clone(), mount: mount.mount_point.clone() })
        })
        .collect();

    let version = mounts.version();
    let (writable, writable_parent) = if version == CgroupVersion::None {
        if notes.is_empty() {
            notes.push("no cgroup filesystem is mounted".to_owned());
        }
        (false, None)
    } else {
        match own_cgroup_dir(&mounts, &v2_controllers) {
            Ok(parent) => {
                let usable = try_create_child_cgroup(&parent).and_then(|()| v2_limits_available(&mounts, &parent));
                let writable = match usable {
                    Ok(()) => true,
                    Err(note) => {
                        notes.push(note);
                        false
                    }
                };
                (writable, Some(parent.display().to_string()))
            }
            Err(note) => {
                notes.push(note);
                (false, None)
            }
        }
    };

    CgroupSupport {
        version,
        v2_mount: mounts.v2.as_ref().map(|v2| v2.mount_point.clone()),
        v1_controllers,
        v2_controllers,
        writable,
        writable_parent,
        reason: if notes.is_empty() { None } else { Some(notes.join("; ")) },
        favor_dynmods: mounts.favor_dynmods,
    }
}

/// Our own cgroup directory in the hierarchy the sandbox would put limits
/// in. Memory is the limit that matters most, so prefer wherever the memory
/// controller lives: v2 if it has it, else the v1 memory hierarchy; with
/// neither, fall back to v2 (a v2-only host with memory not delegated).
fn own_cgroup_dir(mounts: &CgroupMounts, v2_controllers: &[String]) -> Result<PathBuf, String> {
    let v2_has_memory = v2_controllers.iter().any(|c| c == "memory");
    let v1_memory = mounts.v1_with("memory");
    let (mount, in_v2) = match (&mounts.v2, v1_memory) {
        (Some(v2), _) if v2_has_memory => (v2, true),
        (_, Some(memory)) => (memory, false),
        (Some(v2), None) => (v2, true),
        (None, None) => {
            return Err("no memory controller or cgroup2 hierarchy is mounted".to_owned());
        }
    };

    let text =
        fs::read_to_string("/proc/self/cgroup").map_err(|err| format!("cannot read /proc/self/cgroup: {err}"))?;
    let memberships = parse_proc_cgroup(&text);
    let membership = memberships.iter().find(|m| {
        if in_v2 {
            m.hierarchy_id == 0 && m.controllers.is_empty()
        } else {
            m.controllers.iter().any(|c| c == "memory")
        }
    });
    let Some(membership) = membership else {
        let hierarchy = if in_v2 { "cgroup2" } else { "memory" };
        return Err(format!("/proc/self/cgroup lists no {hierarchy} cgroup for this process"));
    };
    cgroup_dir(mount, &membership.path).ok_or_else(|| {
        format!(
            "our cgroup {} is outside the hierarchy mounted at {} (mount root {})",
            membership.path, mount.mount_point, mount.root
        )
    })
}

/// On cgroup v2, limits need the memory and pids controllers in our own
/// cgroup (`cgroup.controllers`, what its parent delegates); a cgroup we may
/// create without them would limit nothing.
fn v2_limits_available(mounts: &CgroupMounts, dir: &Path) -> Result<(), String> {
    if !mounts.v2.as_ref().is_some_and(|v2| dir.starts_with(&v2.mount_point)) {
        return Ok(());
    }
    let file = dir.join("cgroup.controllers");
    let listed = fs::read_to_string(&file).map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    let absent: Vec<&str> =
        ["memory", "pids"].into_iter().filter(|wanted| !listed.split_whitespace().any(|c| c == *wanted)).collect();
    if absent.is_empty() {
        return Ok(());
    }
    Err(format!("no {} controller is delegated to {}", absent.join(" or "), dir.display()))
}

/// Distinguishes probe directories when several threads probe at once.
static PROBE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates and removes an empty child cgroup below `parent`: the real test
/// of whether we may create cgroups (permissions, read-only cgroupfs in
/// containers, delegation), which no mode bit can tell us reliably.
fn try_create_child_cgroup(parent: &Path) -> Result<(), String> {
    let child =
        parent.join(format!("codexos-probe-{}-{}", std::process::id(), PROBE_COUNTER.fetch_add(1, Ordering::Relaxed)));
    fs::create_dir(&child).map_err(|err| format!("cannot create a child cgroup in {}: {err}", parent.display()))?;
    // A new cgroup has no processes, so rmdir succeeds unless something is
    // badly wrong; then say so rather than claim the hierarchy is usable.
    fs::remove_dir(&child).map_err(|err| format!("created {} but cannot remove it: {err}", child.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn mount(root: &str, mount_point: &str, controllers: &[&str]) -> CgroupMount {
        CgroupMount {
            root: root.to_owned(),
            mount_point: mount_point.to_owned(),
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    // A cgroup v2-only host (Fedora, Ubuntu 22.04+, Debian 11+).
    const MOUNTINFO_V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 24 0:25 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:5 - pstore pstore rw
";

    // A cgroup v1 host (CentOS 7 style, systemd "legacy" mode).
    const MOUNTINFO_V1: &str = "\
18 40 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuset,clone_children
32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
";

    // A hybrid host (Ubuntu 20.04 style): v1 controllers plus an empty
    // unified hierarchy for systemd.
    const MOUNTINFO_HYBRID: &str = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
";

    #[test]
    fn parses_v2_mountinfo() {
        let mounts = parse_cgroup_mounts(MOUNTINFO_V2);
        assert_eq!(
            mounts,
            CgroupMounts { v2: Some(mount("/", "/sys/fs/cgroup", &[])), v1: vec![], favor_dynmods: false }
        );
        assert_eq!(mounts.version(), CgroupVersion::V2);
    }

    #[test]
    fn parses_v1_mountinfo() {
        let mounts = parse_cgroup_mounts(MOUNTINFO_V1);
        assert_eq!(
            mounts,
            CgroupMounts {
                v2: None,
                v1: vec![
                    // name=systemd, xattr and release_agent are not controllers.
                    mount("/", "/sys/fs/cgroup/systemd", &[]),
                    mount("/", "/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
                    mount("/", "/sys/fs/cgroup/memory", &["memory"]),
                    mount("/", "/sys/fs/cgroup/cpuset", &["cpuset"]),
                    mount("/", "/sys/fs/cgroup/pids", &["pids"]),
                ],
                favor_dynmods: false,
            }
        );
        assert_eq!(mounts.version(), CgroupVersion::V1);
        assert_eq!(mounts.v1_with("cpuacct").unwrap().mount_point, "/sys/fs/cgroup/cpu,cpuacct");
    }

    #[test]
    fn parses_hybrid_mountinfo() {
        let mounts = parse_cgroup_mounts(MOUNTINFO_HYBRID);
        assert_eq!(
            mounts,
            CgroupMounts {
                v2: Some(mount("/", "/sys/fs/cgroup/unified", &[])),
                v1: vec![
                    mount("/", "/sys/fs/cgroup/systemd", &[]),
                    mount("/", "/sys/fs/cgroup/memory", &["memory"]),
                    mount("/", "/sys/fs/cgroup/net_cls,net_prio", &["net_cls", "net_prio"]),
                ],
                favor_dynmods: false,
            }
        );
        assert_eq!(mounts.version(), CgroupVersion::Hybrid);
    }

    #[test]
    fn named_hierarchy_alone_is_not_v1() {
        let text = "26 25 0:22 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n";
        assert_eq!(parse_cgroup_mounts(text).version(), CgroupVersion::None);
        assert_eq!(parse_cgroup_mounts("").version(), CgroupVersion::None);
    }

    #[test]
    fn mountinfo_optional_fields_escapes_and_garbage() {
        // No optional fields, several optional fields, an escaped space in
        // the mount point, a container bind mount with a non-root root, and
        // lines that do not parse.
        let text = "\
40 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 31 0:39 / /mnt/my\\040cgroups rw,relatime shared:3 master:1 propagate_from:2 - cgroup cgroup rw,memory
1290 1280 0:26 /docker/0123abcd /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:13 - cgroup cgroup rw,pids
not a mountinfo line
42 31 0:40 / /x rw - cgroup
";
        let mounts = parse_cgroup_mounts(text);
        assert_eq!(
            mounts,
            CgroupMounts {
                v2: Some(mount("/", "/sys/fs/cgroup/unified", &[])),
                v1: vec![
                    mount("/", "/mnt/my cgroups", &["memory"]),
                    mount("/docker/0123abcd", "/sys/fs/cgroup/pids", &["pids"]),
                    // Truncated line: fstype known, no super options.
                    mount("/", "/x", &[]),
                ],
                favor_dynmods: false,
            }
        );
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        // Not an escape: left as is.
        assert_eq!(unescape_mountinfo(r"/a\09x\"), r"/a\09x\");
    }

    #[test]
    fn parses_proc_self_cgroup() {
        // Hybrid host: v1 hierarchies, a named one and the unified (0::) line.
        let text = "\
12:pids:/user.slice/user-1000.slice/session-2.scope
11:memory:/user.slice/user-1000.slice/session-2.scope
4:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
garbage
";
        let membership = |id, controllers: &[&str], path: &str| CgroupMembership {
            hierarchy_id: id,
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
            path: path.to_owned(),
        };
        assert_eq!(
            parse_proc_cgroup(text),
            vec![
                membership(12, &["pids"], "/user.slice/user-1000.slice/session-2.scope"),
                membership(11, &["memory"], "/user.slice/user-1000.slice/session-2.scope"),
                membership(4, &["cpu", "cpuacct"], "/user.slice"),
                membership(1, &["name=systemd"], "/user.slice/user-1000.slice/session-2.scope"),
                membership(0, &[], "/user.slice/user-1000.slice/session-2.scope"),
            ]
        );
        // v2-only host; a path containing a colon stays whole.
        assert_eq!(
            parse_proc_cgroup("0::/system.slice/odd:name.service\n"),
            vec![membership(0, &[], "/system.slice/odd:name.service")]
        );
    }

    #[test]
    fn resolves_cgroup_directories() {
        let host = mount("/", "/sys/fs/cgroup/memory", &["memory"]);
        assert_eq!(
            cgroup_dir(&host, "/process_api/85a7"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/85a7"))
        );
        assert_eq!(cgroup_dir(&host, "/"), Some(PathBuf::from("/sys/fs/cgroup/memory")));

        // Container without a cgroup namespace: the mount shows only its subtree.
        let container = mount("/docker/abc", "/sys/fs/cgroup/memory", &["memory"]);
        assert_eq!(cgroup_dir(&container, "/docker/abc"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(cgroup_dir(&container, "/docker/abc/inner"), Some(PathBuf::from("/sys/fs/cgroup/memory/inner")));
        // Outside the mounted subtree, or a mere name prefix: no directory.
        assert_eq!(cgroup_dir(&container, "/docker/other"), None);
        assert_eq!(cgroup_dir(&container, "/docker/abcdef"), None);
        // Paths that climb out (seen across cgroup namespaces) are refused.
        assert_eq!(cgroup_dir(&host, "/../sibling"), None);
    }

    #[test]
    fn v2_limits_need_memory_and_pids_delegated() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = CgroupMounts {
            v2: Some(mount("/", &dir.path().display().to_string(), &[])),
            v1: vec![],
            favor_dynmods: false,
        };
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory io\n").unwrap();
        let err = v2_limits_available(&mounts, dir.path()).unwrap_err();
        assert!(err.starts_with("no pids controller is delegated to "), "{err}");
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory io pids\n").unwrap();
        assert_eq!(v2_limits_available(&mounts, dir.path()), Ok(()));
        // A v1 directory (outside the cgroup2 mount) is not asked.
        assert_eq!(v2_limits_available(&mounts, Path::new("/sys/fs/cgroup/memory")), Ok(()));
    }

    #[test]
    fn missing_lists_every_absent_protection() {
        let no = || Capability::unavailable("test");
        let namespaces = NamespaceSupport {
            user: no(),
            pid: Capability::available(),
            mount: Capability::available(),
            ipc: Capability::available(),
            uts: Capability::available(),
            net: no(),
        };
        let landlock = landlock_unavailable("test".to_owned());
        let mut cgroups = CgroupSupport {
            version: CgroupVersion::V2,
            v2_mount: Some("/sys/fs/cgroup".to_owned()),
            v1_controllers: vec![],
            v2_controllers: vec![],
            writable: false,
            writable_parent: None,
            reason: None,
            favor_dynmods: false,
        };
        assert_eq!(
            missing_protections(&namespaces, &landlock, &no(), &no(), &cgroups),
            vec!["namespaces.user", "namespaces.net", "landlock", "seccomp", "no_new_privs", "cgroups.writable"]
        );
        cgroups.version = CgroupVersion::None;
        assert_eq!(missing_protections(&namespaces, &landlock, &no(), &no(), &cgroups).last().unwrap(), "cgroups");
    }

    #[test]
    fn favordynmods_is_read_from_cgroup_superblock_options_only() {
        let plain = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                     45 27 0:38 / /srv/favordynmods rw,relatime - ext4 /dev/vda rw,favordynmods";
        assert!(!parse_cgroup_mounts(plain).favor_dynmods);
        let favoured = format!("{plain}\n46 27 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 none rw,favordynmods");
        assert!(parse_cgroup_mounts(&favoured).favor_dynmods);
    }

    #[test]
    fn serializes_with_snake_case_names() {
        let capabilities = HostCapabilities {
            kernel: "6.1.0".to_owned(),
            namespaces: NamespaceSupport {
                user: Capability::available(),
                pid: Capability::available(),
                mount: Capability::available(),
                ipc: Capability::available(),
                uts: Capability::available(),
                net: Capability::unavailable("no"),
            },
            landlock: LandlockSupport { available: true, abi: Some(4), reason: None },
            landlock_audit: Capability::unavailable("needs Landlock ABI 7 (Linux 6.15)"),
            seccomp: Capability::available(),
            no_new_privs: Capability::available(),
            cgroups: CgroupSupport {
                version: CgroupVersion::Hybrid,
                v2_mount: Some("/sys/fs/cgroup/unified".to_owned()),
                v1_controllers: vec![CgroupController {
                    name: "memory".to_owned(),
                    mount: "/sys/fs/cgroup/memory".to_owned(),
                }],
                v2_controllers: vec![],
                writable: true,
                writable_parent: Some("/sys/fs/cgroup/memory".to_owned()),
                reason: None,
                favor_dynmods: true,
            },
            missing: vec!["namespaces.net".to_owned()],
        };
        let ok = serde_json::json!({ "available": true, "reason": null });
        assert_eq!(
            serde_json::to_value(&capabilities).unwrap(),
            serde_json::json!({
                "kernel": "6.1.0",
                "namespaces": {
                    "user": ok, "pid": ok, "mount": ok, "ipc": ok, "uts": ok,
                    "net": { "available": false, "reason": "no" },
                },
                "landlock": { "available": true, "abi": 4, "reason": null },
                "landlock_audit": { "available": false, "reason": "needs Landlock ABI 7 (Linux 6.15)" },
                "seccomp": ok,
                "no_new_privs": ok,
                "cgroups": {
                    "version": "hybrid",
                    "v2_mount": "/sys/fs/cgroup/unified",
                    "v1_controllers": [{ "name": "memory", "mount": "/sys/fs/cgroup/memory" }],
                    "v2_controllers": [],
                    "writable": true,
                    "writable_parent": "/sys/fs/cgroup/memory",
                    "reason": null,
                    "favor_dynmods": true,
                },
                "missing": ["namespaces.net"],
            })
        );
        assert!(!capabilities.is_complete());
        for version in [CgroupVersion::V1, CgroupVersion::V2, CgroupVersion::None] {
            let text = serde_json::to_string(&version).unwrap();
            assert!(["\"v1\"", "\"v2\"", "\"none\""].contains(&text.as_str()), "{text}");
        }
    }

    // ----- Probing this host, checked against independent evidence -----

    fn proc_status_has(key: &str) -> bool {
        fs::read_to_string("/proc/self/status").unwrap().lines().any(|line| line.starts_with(key))
    }

    /// Every unavailable capability must say why, and available ones must not.
    fn assert_reason_matches(name: &str, capability: &Capability) {
        assert_eq!(capability.available, capability.reason.is_none(), "{name}: {capability:?}");
    }

    #[test]
    fn kernel_matches_osrelease() {
        let osrelease = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(probe().kernel, osrelease.trim());
    }

    #[test]
    fn seccomp_and_no_new_privs_match_proc_status() {
        let caps = probe();
        // Seccomp_filters: is printed only with CONFIG_SECCOMP_FILTER (5.9+);
        // Seccomp: only with CONFIG_SECCOMP.
        if proc_status_has("Seccomp_filters:") {
            assert!(caps.seccomp.available, "{:?}", caps.seccomp);
        }
        if !proc_status_has("Seccomp:") {
            assert!(!caps.seccomp.available, "{:?}", caps.seccomp);
        }
        // NoNewPrivs: is printed on every kernel since 4.10.
        if proc_status_has("NoNewPrivs:") {
            assert!(caps.no_new_privs.available, "{:?}", caps.no_new_privs);
        }
        assert_reason_matches("seccomp", &caps.seccomp);
        assert_reason_matches("no_new_privs", &caps.no_new_privs);
    }

    #[test]
    fn probe_leaves_the_calling_thread_unchanged() {
        // Both flags are per thread, so compare on this thread around a probe.
        fn flags() -> (libc::c_int, libc::c_int) {
            let zero: libc::c_ulong = 0;
            // SAFETY: both calls only read a flag of the calling thread; the
            // remaining arguments are zero as the kernel requires.
            unsafe {
                (
                    libc::prctl(libc::PR_GET_SECCOMP, zero, zero, zero, zero),
                    libc::prctl(libc::PR_GET_NO_NEW_PRIVS, zero, zero, zero, zero),
                )
            }
        }
        let before = flags();
        let ns_before = fs::read_link("/proc/thread-self/ns/user").unwrap();
        let _ = probe();
        assert_eq!(flags(), before);
        assert_eq!(fs::read_link("/proc/thread-self/ns/user").unwrap(), ns_before);
    }

    #[test]
    fn namespaces_match_independent_checks() {
        let caps = probe();
        let ns = &caps.namespaces;
        for (name, capability) in ns.kinds() {
            assert_reason_matches(name, capability);
            // /proc/self/ns/<kind> exists exactly when the kernel has the
            // namespace type built in, so a missing file means unavailable.
            let file = if name == "mount" { "mnt" } else { name };
            if !Path::new("/proc/self/ns").join(file).exists() {
                assert!(!capability.available, "{name}: {capability:?}");
            }
            // Nothing is possible without the user namespace.
            if !ns.user.available {
                assert!(!capability.available, "{name}: {capability:?}");
            }
        }
        // Unprivileged user namespaces are capped by this sysctl; 0 disables them.
        let max: u64 = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap().trim().parse().unwrap();
        if ns.user.available {
            assert!(max > 0);
        }
        if max == 0 {
            assert!(!ns.user.available);
        }

        // Cross-check through std's own fork/exec path: unshare in a child
        // before exec'ing `true`; the spawn fails with unshare's errno.
        use std::os::unix::process::CommandExt;
        for (name, capability, flags) in
            [("user", &ns.user, libc::CLONE_NEWUSER), ("net", &ns.net, libc::CLONE_NEWUSER | libc::CLONE_NEWNET)]
        {
            let mut command = std::process::Command::new("true");
            // SAFETY: the closure runs in the forked child before exec and only
            // calls unshare(2) and reads errno, both async-signal-safe.
            unsafe {
                command.pre_exec(
                    move || {
                        if libc::unshare(flags) == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
                    },
                );
            }
            match command.status() {
                Ok(status) => {
                    assert!(status.success());
                    assert!(capability.available, "{name}: {capability:?}");
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    assert!(!capability.available, "{name}: {capability:?}");
                    let reason = capability.reason.as_deref().unwrap();
                    assert!(reason.contains(&err.to_string()), "{reason} vs {err}");
                }
            }
        }
    }

    #[test]
    fn landlock_matches_lsm_list() {
        let caps = probe();
        let landlock = &caps.landlock;
        assert_eq!(landlock.available, landlock.abi.is_some(), "{landlock:?}");
        assert_eq!(landlock.available, landlock.reason.is_none(), "{landlock:?}");
        // securityfs (when mounted) lists the active LSMs; Landlock works
        // exactly when it is among them.
        if let Ok(lsm) = fs::read_to_string("/sys/kernel/security/lsm") {
            let active = lsm.trim().split(',').any(|name| name == "landlock");
            assert_eq!(landlock.available, active, "{landlock:?} vs lsm {lsm}");
        }
        // Landlock exists since 5.13; the ABI number only grows.
        if let Some(abi) = landlock.abi {
            assert!((1..100).contains(&abi), "{abi}");
        }

        // Independent path: create a real (ABI 1) ruleset handling only
        // LANDLOCK_ACCESS_FS_EXECUTE. Creating a ruleset restricts nothing
        // until it is enforced, so this is harmless.
        let handled_access_fs: u64 = 1 << 0;
        // SAFETY: the attribute points to a live u64, the ABI 1 layout of
        // struct landlock_ruleset_attr, and its size is passed alongside.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &handled_access_fs as *const u64,
                std::mem::size_of::<u64>(),
                0 as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: fd is the ruleset descriptor just returned to us.
            unsafe { libc::close(libc::c_int::try_from(fd).unwrap()) };
        }
        assert_eq!(landlock.available, fd >= 0, "{landlock:?}");
    }

    #[test]
    fn cgroups_match_mountinfo() {
        let caps = probe();
        let cgroups = &caps.cgroups;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();

        // Crude, independent reading of mountinfo: any cgroup2 line, and any
        // cgroup v1 line whose super options carry more than rw/ro/name=.
        let has_v2 = mountinfo.lines().any(|l| l.contains(" - cgroup2 "));
        let has_v1 = mountinfo.lines().filter(|l| l.contains(" - cgroup ")).any(|l| {
            let options = l.rsplit(' ').next().unwrap();
            options.split(',').any(|o| {
                !["rw", "ro", "xattr", "clone_children", "noprefix"].contains(&o)
                    && !o.starts_with("name=")
                    && !o.starts_with("release_agent=")
            })
        });
        let expected = match (has_v1, has_v2) {
            (true, true) => CgroupVersion::Hybrid,
            (true, false) => CgroupVersion::V1,
            (false, true) => CgroupVersion::V2,
            (false, false) => CgroupVersion::None,
        };
        assert_eq!(cgroups.version, expected);
        assert_eq!(cgroups.v2_mount.is_some(), has_v2);

        if let Some(v2) = &cgroups.v2_mount {
            let controllers = fs::read_to_string(Path::new(v2).join("cgroup.controllers")).unwrap();
            assert_eq!(cgroups.v2_controllers, controllers.split_whitespace().collect::<Vec<_>>());
        }
        for controller in &cgroups.v1_controllers {
            assert!(Path::new(&controller.mount).is_dir(), "{controller:?}");
            assert!(V1_CONTROLLERS.contains(&controller.name.as_str()));
            // The kernel lists each mounted v1 controller in /proc/self/cgroup.
            let own = fs::read_to_string("/proc/self/cgroup").unwrap();
            assert!(parse_proc_cgroup(&own).iter().any(|m| m.controllers.contains(&controller.name)), "{controller:?}");
        }

        if cgroups.writable {
            // The parent is a real cgroup directory and the probe child is gone.
            let parent = Path::new(cgroups.writable_parent.as_deref().unwrap());
            assert!(parent.join("cgroup.procs").is_file(), "{parent:?}");
            let prefix = format!("codexos-probe-{}-", std::process::id());
            let leftovers = fs::read_dir(parent)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&prefix))
                .count();
            // Other tests may be probing concurrently; their directories live
            // for microseconds, so allow for at most a few in flight.
            assert!(leftovers <= 4, "{leftovers} probe directories left behind");
            assert!(cgroups.reason.is_none(), "{cgroups:?}");
        } else {
            assert!(cgroups.reason.is_some(), "{cgroups:?}");
        }
    }

    #[test]
    fn probe_is_consistent_across_threads() {
        // The caller is usually multi-threaded; concurrent probes must not
        // deadlock in the forked children or collide on cgroup directories.
        let results: Vec<HostCapabilities> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(probe)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in &results[1..] {
            assert_eq!(result, &results[0]);
        }
        assert_eq!(results[0].is_complete(), results[0].missing.is_empty());
    }

    #[test]
    fn print_probe_json() {
        // `cargo test -p codexos-sandbox print_probe_json -- --nocapture`
        println!("{}", serde_json::to_string_pretty(&probe()).unwrap());
    }
}
