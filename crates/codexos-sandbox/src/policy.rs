//! What a sandboxed command may do, validated before anything runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the sandbox enforces for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// The only tree the command may write; mounted at the same path inside.
    pub workspace: PathBuf,
    /// Extra host paths visible read-only (e.g. a toolchain in `/opt`).
    pub read_only_paths: Vec<PathBuf>,
    /// Extra host paths visible read-write (e.g. a shared build cache).
    pub read_write_paths: Vec<PathBuf>,
    /// Host paths masked (empty) wherever they would be visible, e.g. the
    /// platform's own data directory inside a workspace. Host secrets such
    /// as `/etc/shadow` are always masked.
    pub hidden_paths: Vec<PathBuf>,
    pub network: NetworkPolicy,
    pub limits: Limits,
    /// Bytes kept of each of stdout and stderr; the rest is counted, not kept.
    pub output_limit_bytes: usize,
    /// Run even where the host lacks a protection, recording which ones were
    /// absent in every outcome. Off unless an operator turns it on, loudly.
    pub allow_missing_protections: bool,
}

/// Network access of a sandboxed command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkPolicy {
    /// An empty network namespace: not even the host's loopback.
    #[default]
    None,
    /// Only these destinations, through the platform's egress proxy.
    Allow(Vec<Destination>),
}

/// A `host:port` an allow-listed network may reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// Parses `host:port` (`[v6]:port` for IPv6 literals).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidDestination(text.chars().take(256).collect());
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let host_is_valid = !host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
        if port == 0 || !host_is_valid {
            return Err(invalid());
        }
        Ok(Self { host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Resource limits. `None` means "no limit of this kind beyond the host's".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU time of the whole process tree.
    pub cpu_seconds: Option<u64>,
    /// Memory of the whole process tree.
    pub memory_bytes: Option<u64>,
    /// Processes and threads alive at once.
    pub pids: Option<u64>,
    /// Open file descriptors per process.
    pub open_files: Option<u64>,
    /// Largest file a process may write.
    pub file_size_bytes: Option<u64>,
    /// Wall-clock time, after which the whole tree is killed.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_seconds: Some(60),
            memory_bytes: Some(1024 * 1024 * 1024),
            pids: Some(256),
            open_files: Some(1024),
            file_size_bytes: Some(1024 * 1024 * 1024),
            timeout: Duration::from_secs(120),
        }
    }
}

impl SandboxPolicy {
    /// A policy with safe defaults for `workspace`: no network, default limits.
    pub fn for_workspace(workspace: impl Into<PathBuf>) -> Self {
        Self {
            workspace: workspace.into(),
            read_only_paths: Vec::new(),
            read_write_paths: Vec::new(),
            hidden_paths: Vec::new(),
            network: NetworkPolicy::None,
            limits: Limits::default(),
            output_limit_bytes: 1024 * 1024,
            allow_missing_protections: false,
        }
    }

    /// The same policy with every path resolved (symlinks followed,
    /// `..` removed), so that what is mounted, masked and compared is what
    /// the kernel will actually see. Validates first.
    pub fn resolved(&self) -> Result<SandboxPolicy, PolicyError> {
        self.validate()?;
        let resolve = |role: &'static str, path: &PathBuf| {
            std::fs::canonicalize(path).map_err(|_| PolicyError::Path {
                role,
                path: path.clone(),
                reason: "cannot be resolved",
            })
        };
        let mut resolved = self.clone();
        resolved.workspace = resolve("workspace", &self.workspace)?;
        resolved.read_only_paths =
            self.read_only_paths.iter().map(|path| resolve("read-only path", path)).collect::<Result<_, _>>()?;
        resolved.read_write_paths =
            self.read_write_paths.iter().map(|path| resolve("read-write path", path)).collect::<Result<_, _>>()?;
        // A hidden path that does not exist (yet) is kept as written.
        resolved.hidden_paths =
            self.hidden_paths.iter().map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.clone())).collect();
        if resolved.workspace == Path::new("/") {
            return Err(PolicyError::Path {
                role: "workspace",
                path: self.workspace.clone(),
                reason: "the whole filesystem cannot be a workspace",
            });
        }
        for read_only in &resolved.read_only_paths {
            let writable = resolved.read_write_paths.iter().chain(std::iter::once(&resolved.workspace));
            if let Some(outer) = writable.into_iter().find(|outer| read_only.starts_with(outer)) {
                return Err(PolicyError::Path {
                    role: "read-only path",
                    path: read_only.clone(),
                    reason: if outer == &resolved.workspace {
                        "lies inside the workspace, which is writable"
                    } else {
                        "lies inside a read-write path"
                    },
                });
            }
        }
        Ok(resolved)
    }

    /// Checks everything that can be checked before running: absolute,
    /// existing paths; positive limits.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_dir("workspace", &self.workspace)?;
        if self.workspace == Path::new("/") {
            return Err(PolicyError::Path {
                role: "workspace",
                path: self.workspace.clone(),
                reason: "the whole filesystem cannot be a workspace",
            });
        }
        for path in &self.read_only_paths {
            check_exists("read-only path", path)?;
        }
        for path in &self.read_write_paths {
            check_exists("read-write path", path)?;
        }
        if let Some(path) = self.hidden_paths.iter().find(|path| !path.is_absolute()) {
            return Err(PolicyError::Path {
                role: "hidden path",
                path: path.clone(),
                reason: "must be an absolute path",
            });
        }
        let limits = &self.limits;
        for (name, value) in [
            ("cpu_seconds", limits.cpu_seconds),
            ("memory", limits.memory_bytes),
            ("pids", limits.pids),
            ("open_files", limits.open_files),
            ("file_size", limits.file_size_bytes),
        ] {
            if value == Some(0) {
                return Err(PolicyError::ZeroLimit(name));
            }
        }
        if limits.timeout.is_zero() {
            return Err(PolicyError::ZeroLimit("timeout"));
        }
        if self.output_limit_bytes == 0 {
            return Err(PolicyError::ZeroLimit("output"));
        }
        Ok(())
    }
}

fn check_exists(role: &'static str, path: &Path) -> Result<(), PolicyError> {
    if !path.is_absolute() {
        return Err(PolicyError::Path { role, path: path.to_owned(), reason: "must be an absolute path" });
    }
    if path.components().any(|component| component == std::path::Component::ParentDir) {
        return Err(PolicyError::Path { role, path: path.to_owned(), reason: "must not contain '..'" });
    }
    if !path.exists() {
        return Err(PolicyError::Path { role, path: path.to_owned(), reason: "does not exist" });
    }
    Ok(())
}

fn check_dir(role: &'static str, path: &Path) -> Result<(), PolicyError> {
    check_exists(role, path)?;
    if !path.is_dir() {
        return Err(PolicyError::Path { role, path: path.to_owned(), reason: "is not a directory" });
    }
    Ok(())
}

/// A policy that cannot be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{role} {}: {reason}", path.display())]
    Path { role: &'static str, path: PathBuf, reason: &'static str },
    #[error("the {0} limit must be greater than zero")]
    ZeroLimit(&'static str),
    #[error("'{0}' is not a network destination (expected host:port, e.g. pypi.org:443)")]
    InvalidDestination(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("PyPI.org:443").unwrap(), Destination { host: "pypi.org".into(), port: 443 });
        assert_eq!(Destination::parse("[::1]:8080").unwrap().to_string(), "[::1]:8080");
        for bad in ["pypi.org", "pypi.org:0", "pypi.org:99999", ":443", "a b:1", "x:y"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_are_validated() {
        let dir = std::env::temp_dir();
        assert_eq!(SandboxPolicy::for_workspace(&dir).validate(), Ok(()));
        let err = SandboxPolicy::for_workspace("relative/dir").validate().unwrap_err();
        assert_eq!(err.to_string(), "workspace relative/dir: must be an absolute path");
        let err = SandboxPolicy::for_workspace("/nonexistent/ws").validate().unwrap_err();
        assert_eq!(err.to_string(), "workspace /nonexistent/ws: does not exist");
        let mut policy = SandboxPolicy::for_workspace(&dir);
        policy.limits.memory_bytes = Some(0);
        assert_eq!(policy.validate().unwrap_err().to_string(), "the memory limit must be greater than zero");
        let mut policy = SandboxPolicy::for_workspace(&dir);
        policy.limits.timeout = Duration::ZERO;
        assert_eq!(policy.validate().unwrap_err(), PolicyError::ZeroLimit("timeout"));
    }
}
