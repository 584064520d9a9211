//! Running one command in the sandbox, from the parent's side: prepare,
//! spawn, feed stdin, collect capped output, watch the limits, reap.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cgroup::SandboxCgroup;
use crate::child::{self, ChildPlan, REPORT_EXIT_STATUS, REPORT_SETUP_FAILED, Report};
use crate::egress::{EgressProxy, NetworkDecision};
use crate::monitor::SyscallMonitor;
use crate::plan;
use crate::policy::{NetworkPolicy, PolicyError, SandboxPolicy};
use crate::probe::HostCapabilities;
use crate::seccomp::Filter;

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxCommand {
    /// Program and arguments; the program is looked up in `PATH` inside.
    pub argv: Vec<String>,
    /// Environment beyond the defaults (`PATH`, `HOME=/tmp`, `TMPDIR`, `LANG`);
    /// nothing of the caller's environment leaks in.
    pub env: Vec<(String, String)>,
    /// Working directory: relative to the workspace, or absolute inside it.
    pub cwd: Option<PathBuf>,
    pub stdin: Vec<u8>,
}

/// How a sandboxed command ended and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxOutcome {
    /// Exit code when the command exited.
    pub exit_code: Option<i32>,
    /// Signal number when the command was killed.
    pub signal: Option<i32>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub usage: Usage,
    /// Limits hit and protections that intervened, in the order noticed.
    pub violations: Vec<Violation>,
    /// Every connection attempted through the egress proxy, allowed or not.
    pub network: Vec<NetworkDecision>,
    /// Protections this host lacked, when the policy allowed running without them.
    pub absent_protections: Vec<String>,
}

impl SandboxOutcome {
    /// The exit code a shell would show: the code, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }

    pub fn has_violation(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|violation| violation.kind == kind)
    }
}

/// Output kept up to the policy's limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapturedOutput {
    #[serde(serialize_with = "lossy_text")]
    pub bytes: Vec<u8>,
    /// The command wrote more than was kept.
    pub truncated: bool,
    /// Everything the command wrote, kept or not.
    pub total_bytes: u64,
}

fn lossy_text<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(bytes))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time of the whole process tree.
    #[serde(with = "duration_millis")]
    pub cpu_time: Duration,
    /// The most memory used at once (the tree's, with a memory cgroup; the
    /// largest process's otherwise).
    pub peak_memory_bytes: u64,
    #[serde(with = "duration_millis")]
    pub wall_time: Duration,
}

mod duration_millis {
    pub fn serialize<S: serde::Serializer>(duration: &std::time::Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    Timeout,
    CpuLimit,
    MemoryLimit,
    PidsLimit,
    FileSizeLimit,
    OutputLimit,
    NetworkBlocked,
    SyscallDenied,
    /// Landlock refused an access (a file, a port, a signal); reported
    /// where the kernel's audit log can be read.
    AccessDenied,
    /// So many accesses were refused that the command was killed, to keep
    /// the host's audit log from flooding.
    DenialLimit,
}

impl std::fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ViolationKind::Timeout => "timeout",
            ViolationKind::CpuLimit => "cpu_limit",
            ViolationKind::MemoryLimit => "memory_limit",
            ViolationKind::PidsLimit => "pids_limit",
            ViolationKind::FileSizeLimit => "file_size_limit",
            ViolationKind::OutputLimit => "output_limit",
            ViolationKind::NetworkBlocked => "network_blocked",
            ViolationKind::SyscallDenied => "syscall_denied",
            ViolationKind::AccessDenied => "access_denied",
            ViolationKind::DenialLimit => "denial_limit",
        })
    }
}

/// Why a command could not be run at all (nothing ran).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the command is empty")]
    EmptyCommand,
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("this host lacks sandbox protections: {} (an operator may allow a weaker sandbox explicitly)", .0.join(", "))]
    MissingProtections(Vec<String>),
    #[error("this host cannot create the sandbox's namespaces: {0}")]
    NoNamespaces(String),
    #[error("cannot set up the sandbox's cgroup: {0}")]
    Cgroup(String),
    #[error("sandbox setup failed while {step}: {error}")]
    Setup { step: String, error: std::io::Error },
    #[error("sandbox i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The host's capabilities, probed once per process.
pub fn host_capabilities() -> &'static HostCapabilities {
    static CAPABILITIES: OnceLock<HostCapabilities> = OnceLock::new();
    CAPABILITIES.get_or_init(crate::probe::probe)
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often CPU time is checked against the limit.
const CPU_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `command` under `policy` and waits for it. Blocking: call it from a
/// thread that lives until it returns (the sandbox dies with that thread).
pub fn run(policy: &SandboxPolicy, command: &SandboxCommand) -> Result<SandboxOutcome, SandboxError> {
    match Sandbox::start(policy, command, Streams::Captured)? {
        Started::Running(sandbox) => sandbox.supervise(&command.stdin, None),
        Started::NotExecuted(outcome) => Ok(outcome),
    }
}

/// How the command's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streams {
    /// stdin fed from [`SandboxCommand::stdin`]; stdout and stderr captured.
    Captured,
    /// stdin and stdout piped to the caller; stderr captured.
    Interactive,
}

pub(crate) enum Started {
    Running(Box<Sandbox>),
    /// The program could not be executed (missing, not executable): the
    /// outcome a shell would give, with the reason on stderr.
    NotExecuted(SandboxOutcome),
}

/// A sandbox whose command was spawned: everything its supervisor needs.
pub(crate) struct Sandbox {
    policy: SandboxPolicy,
    pub(crate) child: std::process::Child,
    pid: libc::pid_t,
    reaper: Reaper,
    started: Instant,
    cgroup: Option<SandboxCgroup>,
    egress: Option<EgressProxy>,
    monitor: Option<SyscallMonitor>,
    /// Where Landlock's denials are collected, when they are reported.
    audit: Option<crate::audit::Registration>,
    report_read: std::os::fd::OwnedFd,
    op_descriptions: Vec<String>,
    absent: Vec<String>,
    // Dropped last: the new root and the proxy's socket live in it.
    _scratch: Scratch,
}

impl Sandbox {
    /// Prepares the sandbox and spawns the command in it. The calling thread
    /// must outlive the sandbox: the command dies with it (parent-death signal).
    pub(crate) fn start(
        policy: &SandboxPolicy,
        command: &SandboxCommand,
        streams: Streams,
    ) -> Result<Started, SandboxError> {
        let policy = policy.resolved()?;
        let argv = command_argv(command)?;
        let cwd = working_directory(&policy, command)?;
        let host = host_capabilities();
        let namespaces = &host.namespaces;
        for (name, capability) in [
            ("user", &namespaces.user),
            ("pid", &namespaces.pid),
            ("mount", &namespaces.mount),
            ("net", &namespaces.net),
        ] {
            if !capability.available {
                return Err(SandboxError::NoNamespaces(format!(
                    "{name}: {}",
                    capability.reason.as_deref().unwrap_or("unavailable")
                )));
            }
        }
        let mut absent = host.missing.clone();
        if !absent.is_empty() && !policy.allow_missing_protections {
            return Err(SandboxError::MissingProtections(absent));
        }

        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let name = format!("codexos-sandbox-{}-{}", std::process::id(), SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let cgroup = if host.cgroups.writable {
            match SandboxCgroup::acquire(&policy.limits) {
                Ok(cgroup) => Some(cgroup),
                Err(_) if policy.allow_missing_protections => {
                    absent.push("cgroups".to_owned());
                    None
                }
                Err(err) => return Err(SandboxError::Cgroup(err)),
            }
        } else {
            None
        };
        let scratch = Scratch::create(&name)?;

        let egress = match &policy.network {
            NetworkPolicy::None => None,
            NetworkPolicy::Allow(destinations) => Some(EgressProxy::start(&scratch.egress_socket(), destinations)?),
        };
        let (report_read, report_write) = pipe()?;
        // Denied system calls are reported through the supervisor when the
        // kernel can notify it (and the filter is there at all).
        let monitor_ends = if host.seccomp.available { Some(socket_pair()?) } else { None };
        let tmp_size = policy.limits.memory_bytes.unwrap_or(512 * 1024 * 1024);
        let egress_socket = egress.as_ref().map(|_| scratch.egress_socket());
        let view = plan::view(&policy, scratch.root(), tmp_size, egress_socket.as_deref())
            .map_err(SandboxError::InvalidCommand)?;
        let connect_ports: &[u16] = if egress.is_some() { &[crate::relay::PROXY_PORT] } else { &[] };
        let op_descriptions: Vec<String> = view.mount_ops.iter().map(child::MountOp::describe).collect();
        // Landlock's denials are reported where the kernel logs them and we can read the log.
        let audit = if host.landlock_audit.available {
            crate::audit::log(host.landlock.abi).ok().and_then(|log| log.register())
        } else {
            None
        };
        let landlock = match (host.landlock.available, host.landlock.abi) {
            (true, Some(abi)) => {
                let mut landlock = plan::landlock_plan(abi, &view.landlock_rules, connect_ports)
                    .map_err(SandboxError::InvalidCommand)?;
                if let Some(registration) = &audit {
                    landlock.restrict_flags =
                        crate::audit::RESTRICT_SELF_LOG_NEW_EXEC_ON | crate::audit::RESTRICT_SELF_LOG_SUBDOMAINS_OFF;
                    landlock.process_name = Some(registration.process_name());
                }
                Some(landlock)
            }
            _ => None,
        };
        // SAFETY: getuid/getgid/getpid have no preconditions.
        let (uid, gid, parent_pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
        let child_plan = ChildPlan {
            parent_pid,
            report_fd: report_write.as_raw_fd(),
            cgroup_procs: match &cgroup {
                Some(cgroup) => cgroup
                    .procs_files()
                    .iter()
                    .map(|path| plan::cstring(path))
                    .collect::<Result<_, _>>()
                    .map_err(SandboxError::InvalidCommand)?,
                None => Vec::new(),
            },
            unshare_flags: libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWCGROUP,
            // The command keeps its own ids: files it creates belong to the caller.
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            hostname: c"codexos-sandbox",
            new_root: plan::cstring(scratch.root()).map_err(SandboxError::InvalidCommand)?,
            mount_ops: view.mount_ops,
            cwd: plan::cstring(&cwd).map_err(SandboxError::InvalidCommand)?,
            rlimits: plan::rlimits(&policy.limits, cgroup.is_some()),
            landlock,
            seccomp: host.seccomp.available.then(|| Filter::build(monitor_ends.is_some())),
            egress: egress.is_some(),
            monitor_socket: monitor_ends.as_ref().map(|(_, child_end)| child_end.as_raw_fd()),
        };

        let mut process = Command::new(&argv[0]);
        process
            .args(&argv[1..])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", "/tmp")
            .env("TMPDIR", "/tmp")
            .env("LANG", "C.UTF-8");
        if egress.is_some() {
            let proxy = format!("http://127.0.0.1:{}", crate::relay::PROXY_PORT);
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                process.env(name, &proxy);
            }
        }
        let stdin = match streams {
            Streams::Captured if command.stdin.is_empty() => Stdio::null(),
            Streams::Captured | Streams::Interactive => Stdio::piped(),
        };
        process
            .envs(command.env.iter().map(|(key, value)| (key, value)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: `child::enter` only makes raw system calls on memory prepared
        // above (no allocation, no locks), as required between fork and exec.
        unsafe {
            process.pre_exec(move || child::enter(&child_plan));
        }
        let started = Instant::now();
        let spawned = process.spawn();
        drop(report_write);
        let monitor = monitor_ends.map(|(parent_end, _child_end)| SyscallMonitor::new(parent_end));
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                // Setup failures are reported through our pipe; an exec failure
                // is the command's own problem, answered like a shell would.
                if let Some(report) =
                    read_report(&report_read)?.into_iter().find(|report| report.kind == REPORT_SETUP_FAILED)
                {
                    return Err(setup_error(report, &op_descriptions));
                }
                let (code, reason) = match err.kind() {
                    std::io::ErrorKind::NotFound => (127, "command not found"),
                    std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
                    _ => (126, "cannot execute"),
                };
                let message = format!("codexos-sandbox: {}: {reason}\n", argv[0]);
                return Ok(Started::NotExecuted(SandboxOutcome {
                    exit_code: Some(code),
                    signal: None,
                    stdout: CapturedOutput { bytes: Vec::new(), truncated: false, total_bytes: 0 },
                    stderr: CapturedOutput {
                        total_bytes: message.len() as u64,
                        bytes: message.into_bytes(),
                        truncated: false,
                    },
                    usage: Usage { cpu_time: Duration::ZERO, peak_memory_bytes: 0, wall_time: started.elapsed() },
                    violations: Vec::new(),
                    network: Vec::new(),
                    absent_protections: absent,
                }));
            }
        };
        let pid = child.id() as libc::pid_t;
        if let Some(registration) = &audit {
            registration.set_pid(Some(pid));
        }
        Ok(Started::Running(Box::new(Sandbox {
            policy,
            child,
            pid,
            reaper: Reaper { pid, armed: true },
            started,
            cgroup,
            egress,
            monitor,
            audit,
            report_read,
            op_descriptions,
            absent,
            _scratch: scratch,
        })))
    }

    /// Watches the command until it exits (or is killed: at a limit, or
    /// when `stop` becomes readable or its write end is closed), reaps it
    /// and accounts for it. `input` is written to a piped stdin that the
    /// caller did not take. Stdout is captured unless the caller took it.
    pub(crate) fn supervise(
        mut self,
        input: &[u8],
        stop: Option<std::os::fd::OwnedFd>,
    ) -> Result<SandboxOutcome, SandboxError> {
        let policy = &self.policy;
        let pid = self.pid;
        let cgroup = self.cgroup.take();
        let mut monitor = self.monitor.take();
        // Small inputs fit the pipe; larger ones are written by a helper thread
        // so that reading the output cannot deadlock against them.
        let stdin_writer = self.child.stdin.take().map(|mut stdin| {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            })
        });
        let mut stdout =
            OutputReader::new(self.child.stdout.take().map(std::os::fd::OwnedFd::from), policy.output_limit_bytes);
        let mut stderr =
            OutputReader::new(self.child.stderr.take().map(std::os::fd::OwnedFd::from), policy.output_limit_bytes);
        let pidfd = PidFd::open(pid)?;
        let mut stop_fd = stop.as_ref().map_or(-1, AsRawFd::as_raw_fd);

        let mut violations = Vec::new();
        let started = self.started;
        // A timeout too large to represent means "as long as the host lasts".
        let deadline =
            started.checked_add(policy.limits.timeout).unwrap_or(started + Duration::from_secs(100 * 365 * 86_400));
        let cpu_limit = policy.limits.cpu_seconds.map(Duration::from_secs);
        let mut exited_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            let now = Instant::now();
            if exited_at.is_none() && !killed {
                if now >= deadline {
                    violations.push(Violation {
                        kind: ViolationKind::Timeout,
                        detail: format!("still running after {:?}; killed", policy.limits.timeout),
                    });
                    kill_tree(pid, cgroup.as_ref());
                    killed = true;
                } else if let (Some(limit), Some(usage)) =
                    (cpu_limit, cgroup.as_ref().and_then(SandboxCgroup::cpu_usage))
                    && usage >= limit
                {
                    violations.push(Violation {
                        kind: ViolationKind::CpuLimit,
                        detail: format!("used {:.2}s of CPU, limit {}s; killed", usage.as_secs_f64(), limit.as_secs()),
                    });
                    kill_tree(pid, cgroup.as_ref());
                    killed = true;
                }
            }
            if let Some(at) = exited_at
                && ((stdout.done && stderr.done) || now.duration_since(at) > Duration::from_secs(2))
            {
                break;
            }
            let mut wait = deadline.saturating_duration_since(now).max(Duration::from_millis(1));
            if cpu_limit.is_some() && cgroup.is_some() {
                wait = wait.min(CPU_CHECK_INTERVAL);
            }
            if exited_at.is_some() {
                wait = wait.min(Duration::from_millis(50));
            }
            let mut fds = [
                // Once the child has exited its pidfd stays readable: stop polling it.
                libc::pollfd { fd: if exited_at.is_some() { -1 } else { pidfd.0 }, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stdout.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stderr.fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: monitor.as_ref().map_or(-1, SyscallMonitor::fd), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop_fd, events: libc::POLLIN, revents: 0 },
            ];
            let timeout_ms = libc::c_int::try_from(wait.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: polls descriptors we own (a negative fd is ignored).
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err.into());
                }
                continue;
            }
            if fds[0].revents != 0 && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
            if fds[1].revents != 0 {
                stdout.read_available()?;
            }
            if fds[2].revents != 0 {
                stderr.read_available()?;
            }
            if fds[3].revents != 0
                && let Some(monitor) = monitor.as_mut()
            {
                monitor.on_ready(fds[3].revents);
            }
            if fds[4].revents != 0 {
                // The caller asked for the end: not a violation, just the end.
                stop_fd = -1;
                if exited_at.is_none() && !killed {
                    kill_tree(pid, cgroup.as_ref());
                    killed = true;
                }
            }
        }
        let wall_time = started.elapsed();
        if let Some(registration) = &self.audit {
            registration.set_pid(None);
        }
        self.reaper.armed = false;
        let (outer_status, rusage) = wait4(pid)?;
        if let Some(writer) = stdin_writer {
            let _ = writer.join();
        }
        let reports = read_report(&self.report_read)?;
        if let Some(report) = reports.iter().find(|report| report.kind == REPORT_SETUP_FAILED) {
            return Err(setup_error(*report, &self.op_descriptions));
        }
        // The init reports the command's own status; without it (killed from
        // outside), the outer child's tells what happened.
        let status =
            reports.iter().find(|report| report.kind == REPORT_EXIT_STATUS).map_or(outer_status, |report| report.value);
        let (exit_code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, Some(libc::SIGKILL))
        };

        let rusage_cpu = timeval(rusage.ru_utime) + timeval(rusage.ru_stime);
        let cpu_time = cgroup.as_ref().and_then(SandboxCgroup::cpu_usage).unwrap_or(rusage_cpu);
        let peak_memory_bytes = cgroup
            .as_ref()
            .and_then(SandboxCgroup::peak_memory)
            .unwrap_or_else(|| u64::try_from(rusage.ru_maxrss).unwrap_or(0) * 1024);
        // A shell reports a child killed by a signal as 128 + the signal.
        let died_of = |wanted: i32| signal == Some(wanted) || exit_code == Some(128 + wanted);
        if let Some(limit) = cpu_limit
            && !violations.iter().any(|v| v.kind == ViolationKind::CpuLimit)
            // An exit code of 152 alone could be anything: the CPU must be spent too.
            && (signal == Some(libc::SIGXCPU) || (died_of(libc::SIGXCPU) && cpu_time * 10 >= limit * 9) || (cpu_time >= limit && signal.is_some()))
        {
            violations.push(Violation {
                kind: ViolationKind::CpuLimit,
                detail: format!("used {:.2}s of CPU, limit {}s", cpu_time.as_secs_f64(), limit.as_secs()),
            });
        }
        if let Some(cgroup) = &cgroup {
            if cgroup.oom_killed() {
                violations.push(Violation {
                    kind: ViolationKind::MemoryLimit,
                    detail: format!(
                        "memory limit of {} bytes reached; the kernel killed a process",
                        policy.limits.memory_bytes.unwrap_or(0)
                    ),
                });
            }
            if cgroup.pids_limited() {
                violations.push(Violation {
                    kind: ViolationKind::PidsLimit,
                    detail: format!("process limit of {} reached; forks were refused", policy.limits.pids.unwrap_or(0)),
                });
            }
        }
        if died_of(libc::SIGXFSZ) {
            violations.push(Violation {
                kind: ViolationKind::FileSizeLimit,
                detail: format!("a file grew past {} bytes", policy.limits.file_size_bytes.unwrap_or(0)),
            });
        }
        for (name, output) in [("stdout", &stdout), ("stderr", &stderr)] {
            if output.truncated() {
                violations.push(Violation {
                    kind: ViolationKind::OutputLimit,
                    detail: format!("{name}: kept {} of {} bytes", output.kept.len(), output.total),
                });
            }
        }
        for (name, count) in monitor.map(|monitor| monitor.denied).unwrap_or_default() {
            let times = if count == 1 { String::new() } else { format!(" ({count} times)") };
            violations.push(Violation { kind: ViolationKind::SyscallDenied, detail: format!("{name} denied{times}") });
        }
        // Every process of the sandbox is gone (its init was reaped), so
        // every denial it caused is in the kernel's audit queue.
        let landlock = self.audit.take().map(crate::audit::Registration::finish).unwrap_or_default();
        if landlock.killed_at_limit {
            violations.push(Violation {
                kind: ViolationKind::DenialLimit,
                detail: format!(
                    "more than {} Landlock denials, each a record in the host's audit log; killed",
                    crate::audit::MAX_DENIALS
                ),
            });
        }
        for (denial, count) in landlock.denials {
            let times = if count == 1 { String::new() } else { format!(" ({count} times)") };
            violations.push(Violation { kind: ViolationKind::AccessDenied, detail: format!("{denial}{times}") });
        }
        if landlock.incomplete {
            violations.push(Violation {
                kind: ViolationKind::AccessDenied,
                detail: "some Landlock denials may be missing: the audit log lost records or did not answer".to_owned(),
            });
        }
        let network = self.egress.take().map(EgressProxy::finish).unwrap_or_default();
        for decision in network.iter().filter(|decision| !decision.allowed) {
            violations.push(Violation {
                kind: ViolationKind::NetworkBlocked,
                detail: format!("egress to {} refused by the policy", decision.destination),
            });
        }
        // Nothing may outlive the sandbox: the namespace died with its init,
        // and the cgroup is emptied before it is reused.
        if let Some(cgroup) = cgroup {
            cgroup.release();
        }
        Ok(SandboxOutcome {
            exit_code,
            signal,
            stdout: stdout.finish(),
            stderr: stderr.finish(),
            usage: Usage { cpu_time, peak_memory_bytes, wall_time },
            violations,
            network,
            absent_protections: std::mem::take(&mut self.absent),
        })
    }
}

fn command_argv(command: &SandboxCommand) -> Result<Vec<String>, SandboxError> {
    let Some(program) = command.argv.first() else { return Err(SandboxError::EmptyCommand) };
    if program.is_empty() {
        return Err(SandboxError::EmptyCommand);
    }
    let has_nul = command
        .argv
        .iter()
        .chain(command.env.iter().flat_map(|(key, value)| [key, value]))
        .any(|text| text.contains('\0'));
    if has_nul {
        return Err(SandboxError::InvalidCommand("arguments and environment must not contain NUL bytes".to_owned()));
    }
    if command.env.iter().any(|(key, _)| key.is_empty() || key.contains('=')) {
        return Err(SandboxError::InvalidCommand("environment names must be non-empty and without '='".to_owned()));
    }
    Ok(command.argv.clone())
}

fn working_directory(policy: &SandboxPolicy, command: &SandboxCommand) -> Result<PathBuf, SandboxError> {
    let cwd = match &command.cwd {
        None => return Ok(policy.workspace.clone()),
        Some(path) if path.is_absolute() => path.clone(),
        Some(path) => policy.workspace.join(path),
    };
    let escapes = cwd.components().any(|component| component == std::path::Component::ParentDir);
    if escapes || !cwd.starts_with(&policy.workspace) || !cwd.is_dir() {
        return Err(SandboxError::InvalidCommand(format!(
            "working directory {} must be an existing directory inside the workspace",
            cwd.display()
        )));
    }
    Ok(cwd)
}

fn setup_error(report: Report, op_descriptions: &[String]) -> SandboxError {
    let step = if report.step >= child::step::MOUNT_OPS {
        let index = (report.step - child::step::MOUNT_OPS) as usize;
        format!("building the filesystem view ({})", op_descriptions.get(index).map_or("?", String::as_str))
    } else {
        child::step::describe(report.step).to_owned()
    };
    SandboxError::Setup { step, error: std::io::Error::from_raw_os_error(report.value) }
}

fn kill_tree(pid: libc::pid_t, cgroup: Option<&SandboxCgroup>) {
    // Killing the outer child makes the init die (parent-death signal),
    // and with it every process in the PID namespace.
    // SAFETY: kill has no memory-safety preconditions; pid is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
}

fn timeval(value: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(value.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(value.tv_usec).unwrap_or(0))
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into locals.
        let res = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if res >= 0 {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub(crate) fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) })
}

/// A connected pair of Unix sockets (close-on-exec), for passing a descriptor.
fn socket_pair() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) })
}

/// Reads the records in the report pipe. Never blocks: the records were
/// written before the processes that wrote them exited, and another
/// sandbox's setup may briefly hold an inherited copy of the write end.
fn read_report(read_end: &std::os::fd::OwnedFd) -> std::io::Result<Vec<Report>> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(read_end.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(read_end.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut reports = Vec::new();
    let size = std::mem::size_of::<Report>();
    loop {
        let mut record = Report::default();
        // SAFETY: reads at most `size` bytes into a plain-data struct.
        let n = unsafe { libc::read(read_end.as_raw_fd(), (&mut record as *mut Report).cast(), size) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(reports),
                _ => return Err(err),
            }
        }
        if n as usize != size {
            return Ok(reports);
        }
        reports.push(record);
    }
}

/// Kills and reaps the sandbox if `run` returns early with an error.
struct Reaper {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: our own unreaped child; killing it takes the namespace down.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = wait4(self.pid);
        }
    }
}

/// A pidfd: becomes readable when the process exits.
struct PidFd(RawFd);

impl PidFd {
    fn open(pid: libc::pid_t) -> std::io::Result<Self> {
        // SAFETY: pidfd_open on our own child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(fd as RawFd))
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(self.0) };
    }
}

/// Reads a pipe without blocking, keeping up to `limit` bytes.
struct OutputReader {
    source: Option<std::fs::File>,
    kept: Vec<u8>,
    total: u64,
    limit: usize,
    done: bool,
}

impl OutputReader {
    fn new(source: Option<std::os::fd::OwnedFd>, limit: usize) -> Self {
        let source = source.map(std::fs::File::from);
        if let Some(source) = &source {
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let flags = libc::fcntl(source.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(source.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        let done = source.is_none();
        Self { source, kept: Vec::new(), total: 0, limit, done }
    }

    fn fd(&self) -> RawFd {
        if self.done { -1 } else { self.source.as_ref().map_or(-1, AsRawFd::as_raw_fd) }
    }

    fn read_available(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let Some(source) = self.source.as_mut() else { return Ok(()) };
        let mut buffer = [0u8; 64 * 1024];
        // A bounded amount per wakeup, so that a flood of output cannot keep
        // the supervisor from checking the deadline and the CPU limit.
        for _ in 0..16 {
            match source.read(&mut buffer) {
                Ok(0) => {
                    self.done = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.total += n as u64;
                    let room = self.limit.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buffer[..n.min(room)]);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    fn finish(self) -> CapturedOutput {
        let truncated = self.truncated();
        CapturedOutput { bytes: self.kept, truncated, total_bytes: self.total }
    }
}

/// A private host directory the child mounts its new root on; removed after.
struct Scratch {
    dir: PathBuf,
    root: PathBuf,
}

impl Scratch {
    fn create(name: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let root = dir.join("root");
        std::fs::DirBuilder::new().mode(0o700).create(&root)?;
        Ok(Self { dir, root })
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn egress_socket(&self) -> PathBuf {
        self.dir.join("egress.sock")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Only empty directories: the tmpfs was mounted in the child's
        // namespace, never on the host.
        let _ = std::fs::remove_dir(&self.root);
        let _ = std::fs::remove_file(self.egress_socket());
        let _ = std::fs::remove_dir(&self.dir);
    }
}
