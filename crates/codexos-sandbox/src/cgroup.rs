//! A cgroup per sandbox: hard limits on the whole process tree (memory,
//! processes) and its accounting (CPU time, peak memory), on cgroup v2 where
//! it has the controllers, on the v1 controller hierarchies otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::Limits;
use crate::probe::{CgroupMounts, cgroup_dir, parse_cgroup_mounts, parse_proc_cgroup};

/// The cgroup directories made for one sandbox; removed on drop, after
/// every process in them is killed.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    V2 { dir: PathBuf },
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpuacct: Option<PathBuf> },
}

impl SandboxCgroup {
    /// Creates the cgroup(s) named `name` below our own and writes `limits`.
    /// Fails when no usable controller can be set up.
    pub(crate) fn create(name: &str, limits: &Limits) -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|err| format!("mountinfo: {err}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|err| format!("/proc/self/cgroup: {err}"))?;
        let mounts = parse_cgroup_mounts(&mountinfo);
        let memberships = parse_proc_cgroup(&own);
        if let Some(dir) = v2_parent(&mounts, &memberships) {
            let dir = dir.join(name);
            std::fs::create_dir(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
            let cgroup = Self { layout: Layout::V2 { dir: dir.clone() } };
            if let Some(bytes) = limits.memory_bytes {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                // Without swap limited too, the limit only moves memory to swap.
                let _ = write(&dir.join("memory.swap.max"), "0");
            }
            if let Some(pids) = limits.pids {
                write(&dir.join("pids.max"), &pids.to_string())?;
            }
            return Ok(cgroup);
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
        let memory = v1_dir("memory")?;
        let pids = v1_dir("pids")?;
        let cpuacct = v1_dir("cpuacct")?;
        // Built first so that a failed write below still removes the directories.
        let cgroup = Self { layout: Layout::V1 { memory: memory.clone(), pids: pids.clone(), cpuacct } };
        match (&memory, limits.memory_bytes) {
            (Some(dir), Some(bytes)) => {
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                // memsw exists only with swap accounting; where it does, swap counts too.
                let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
            }
            (None, Some(_)) => return Err("no memory controller is available".to_owned()),
            _ => {}
        }
        match (&pids, limits.pids) {
            (Some(dir), Some(count)) => write(&dir.join("pids.max"), &count.to_string())?,
            (None, Some(_)) => return Err("no pids controller is available".to_owned()),
            _ => {}
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

    /// CPU time of every process that ever ran in the cgroup.
    pub(crate) fn cpu_usage(&self) -> Option<Duration> {
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

    /// Whether the kernel's OOM killer struck inside the cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let (file, key) = match &self.layout {
            Layout::V2 { dir } => (dir.join("memory.events"), "oom_kill"),
            Layout::V1 { memory: Some(dir), .. } => (dir.join("memory.oom_control"), "oom_kill"),
            Layout::V1 { memory: None, .. } => return false,
        };
        std::fs::read_to_string(file).ok().and_then(|text| keyed_value(&text, key)).is_some_and(|count| count > 0)
    }

    /// Whether a fork was refused for hitting the process limit.
    pub(crate) fn pids_limited(&self) -> bool {
        let dir = match &self.layout {
            Layout::V2 { dir } => dir,
            Layout::V1 { pids: Some(dir), .. } => dir,
            Layout::V1 { pids: None, .. } => return false,
        };
        std::fs::read_to_string(dir.join("pids.events"))
            .ok()
            .and_then(|text| keyed_value(&text, "max"))
            .is_some_and(|count| count > 0)
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
        for dir in self.dirs() {
            // A cgroup can be removed once empty; dying processes may take a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Our own v2 cgroup, if v2 has the memory and pids controllers for our
/// children and we may create one there.
fn v2_parent(mounts: &CgroupMounts, memberships: &[crate::probe::CgroupMembership]) -> Option<PathBuf> {
    let mount = mounts.v2.as_ref()?;
    let membership = memberships.iter().find(|m| m.hierarchy_id == 0)?;
    let dir = cgroup_dir(mount, &membership.path)?;
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    let has = |controller: &str| enabled.split_whitespace().any(|c| c == controller);
    (has("memory") && has("pids")).then_some(dir)
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
}
