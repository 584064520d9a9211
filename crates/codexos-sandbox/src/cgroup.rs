//! A cgroup per sandbox: hard limits on the whole process tree (memory,
//! processes) and its accounting (CPU time, peak memory), on cgroup v2 where
//! it has the controllers, on the v1 controller hierarchies otherwise.
//!
//! Cgroups are reused: the kernel makes the first process that joins a
//! freshly created memory cgroup wait several milliseconds, which would
//! dominate a short tool call. An emptied cgroup goes back to a pool with its
//! counters reset (or, for counters that cannot be reset, with a baseline).
//! Pooled cgroups are named after our pid; those of dead processes are
//! removed when the pool first fills.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::policy::Limits;
use crate::probe::{CgroupMounts, cgroup_dir, parse_cgroup_mounts, parse_proc_cgroup};

/// The cgroup directories made for one sandbox; removed on drop, after
/// every process in them is killed.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    layout: Layout,
    /// Counters that cannot be reset, as they were when this run began.
    baseline_oom_kills: u64,
    baseline_pids_refusals: u64,
    baseline_cpu: Duration,
}

const NAME_PREFIX: &str = "codexos-sandbox-";
static POOL: Mutex<Vec<SandboxCgroup>> = Mutex::new(Vec::new());
static CREATED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
enum Layout {
    V2 { dir: PathBuf },
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpuacct: Option<PathBuf> },
}

impl SandboxCgroup {
    /// A cgroup with `limits` written and its counters at zero: a pooled one
    /// when there is one, a new one otherwise.
    pub(crate) fn acquire(limits: &Limits) -> Result<Self, String> {
        let pooled = POOL.lock().map(|mut pool| pool.pop()).unwrap_or(None);
        // A pooled cgroup that cannot be reset is dropped (removed); a fresh one follows.
        if let Some(mut cgroup) = pooled
            && cgroup.reset(limits).is_ok()
        {
            return Ok(cgroup);
        }
        let sequence = CREATED.fetch_add(1, Ordering::Relaxed);
        if sequence == 0 {
            sweep_stale();
        }
        let mut cgroup = Self::create(&format!("{NAME_PREFIX}{}-{sequence}", std::process::id()))?;
        cgroup.reset(limits)?;
        Ok(cgroup)
    }

    /// Returns an emptied cgroup to the pool (or removes it if it will not
    /// empty). v2 cgroups are not pooled: their peak memory cannot be reset.
    pub(crate) fn release(self) {
        if matches!(self.layout, Layout::V1 { .. })
            && self.kill_all()
            && let Ok(mut pool) = POOL.lock()
        {
            pool.push(self);
        }
    }

    /// Writes the limits and zeroes what can be zeroed.
    fn reset(&mut self, limits: &Limits) -> Result<(), String> {
        let unlimited = |value: Option<u64>| value.map_or_else(|| "max".to_owned(), |value| value.to_string());
        match &self.layout {
            Layout::V2 { dir } => {
                write(&dir.join("memory.max"), &unlimited(limits.memory_bytes))?;
                // Without swap limited too, the limit only moves memory to swap.
                let _ = write(&dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &unlimited(limits.pids))?;
            }
            Layout::V1 { memory, pids, cpuacct } => {
                match (memory, limits.memory_bytes) {
                    (Some(dir), bytes) => {
                        let value = bytes.map_or_else(|| "-1".to_owned(), |bytes| bytes.to_string());
                        // memsw must stay at least the plain limit: raise in
                        // the order that keeps that true.
                        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), "-1");
                        write(&dir.join("memory.limit_in_bytes"), &value)?;
                        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &value);
                        let _ = write(&dir.join("memory.max_usage_in_bytes"), "0");
                    }
                    (None, Some(_)) => return Err("no memory controller is available".to_owned()),
                    (None, None) => {}
                }
                match (pids, limits.pids) {
                    (Some(dir), count) => write(&dir.join("pids.max"), &unlimited(count))?,
                    (None, Some(_)) => return Err("no pids controller is available".to_owned()),
                    (None, None) => {}
                }
                if let Some(dir) = cpuacct {
                    let _ = write(&dir.join("cpuacct.usage"), "0");
                }
            }
        }
        self.baseline_oom_kills = self.oom_kills();
        self.baseline_pids_refusals = self.pids_refusals();
        self.baseline_cpu = self.total_cpu().unwrap_or_default();
        Ok(())
    }

    /// Creates the cgroup(s) named `name` below our own, without limits.
    /// Fails when no usable controller can be set up.
    fn create(name: &str) -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|err| format!("mountinfo: {err}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|err| format!("/proc/self/cgroup: {err}"))?;
        let mounts = parse_cgroup_mounts(&mountinfo);
        let memberships = parse_proc_cgroup(&own);
        if let Some(dir) = v2_parent(&mounts, &memberships)? {
            let dir = dir.join(name);
            std::fs::create_dir(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
            return Ok(Self {
                layout: Layout::V2 { dir },
                baseline_oom_kills: 0,
                baseline_pids_refusals: 0,
                baseline_cpu: Duration::ZERO,
            });
        }
        let v1_dir = |controller: &str| -> Result<Option<PathBuf>, String> {
            let Some(mount) = mounts.v1_with(controller) else { return Ok(None) };
            let Some(membership) = memberships.iter().find(|m| m.controllers.iter().any(|c| c == controller)) else {
                return Ok(None);
            };
            let Some(parent) = cgroup_dir(mount, &membership.path) else { return Ok(None) };
            let dir = parent.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => Ok(Some(dir)),
                Err(err) => Err(format!("cannot create {}: {err}", dir.display())),
            }
        };
        // Built as soon as a directory exists, so that an error below still
        // removes what was created.
        let mut cgroup = Self {
            layout: Layout::V1 { memory: None, pids: None, cpuacct: None },
            baseline_oom_kills: 0,
            baseline_pids_refusals: 0,
            baseline_cpu: Duration::ZERO,
        };
        let memory = v1_dir("memory")?;
        if let Layout::V1 { memory: slot, .. } = &mut cgroup.layout {
            *slot = memory;
        }
        let pids = v1_dir("pids")?;
        if let Layout::V1 { pids: slot, .. } = &mut cgroup.layout {
            *slot = pids;
        }
        let cpuacct = v1_dir("cpuacct")?;
        if let Layout::V1 { cpuacct: slot, .. } = &mut cgroup.layout {
            *slot = cpuacct;
        }
        Ok(cgroup)
    }

    /// The `cgroup.procs` files the child writes `0` into to join.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|dir| dir.join("cgroup.procs")).collect()
    }

    fn dirs(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V2 { dir } => vec![dir.as_path()],
            Layout::V1 { memory, pids, cpuacct } => {
                [memory, pids, cpuacct].into_iter().flatten().map(PathBuf::as_path).collect()
            }
        }
    }

    /// CPU time used in this run.
    pub(crate) fn cpu_usage(&self) -> Option<Duration> {
        Some(self.total_cpu()?.saturating_sub(self.baseline_cpu))
    }

    /// CPU time of every process that ever ran in the cgroup.
    fn total_cpu(&self) -> Option<Duration> {
        match &self.layout {
            Layout::V2 { dir } => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let micros = keyed_value(&stat, "usage_usec")?;
                Some(Duration::from_micros(micros))
            }
            Layout::V1 { cpuacct, .. } => {
                let nanos = read_number(&cpuacct.as_ref()?.join("cpuacct.usage"))?;
                Some(Duration::from_nanos(nanos))
            }
        }
    }

    /// The most memory the tree used at once.
    pub(crate) fn peak_memory(&self) -> Option<u64> {
        match &self.layout {
            Layout::V2 { dir } => read_number(&dir.join("memory.peak")),
            Layout::V1 { memory, .. } => read_number(&memory.as_ref()?.join("memory.max_usage_in_bytes")),
        }
    }

    /// Whether the kernel's OOM killer struck inside the cgroup this run.
    pub(crate) fn oom_killed(&self) -> bool {
        self.oom_kills() > self.baseline_oom_kills
    }

    /// Whether a fork was refused for hitting the process limit this run.
    pub(crate) fn pids_limited(&self) -> bool {
        self.pids_refusals() > self.baseline_pids_refusals
    }

    fn oom_kills(&self) -> u64 {
        let file = match &self.layout {
            Layout::V2 { dir } => dir.join("memory.events"),
            Layout::V1 { memory: Some(dir), .. } => dir.join("memory.oom_control"),
            Layout::V1 { memory: None, .. } => return 0,
        };
        std::fs::read_to_string(file).ok().and_then(|text| keyed_value(&text, "oom_kill")).unwrap_or(0)
    }

    fn pids_refusals(&self) -> u64 {
        let dir = match &self.layout {
            Layout::V2 { dir } => dir,
            Layout::V1 { pids: Some(dir), .. } => dir,
            Layout::V1 { pids: None, .. } => return 0,
        };
        std::fs::read_to_string(dir.join("pids.events")).ok().and_then(|text| keyed_value(&text, "max")).unwrap_or(0)
    }

    /// Kills every process still in the cgroup; true if it is now empty.
    pub(crate) fn kill_all(&self) -> bool {
        for _ in 0..100 {
            let mut alive = false;
            for dir in self.dirs() {
                let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else { continue };
                for pid in text.lines().filter_map(|line| line.trim().parse::<libc::pid_t>().ok()) {
                    alive = true;
                    // SAFETY: kill has no memory-safety preconditions; the pid
                    // comes from our own sandbox's cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if !alive {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.kill_all();
        // The kernel releases an emptied cgroup asynchronously, so removal
        // may need retries; they happen off the caller's path.
        let dirs: Vec<PathBuf> = self.dirs().into_iter().map(Path::to_owned).collect();
        let remove = move || {
            for dir in &dirs {
                for _ in 0..500 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        if std::thread::Builder::new().name("cgroup-cleanup".into()).spawn(remove.clone()).is_err() {
            remove();
        }
    }
}

/// Removes pooled cgroups left by processes that no longer exist.
fn sweep_stale() {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else { return };
    let mounts = parse_cgroup_mounts(&mountinfo);
    let memberships = parse_proc_cgroup(&own);
    let mut parents: Vec<PathBuf> = mounts
        .v1
        .iter()
        .filter_map(|mount| {
            let membership =
                memberships.iter().find(|m| m.controllers.iter().any(|c| mount.controllers.contains(c)))?;
            cgroup_dir(mount, &membership.path)
        })
        .collect();
    parents.extend(v2_own_dir(&mounts, &memberships));
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(NAME_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// Where our processes go when our v2 cgroup must hand controllers down:
/// the kernel lets a non-root cgroup enable them for its children only while
/// no process is in it (the "no internal processes" rule).
const SUPERVISOR_LEAF: &str = "codexos-supervisor";

/// Our own v2 cgroup: the one /proc/self/cgroup names, or its parent once
/// we (or another CodexOS process) moved into its supervisor leaf.
fn v2_own_dir(mounts: &CgroupMounts, memberships: &[crate::probe::CgroupMembership]) -> Option<PathBuf> {
    let mount = mounts.v2.as_ref()?;
    let membership = memberships.iter().find(|m| m.hierarchy_id == 0)?;
    let mut dir = cgroup_dir(mount, &membership.path)?;
    if dir.ends_with(SUPERVISOR_LEAF) && dir != Path::new(&mount.mount_point) {
        dir.pop();
    }
    Some(dir)
}

/// Our own v2 cgroup with the memory and pids controllers enabled for its
/// children, enabling them if they are delegated to us (listed in its
/// `cgroup.controllers`); None when v2 does not offer them. A delegated
/// cgroup (systemd's `Delegate=yes`, a container's cgroup namespace) holds
/// our processes, so they first move to a leaf below it, as systemd
/// documents for delegation; its limits still apply to them there.
fn v2_parent(mounts: &CgroupMounts, memberships: &[crate::probe::CgroupMembership]) -> Result<Option<PathBuf>, String> {
    let Some(dir) = v2_own_dir(mounts, memberships) else { return Ok(None) };
    let has_both = |file: &str| {
        let listed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        ["memory", "pids"].iter().all(|wanted| listed.split_whitespace().any(|c| c == *wanted))
    };
    if has_both("cgroup.subtree_control") {
        return Ok(Some(dir));
    }
    if !has_both("cgroup.controllers") {
        return Ok(None);
    }
    let enable = || write(&dir.join("cgroup.subtree_control"), "+memory +pids");
    // The root cgroup (and an empty one) may enable them with processes in it.
    if enable().is_ok() {
        return Ok(Some(dir));
    }
    let leaf = dir.join(SUPERVISOR_LEAF);
    if let Err(err) = std::fs::create_dir(&leaf)
        && err.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {err}", leaf.display()));
    }
    // A process may fork into our cgroup between the moves and the write.
    let mut last_error = String::new();
    for _ in 0..10 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            // One that exited meanwhile fails to move and no longer matters.
            let _ = std::fs::write(leaf.join("cgroup.procs"), pid);
        }
        match enable() {
            Ok(()) => return Ok(Some(dir)),
            Err(err) => last_error = err,
        }
    }
    Err(format!("{last_error} (after moving its processes to {})", leaf.display()))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `key value` per line file.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_are_found() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value(text, "oom"), None);
        assert_eq!(keyed_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
    }

    #[test]
    fn our_v2_cgroup_is_the_one_above_the_supervisor_leaf() {
        let own = |mountinfo: &str, path: &str| {
            v2_own_dir(&parse_cgroup_mounts(mountinfo), &parse_proc_cgroup(&format!("0::{path}\n")))
        };
        let host = "26 24 0:24 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let service = Some(PathBuf::from("/sys/fs/cgroup/system.slice/codexos.service"));
        assert_eq!(own(host, "/system.slice/codexos.service"), service);
        assert_eq!(own(host, "/system.slice/codexos.service/codexos-supervisor"), service);
        // Only the whole last component counts.
        assert_eq!(
            own(host, "/system.slice/my-codexos-supervisor"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/my-codexos-supervisor"))
        );
        // A mount showing only the leaf is not climbed out of.
        let leaf_only = "26 24 0:24 /a/codexos-supervisor /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(own(leaf_only, "/a/codexos-supervisor"), Some(PathBuf::from("/sys/fs/cgroup")));
        // No cgroup2 mount, no v2 cgroup.
        assert_eq!(own("26 24 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n", "/"), None);
    }
}
