//! The kernel-level sandbox that CodexOS runs tool calls in: namespaces,
//! Landlock, seccomp, cgroups and resource limits.
//!
//! This crate talks to the Linux kernel directly (through `libc`) and depends
//! on no other CodexOS crate, so it can be reviewed, tested and audited on its
//! own: everything security-relevant about isolation lives here.
//!
//! For now it holds the host capability [`probe`]: a report of which of those
//! protections this kernel actually offers to this process, found by trying
//! them rather than by reading configuration files.

// Every mechanism used here (unshare, prctl, Landlock, cgroupfs) is
// Linux-only; fail with a clear message instead of a page of missing symbols.
#[cfg(not(target_os = "linux"))]
compile_error!("codexos-sandbox only supports Linux");

pub mod probe;

pub use probe::{
    Capability, CgroupController, CgroupSupport, CgroupVersion, HostCapabilities, LandlockSupport, NamespaceSupport,
    probe,
};
