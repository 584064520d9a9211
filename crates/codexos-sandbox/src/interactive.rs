//! Long-lived sandboxed processes that the caller talks to over pipes (a
//! language server, an MCP server): the same sandbox as [`crate::run`], with
//! stdin and stdout handed to the caller instead of fed and captured.
//!
//! A dedicated supervisor thread sets the sandbox up, spawns the command and
//! watches it exactly as `run` does (limits, denied system calls, the egress
//! proxy), so the sandbox is tied to that thread's life, not the caller's.
//! The caller ends the process by closing the stop pipe: [`SandboxedProcess::kill`],
//! or dropping the handle, which also waits until the whole tree is gone.

use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::policy::SandboxPolicy;
use crate::run::{Sandbox, SandboxCommand, SandboxError, SandboxOutcome, Started, Streams, pipe};

/// A command running in the sandbox, with its stdin and stdout piped to the
/// caller; stderr is captured (up to the policy's output limit) into the
/// outcome.
///
/// The policy's limits apply to the process's whole life: `limits.timeout`
/// is how long it may live at most, `limits.cpu_seconds` the CPU it may
/// spend in all. Dropping the handle kills the process tree and waits for
/// it to be gone (a few milliseconds); in async code call [`kill`](Self::kill)
/// and then [`wait`](Self::wait) on a blocking thread instead.
#[derive(Debug)]
pub struct SandboxedProcess {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    /// The supervisor kills the tree when this is closed.
    stop: Option<OwnedFd>,
    supervisor: Option<JoinHandle<Supervised>>,
}

/// What the supervisor thread ends with: nothing when setup failed (the
/// error went back through the start channel), otherwise the outcome.
type Supervised = Option<Result<SandboxOutcome, SandboxError>>;

/// What the supervisor sends back once the command is started.
enum Spawned {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
    },
    /// The program could not be executed; the outcome says why.
    NotExecuted,
}

/// Starts `command` under `policy` with stdin and stdout piped to the caller.
/// Returns once the command runs, or with the error that kept it from
/// running (the same errors as [`crate::run`]). A program that does not exist
/// or cannot be executed still gives a process: its stdout is at end of file
/// at once, and [`SandboxedProcess::wait`] tells why (exit code 127 or 126,
/// the reason on stderr), as `run` does.
///
/// `command.stdin` must be empty: the caller writes to the stdin pipe.
pub fn spawn(policy: &SandboxPolicy, command: &SandboxCommand) -> Result<SandboxedProcess, SandboxError> {
    if !command.stdin.is_empty() {
        return Err(SandboxError::InvalidCommand(
            "a spawned command reads its input from its stdin pipe, not from SandboxCommand::stdin".to_owned(),
        ));
    }
    let (stop_read, stop_write) = pipe()?;
    let (sender, receiver) = mpsc::sync_channel::<Result<Spawned, SandboxError>>(1);
    let (policy, command) = (policy.clone(), command.clone());
    let supervisor = std::thread::Builder::new().name("sandbox-supervisor".to_owned()).spawn(move || {
        let mut sandbox = match Sandbox::start(&policy, &command, Streams::Interactive) {
            Ok(Started::Running(sandbox)) => sandbox,
            Ok(Started::NotExecuted(outcome)) => {
                let _ = sender.send(Ok(Spawned::NotExecuted));
                return Some(Ok(outcome));
            }
            Err(err) => {
                let _ = sender.send(Err(err));
                return None;
            }
        };
        let pipes = sandbox.child.stdin.take().map(OwnedFd::from).zip(sandbox.child.stdout.take().map(OwnedFd::from));
        let Some((stdin, stdout)) = pipes else {
            // Both are always piped. Without them the caller could not talk
            // to the command: it closes the stop pipe on this error.
            let _ = sender.send(Err(SandboxError::Io(std::io::Error::other("the command's pipes are missing"))));
            return Some(sandbox.supervise(&[], Some(stop_read)));
        };
        // If the caller is gone already, the closed stop pipe ends the command.
        let _ = sender.send(Ok(Spawned::Pipes { stdin, stdout }));
        Some(sandbox.supervise(&[], Some(stop_read)))
    })?;
    match receiver.recv() {
        Ok(Ok(Spawned::Pipes { stdin, stdout })) => Ok(SandboxedProcess {
            stdin: Some(stdin),
            stdout: Some(stdout),
            stop: Some(stop_write),
            supervisor: Some(supervisor),
        }),
        Ok(Ok(Spawned::NotExecuted)) => {
            // Pipes whose other ends are closed: end of file to read, EPIPE
            // to write. The outcome is waiting in the supervisor.
            let (stdout, stdout_write) = pipe()?;
            let (stdin_read, stdin) = pipe()?;
            drop((stdout_write, stdin_read));
            Ok(SandboxedProcess {
                stdin: Some(stdin),
                stdout: Some(stdout),
                stop: Some(stop_write),
                supervisor: Some(supervisor),
            })
        }
        Ok(Err(err)) => {
            drop(stop_write);
            let _ = supervisor.join();
            Err(err)
        }
        Err(mpsc::RecvError) => {
            drop(stop_write);
            let _ = supervisor.join();
            Err(SandboxError::Io(std::io::Error::other("the sandbox supervisor thread ended abnormally")))
        }
    }
}

impl SandboxedProcess {
    /// The command's stdin (the write end of a pipe, close-on-exec). Closing
    /// it gives the command end of file. `None` once taken.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }

    /// The command's stdout (the read end of a pipe, close-on-exec). `None`
    /// once taken.
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// Whether the command has ended and its outcome is ready: then
    /// [`wait`](Self::wait) returns at once.
    pub fn has_ended(&self) -> bool {
        self.supervisor.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the supervisor to kill the whole process tree; returns at once.
    /// [`wait`](Self::wait) then returns when it is gone.
    pub fn kill(&mut self) {
        self.stop = None;
    }

    /// Waits for the command to end (by itself, at a limit, or after
    /// [`kill`](Self::kill)) and returns its outcome: exit status, stderr,
    /// usage, violations, network decisions. Stdout is reported empty: the
    /// caller read it. Blocking. Pipes not taken are closed first, so a
    /// command that waits for end of file on stdin ends.
    pub fn wait(mut self) -> Result<SandboxOutcome, SandboxError> {
        self.stdin = None;
        self.stdout = None;
        let joined = self.supervisor.take().map(JoinHandle::join);
        match joined {
            Some(Ok(Some(outcome))) => outcome,
            _ => Err(SandboxError::Io(std::io::Error::other("the sandbox supervisor thread ended abnormally"))),
        }
    }
}

impl Drop for SandboxedProcess {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}
