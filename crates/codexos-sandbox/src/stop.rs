//! Stopping a sandbox from outside: the caller keeps a [`Stopper`] while
//! [`run_stoppable`] runs on a blocking thread; dropping the stopper (for
//! instance because the async task awaiting the thread was cancelled) kills
//! the whole process tree at once instead of letting it run to its timeout.

use std::os::fd::OwnedFd;

use crate::policy::SandboxPolicy;
use crate::run::{Sandbox, SandboxCommand, SandboxError, SandboxOutcome, Started, Streams, pipe};

/// Kills the sandbox it was made for when dropped, or on [`Stopper::stop`].
#[derive(Debug)]
pub struct Stopper(Option<OwnedFd>);

impl Stopper {
    /// Kills the sandbox's process tree now (if it still runs).
    pub fn stop(&mut self) {
        self.0 = None;
    }
}

/// The other end of a [`Stopper`], handed to [`run_stoppable`].
#[derive(Debug)]
pub struct StopSignal(OwnedFd);

/// A connected stopper and signal (a pipe: closing the write end is the signal).
pub fn stop_pair() -> Result<(Stopper, StopSignal), SandboxError> {
    let (read, write) = pipe()?;
    Ok((Stopper(Some(write)), StopSignal(read)))
}

/// Like [`crate::run`], and the process tree is killed as soon as the
/// signal's [`Stopper`] is dropped or stopped. The outcome then reports the
/// command as killed (by `SIGKILL`), without a violation.
pub fn run_stoppable(
    policy: &SandboxPolicy,
    command: &SandboxCommand,
    signal: StopSignal,
) -> Result<SandboxOutcome, SandboxError> {
    match Sandbox::start(policy, command, Streams::Captured)? {
        Started::Running(sandbox) => sandbox.supervise(&command.stdin, Some(signal.0)),
        Started::NotExecuted(outcome) => Ok(outcome),
    }
}
