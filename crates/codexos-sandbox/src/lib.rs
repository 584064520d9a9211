//! The kernel-level sandbox that CodexOS runs tool calls in: namespaces,
//! Landlock, seccomp, cgroups and resource limits.
//!
//! This crate talks to the Linux kernel directly (through `libc`) and depends
//! on no other CodexOS crate, so it can be reviewed, tested and audited on its
//! own: everything security-relevant about isolation lives here.
//!
//! - [`probe`] finds out which protections this kernel offers this process,
//!   by trying them rather than by reading configuration files;
//! - [`run`] runs one command under a [`SandboxPolicy`]: new user, PID,
//!   mount, IPC, UTS, network and cgroup namespaces; a filesystem view with
//!   the system read-only, the workspace read-write and host secrets absent;
//!   Landlock rules; no capabilities; a seccomp filter; rlimits and a cgroup
//!   for the whole process tree; a wall-clock timeout;
//! - [`spawn`] starts a long-lived command (a language or MCP server) in the
//!   same sandbox, with its stdin and stdout piped to the caller.

// Every mechanism used here (unshare, prctl, Landlock, cgroupfs) is
// Linux-only; fail with a clear message instead of a page of missing symbols.
#[cfg(not(target_os = "linux"))]
compile_error!("codexos-sandbox only supports Linux");

mod audit;
mod cgroup;
mod child;
mod egress;
mod interactive;
mod monitor;
mod plan;
pub mod policy;
pub mod probe;
mod relay;
mod run;
mod seccomp;
mod stop;

pub use audit::enable_kernel_audit;
pub use egress::NetworkDecision;
pub use interactive::{SandboxedProcess, spawn};
pub use policy::{Destination, Limits, NetworkPolicy, PolicyError, SandboxPolicy};
pub use probe::{
    Capability, CgroupController, CgroupSupport, CgroupVersion, HostCapabilities, LandlockSupport, NamespaceSupport,
    probe,
};
pub use run::{
    CapturedOutput, SandboxCommand, SandboxError, SandboxOutcome, Usage, Violation, ViolationKind, host_capabilities,
    run,
};
pub use stop::{StopSignal, Stopper, run_stoppable, stop_pair};
