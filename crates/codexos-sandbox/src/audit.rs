//! Landlock denials, read back from the kernel's audit log.
//!
//! A command only sees EACCES when Landlock refuses it something; the
//! supervisor learns nothing. Since Landlock ABI 7 (Linux 6.15) the kernel
//! writes an audit record for each denied access, and one describing the
//! denying domain (with the name its creator had when it restricted itself)
//! the first time that domain denies anything. This module turns them into
//! violations:
//!
//! - the command names itself with a token unique to its sandbox just
//!   before it restricts itself, so the domain record carries the token;
//! - one reader thread per process, subscribed to the audit log's multicast
//!   group, maps domains to the sandboxes running here and collects their
//!   denials;
//! - when the command has exited, the supervisor writes a marker record of
//!   its own. The kernel delivers records in the order it queued them, so
//!   once the marker is back, every denial of the sandbox is too.
//!
//! It needs the kernel's audit enabled (auditd, or `auditctl -e 1`) and, in
//! the initial user namespace, CAP_AUDIT_READ (the multicast group) and
//! CAP_AUDIT_WRITE (the marker). Without them Landlock enforces just the
//! same; its denials are not reported.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const NETLINK_AUDIT: libc::c_int = 9;
/// The read-only multicast group of audit records.
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
/// "Trusted application message": free text, the marker's type.
const AUDIT_TRUSTED_APP: u16 = 1121;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_STATUS_ENABLED: u32 = 1;

/// `landlock_restrict_self` flags (ABI 7): log what the command does after
/// `exec` (off by default), and nothing of domains it nests inside ours, so
/// a command cannot write records in our name.
pub(crate) const RESTRICT_SELF_LOG_NEW_EXEC_ON: u32 = 1 << 1;
pub(crate) const RESTRICT_SELF_LOG_SUBDOMAINS_OFF: u32 = 1 << 2;

const MARKER_PREFIX: &str = "codexos-sandbox-flush=";
/// How long the marker may take to come back before the reports are taken as they are.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Distinct denials kept per sandbox; more are only counted.
const MAX_DISTINCT_DENIALS: usize = 64;
/// Denials of domains not (yet) known, kept until their domain record arrives.
const MAX_UNATTRIBUTED: usize = 256;
/// Denials one sandbox may log before it is killed: each is a record in the
/// host's audit log, and a command denied in a loop would otherwise flood it.
pub(crate) const MAX_DENIALS: u32 = 1000;

/// A sandbox's name in the audit log: what its command calls itself when
/// it restricts itself (a process name: at most 15 bytes and a NUL).
pub(crate) type ProcessName = [u8; 16];

/// The process-wide reader, started on first use; `Err` says why denials
/// cannot be reported on this host.
pub(crate) fn log(landlock_abi: Option<u32>) -> Result<&'static AuditLog, String> {
    if landlock_abi.unwrap_or(0) < 7 {
        return Err("needs Landlock ABI 7 (Linux 6.15)".to_owned());
    }
    static LOG: OnceLock<Result<&'static AuditLog, String>> = OnceLock::new();
    match LOG.get_or_init(AuditLog::start) {
        Ok(log) if !log.working.load(Ordering::Relaxed) => {
            Err("the audit log stopped answering (was it turned off?)".to_owned())
        }
        started => started.clone(),
    }
}

/// Enables the kernel's audit log, as `auditctl -e 1` does (CAP_AUDIT_CONTROL).
/// Returns whether it was disabled before.
pub fn enable_kernel_audit() -> io::Result<bool> {
    let socket = audit_socket()?;
    let was_enabled = status(&socket)?;
    if !was_enabled {
        let mut body = [0u8; 32];
        body[0..4].copy_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
        body[4..8].copy_from_slice(&1u32.to_ne_bytes());
        request(&socket, AUDIT_SET, &body)?;
    }
    Ok(!was_enabled)
}

pub(crate) struct AuditLog {
    state: Mutex<State>,
    flushed: Condvar,
    /// The socket markers are written through (one writer at a time: its
    /// acknowledgements arrive on it).
    writer: Mutex<OwnedFd>,
    /// Markers to write, for the thread that writes them: the kernel may hold
    /// a writer for up to a minute when its queue is full, and nobody's
    /// `finish` may wait on that longer than its own deadline.
    markers: Mutex<Option<std::sync::mpsc::Sender<ProcessName>>>,
    /// Cleared when a marker did not come back: audit was turned off since.
    working: AtomicBool,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<ProcessName, Reports>,
    /// Landlock domain ids (as the records print them) of our sandboxes.
    domains: HashMap<String, ProcessName>,
    unattributed: VecDeque<(String, String)>,
    /// Recent domains named by processes other than our sandboxes: their
    /// denials are dropped at once instead of crowding `unattributed`.
    foreign: VecDeque<String>,
}

#[derive(Default)]
struct Reports {
    denials: Vec<(String, u32)>,
    uncounted: u32,
    /// All denials, for the flood limit.
    total: u32,
    flushed: bool,
    /// Records were lost (the reader's queue overflowed) while it ran.
    incomplete: bool,
    /// The outer process of the sandbox, killed at the flood limit; cleared
    /// before it is reaped, so that a reused pid is never signalled.
    pid: Option<libc::pid_t>,
    killed_at_limit: bool,
    /// Why this sandbox's marker could not be written.
    marker_error: Option<String>,
}

/// What the audit log told of one sandbox.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Denials {
    /// Each distinct denial with how often it happened.
    pub denials: Vec<(String, u32)>,
    /// Some records may be missing (lost by the kernel or not read back in time).
    pub incomplete: bool,
    /// The sandbox was killed for logging more than [`MAX_DENIALS`].
    pub killed_at_limit: bool,
}

impl AuditLog {
    fn start() -> Result<&'static AuditLog, String> {
        let writer = audit_socket().map_err(|err| format!("cannot open the audit socket: {err}"))?;
        // Asking needs CAP_AUDIT_CONTROL, which a platform need not hold:
        // then the marker below is the only test.
        if let Ok(false) = status(&writer) {
            return Err("the kernel's audit log is disabled (enable it with auditd, or auditctl -e 1)".to_owned());
        }
        let reader = subscribe().map_err(|err| match err.raw_os_error() {
            Some(libc::EPERM) => "cannot read the audit log: CAP_AUDIT_READ is needed".to_owned(),
            _ => format!("cannot read the audit log: {err}"),
        })?;
        // Lives as long as the process, like the reader thread.
        let log: &'static AuditLog = Box::leak(Box::new(AuditLog::new(writer)));
        std::thread::Builder::new()
            .name("codexos-audit".to_owned())
            .spawn(move || read_forever(log, reader))
            .map_err(|err| format!("cannot start the audit reader: {err}"))?;
        let (markers, to_write) = std::sync::mpsc::channel::<ProcessName>();
        std::thread::Builder::new()
            .name("codexos-audit-marker".to_owned())
            .spawn(move || {
                for name in to_write {
                    if let Err(err) = log.write_marker(&name) {
                        let reason = match err.raw_os_error() {
                            Some(libc::EPERM) => "cannot write to the audit log: CAP_AUDIT_WRITE is needed".to_owned(),
                            _ => format!("cannot write to the audit log: {err}"),
                        };
                        if let Some(reports) = log.lock().sandboxes.get_mut(&name) {
                            reports.marker_error = Some(reason);
                        }
                        log.flushed.notify_all();
                    }
                }
            })
            .map_err(|err| format!("cannot start the audit marker writer: {err}"))?;
        *log.markers.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(markers);
        // Proven by trying: a marker written and read back, then a denial
        // of our own made and read back.
        let probe = log.register().ok_or("the audit reader stopped")?;
        if let Err(err) = probe.flush() {
            log.working.store(false, Ordering::Relaxed);
            return Err(err);
        }
        let probe = log.register().ok_or("the audit reader stopped")?;
        deny_one_connection(probe.process_name()).map_err(|err| format!("cannot test Landlock's logging: {err}"))?;
        if probe.finish().denials.is_empty() {
            log.working.store(false, Ordering::Relaxed);
            return Err("Landlock's denials do not reach the audit log (an audit exclude rule, or a Landlock \
                        domain around this process that does not log its children's)"
                .to_owned());
        }
        Ok(log)
    }

    fn new(writer: OwnedFd) -> AuditLog {
        AuditLog {
            state: Mutex::new(State::default()),
            flushed: Condvar::new(),
            writer: Mutex::new(writer),
            markers: Mutex::new(None),
            working: AtomicBool::new(true),
        }
    }

    /// Registers a sandbox about to start; its command must restrict itself
    /// under the returned name.
    pub(crate) fn register(&'static self) -> Option<Registration> {
        if !self.working.load(Ordering::Relaxed) {
            return None;
        }
        // Random, so that nothing else on the host can guess a sandbox's name
        // and log denials in it (and two CodexOS processes never collide).
        let name = random_name()?;
        self.lock().sandboxes.insert(name, Reports::default());
        Some(Registration { log: self, name })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_marker(&self, name: &ProcessName) -> io::Result<()> {
        let mut text = format!("{MARKER_PREFIX}{}", name_text(name)).into_bytes();
        text.push(0);
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        request(&writer, AUDIT_TRUSTED_APP, &text)
    }

    fn on_record(&self, kind: u16, text: &str) {
        match kind {
            AUDIT_LANDLOCK_ACCESS => {
                let fields = fields(text);
                let Some(domain) = field(&fields, "domain") else { return };
                let mut state = self.lock();
                if state.foreign.iter().any(|known| known == domain) {
                    return;
                }
                let detail = describe_denial(&fields);
                match state.domains.get(domain).copied() {
                    Some(name) => {
                        if let Some(reports) = state.sandboxes.get_mut(&name) {
                            reports.add(detail);
                        }
                    }
                    None => {
                        if state.unattributed.len() >= MAX_UNATTRIBUTED {
                            state.unattributed.pop_front();
                        }
                        state.unattributed.push_back((domain.to_owned(), detail));
                    }
                }
            }
            AUDIT_LANDLOCK_DOMAIN => {
                let fields = fields(text);
                let Some(domain) = field(&fields, "domain") else { return };
                let mut state = self.lock();
                if field(&fields, "status") == Some("deallocated") {
                    state.domains.remove(domain);
                    state.foreign.retain(|known| known != domain);
                    return;
                }
                let name = field(&fields, "comm").and_then(name_from_text);
                let Some(name) = name.filter(|name| state.sandboxes.contains_key(name)) else {
                    state.unattributed.retain(|(of, _)| of != domain);
                    if state.foreign.len() >= MAX_UNATTRIBUTED {
                        state.foreign.pop_front();
                    }
                    state.foreign.push_back(domain.to_owned());
                    return;
                };
                state.domains.insert(domain.to_owned(), name);
                let (ours, others): (VecDeque<_>, VecDeque<_>) =
                    std::mem::take(&mut state.unattributed).into_iter().partition(|(of, _)| of == domain);
                state.unattributed = others;
                if let Some(reports) = state.sandboxes.get_mut(&name) {
                    for (_, detail) in ours {
                        reports.add(detail);
                    }
                }
            }
            AUDIT_TRUSTED_APP => {
                let Some(start) = text.find(MARKER_PREFIX) else { return };
                let rest = &text[start + MARKER_PREFIX.len()..];
                let token: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
                let Some(name) = name_from_text(&token) else { return };
                if let Some(reports) = self.lock().sandboxes.get_mut(&name) {
                    reports.flushed = true;
                    self.flushed.notify_all();
                }
            }
            _ => {}
        }
    }
}

impl Reports {
    fn add(&mut self, detail: String) {
        self.total = self.total.saturating_add(1);
        if self.total > MAX_DENIALS && !self.killed_at_limit {
            self.killed_at_limit = true;
            if let Some(pid) = self.pid {
                // SAFETY: signals a child of ours that has not been reaped
                // (its pid is cleared under the same lock before it is).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some((_, count)) = self.denials.iter_mut().find(|(known, _)| *known == detail) {
            *count += 1;
        } else if self.denials.len() < MAX_DISTINCT_DENIALS {
            self.denials.push((detail, 1));
        } else {
            self.uncounted += 1;
        }
    }
}

/// One sandbox's place in the reader's table.
pub(crate) struct Registration {
    log: &'static AuditLog,
    name: ProcessName,
}

impl Registration {
    pub(crate) fn process_name(&self) -> ProcessName {
        self.name
    }

    /// The sandbox's outer process, to kill at the flood limit; `None` once
    /// it is about to be reaped.
    pub(crate) fn set_pid(&self, pid: Option<libc::pid_t>) {
        if let Some(reports) = self.log.lock().sandboxes.get_mut(&self.name) {
            reports.pid = pid;
            if let (Some(pid), true) = (pid, reports.killed_at_limit) {
                // The limit was passed before the pid was known.
                // SAFETY: as in Reports::add.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Writes this sandbox's marker and waits for it to come back: then
    /// every record the kernel queued before it has been read.
    fn flush(&self) -> Result<(), String> {
        let log = self.log;
        let queued = log
            .markers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|markers| markers.send(self.name).is_ok());
        if !queued {
            return Err("the audit marker writer is gone".to_owned());
        }
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut state = log.lock();
        while let Some(reports) = state.sandboxes.get(&self.name).filter(|reports| !reports.flushed) {
            if let Some(err) = &reports.marker_error {
                return Err(err.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !log.working.load(Ordering::Relaxed) {
                return Err(
                    "a record written to the audit log did not come back (is the audit log enabled?)".to_owned()
                );
            }
            state = log.flushed.wait_timeout(state, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        Ok(())
    }

    /// Called once the command's every process is gone: waits for its
    /// denials to be read, and returns them (each with how often it happened).
    pub(crate) fn finish(self) -> Denials {
        let flushed = self.flush();
        if flushed.is_err() && matches!(audit_socket().and_then(|socket| status(&socket)), Ok(false)) {
            // Audit was turned off: stop asking (and waiting) for markers.
            self.log.working.store(false, Ordering::Relaxed);
        }
        let reports = self.log.lock().sandboxes.remove(&self.name).unwrap_or_default();
        // Drop removes what is left of this sandbox (its domains).
        drop(self);
        let mut denials = reports.denials;
        if reports.uncounted > 0 {
            denials.push(("other Landlock denials".to_owned(), reports.uncounted));
        }
        Denials {
            denials,
            incomplete: reports.incomplete || flushed.is_err(),
            killed_at_limit: reports.killed_at_limit,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.log.lock();
        state.sandboxes.remove(&self.name);
        state.domains.retain(|_, name| *name != self.name);
    }
}

fn read_forever(log: &'static AuditLog, socket: OwnedFd) {
    let mut buffer = vec![0u8; 64 * 1024];
    while log.working.load(Ordering::Relaxed) {
        // SAFETY: reads into a buffer we own, of the length given.
        let received = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if received < 0 {
            let err = io::Error::last_os_error();
            // A timeout lets the loop notice it is no longer wanted.
            if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EAGAIN)) {
                continue;
            }
            // Records were dropped while we were slow: what runs now may miss some.
            if err.raw_os_error() == Some(libc::ENOBUFS) {
                for reports in log.lock().sandboxes.values_mut() {
                    reports.incomplete = true;
                }
                continue;
            }
            break;
        }
        for (kind, payload) in messages(&buffer[..received as usize]) {
            if let Ok(text) = std::str::from_utf8(payload) {
                log.on_record(kind, text.trim_end_matches('\0'));
            }
        }
    }
    // Nobody waits for a marker that can no longer arrive.
    log.working.store(false, Ordering::Relaxed);
    let _guard = log.lock();
    log.flushed.notify_all();
}

/// Forks a child that restricts itself under `name` (TCP connections
/// handled, none allowed) and connects to 127.0.0.1:1, which Landlock refuses
/// before any packet is sent; the kernel logs it like a sandbox's denial.
fn deny_one_connection(name: ProcessName) -> io::Result<()> {
    use crate::child::{LANDLOCK_ACCESS_NET_CONNECT_TCP, RulesetAttr};
    let attr = RulesetAttr { handled_access_fs: 0, handled_access_net: LANDLOCK_ACCESS_NET_CONNECT_TCP, scoped: 0 };
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    address.sin_family = libc::AF_INET as libc::sa_family_t;
    address.sin_port = 1u16.to_be();
    address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    // SAFETY: the child makes only raw system calls on memory prepared above
    // (this process has other threads: nothing may allocate or lock), then exits.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let ruleset = libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0,
            );
            if ruleset < 0 || libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0) < 0 {
                libc::_exit(2);
            }
            let socket = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let connected = libc::connect(
                socket,
                (&address as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            libc::_exit(if connected < 0 { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 2 {
            return Err(io::Error::other("the test process could not restrict itself"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Netlink
// ---------------------------------------------------------------------------

fn audit_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_AUDIT) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // Replies come at once; the reader wakes up now and then to see if it is still wanted.
    let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
    // SAFETY: sets a socket option from a local of the right type.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(socket)
}

/// A socket subscribed to the audit log's multicast group.
fn subscribe() -> io::Result<OwnedFd> {
    let socket = audit_socket()?;
    let fd = socket.as_raw_fd();
    // SAFETY: sockaddr_nl is plain data; all-zero is valid.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address.nl_groups = 1 << (AUDIT_NLGRP_READLOG - 1);
    // A burst of denials must not overflow the queue while the reader sleeps.
    let size: libc::c_int = 4 * 1024 * 1024;
    // SAFETY: binds to a local address of the right type and size; sets an
    // option from a local (SO_RCVBUFFORCE needs CAP_NET_ADMIN: try both).
    unsafe {
        for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if set == 0 {
                break;
            }
        }
        if libc::bind(
            fd,
            (&address as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(socket)
}

/// Sends one request to the kernel and waits for its acknowledgement.
fn request(socket: &OwnedFd, kind: u16, body: &[u8]) -> io::Result<()> {
    let sequence = send(socket, kind, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, body)?;
    let mut buffer = [0u8; 1024];
    loop {
        let received = receive(socket, &mut buffer)?;
        for (reply, payload) in messages(&buffer[..received]) {
            // The acknowledgement quotes our request's header; an earlier
            // request's late answer is not this one's.
            let quoted = payload.get(12..16).map(|seq| u32::from_ne_bytes([seq[0], seq[1], seq[2], seq[3]]));
            if reply == libc::NLMSG_ERROR as u16 && quoted == Some(sequence) {
                return acknowledged(payload);
            }
        }
    }
}

/// Whether the kernel's audit log is enabled (needs CAP_AUDIT_CONTROL).
fn status(socket: &OwnedFd) -> io::Result<bool> {
    send(socket, AUDIT_GET, libc::NLM_F_REQUEST as u16, &[])?;
    // Only ever asked first, on a new socket: nothing earlier can answer.
    let mut buffer = [0u8; 1024];
    loop {
        let received = receive(socket, &mut buffer)?;
        for (reply, payload) in messages(&buffer[..received]) {
            if reply == AUDIT_GET && payload.len() >= 8 {
                let enabled = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
                return Ok(enabled != 0);
            }
            if reply == libc::NLMSG_ERROR as u16 {
                acknowledged(payload)?;
            }
        }
    }
}

/// The outcome an acknowledgement (`NLMSG_ERROR`) carries: 0, or a negated errno.
fn acknowledged(payload: &[u8]) -> io::Result<()> {
    match payload.get(..4) {
        Some(code) => match i32::from_ne_bytes([code[0], code[1], code[2], code[3]]) {
            0 => Ok(()),
            code => Err(io::Error::from_raw_os_error(-code)),
        },
        None => Err(io::Error::other("a truncated acknowledgement")),
    }
}

/// Sends one message to the kernel; returns its sequence number.
fn send(socket: &OwnedFd, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
    static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let header = libc::nlmsghdr {
        nlmsg_len: (std::mem::size_of::<libc::nlmsghdr>() + body.len()) as u32,
        nlmsg_type: kind,
        nlmsg_flags: flags,
        nlmsg_seq: SEQUENCE.fetch_add(1, Ordering::Relaxed),
        nlmsg_pid: 0,
    };
    let mut message = Vec::with_capacity(header.nlmsg_len as usize);
    message.extend_from_slice(&header.nlmsg_len.to_ne_bytes());
    message.extend_from_slice(&header.nlmsg_type.to_ne_bytes());
    message.extend_from_slice(&header.nlmsg_flags.to_ne_bytes());
    message.extend_from_slice(&header.nlmsg_seq.to_ne_bytes());
    message.extend_from_slice(&header.nlmsg_pid.to_ne_bytes());
    message.extend_from_slice(body);
    // SAFETY: sockaddr_nl is plain data; all-zero (pid 0) addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sends a buffer we own to an address of the right type and size.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(header.nlmsg_seq) }
}

fn receive(socket: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    let fd: RawFd = socket.as_raw_fd();
    loop {
        // SAFETY: reads into a buffer we own, of the length given.
        let received = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if received >= 0 {
            return Ok(received as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The netlink messages in a datagram: (type, payload).
fn messages(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    const HEADER: usize = 16;
    let mut found = Vec::new();
    while data.len() >= HEADER {
        let length = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if length < HEADER || length > data.len() {
            break;
        }
        found.push((kind, &data[HEADER..length]));
        let aligned = (length + 3) & !3;
        data = data.get(aligned..).unwrap_or(&[]);
    }
    found
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// The `key=value` fields of a record's text, after its `audit(…):` stamp.
/// Quoted values lose their quotes; values the kernel hex-encoded (because
/// they held spaces, quotes or control characters) are decoded.
fn fields(text: &str) -> Vec<(&str, String)> {
    let body = text.find("): ").map_or(text, |at| &text[at + 3..]);
    let mut found = Vec::new();
    let mut rest = body.trim_start();
    while let Some(equals) = rest.find('=') {
        let key = rest[..equals].trim();
        let after = &rest[equals + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let decoded = if TEXT_KEYS.contains(&key) { decode_hex(raw) } else { None };
            (decoded.unwrap_or_else(|| raw.to_owned()), &after[end..])
        };
        found.push((key, value));
        rest = next.trim_start();
    }
    found
}

fn field<'a>(fields: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(name, _)| *name == key).map(|(_, value)| value.as_str())
}

/// Keys whose values are text from outside the kernel: written quoted, or
/// in hex when they hold spaces, quotes, control or non-ASCII bytes.
const TEXT_KEYS: [&str; 6] = ["path", "dev", "comm", "ocomm", "exe", "name"];

/// Hex-encoded text as the audit log writes untrusted strings; `None` for
/// anything else.
fn decode_hex(raw: &str) -> Option<String> {
    if raw.len() < 2 || !raw.len().is_multiple_of(2) || !raw.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> =
        (0..raw.len()).step_by(2).filter_map(|at| u8::from_str_radix(&raw[at..at + 2], 16).ok()).collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// "net.connect_tcp denied: 127.0.0.1:8080" and the like.
fn describe_denial(fields: &[(&str, String)]) -> String {
    let blockers = field(fields, "blockers").unwrap_or("access");
    let target = if let (Some(address), Some(port)) = (field(fields, "daddr"), field(fields, "dest")) {
        if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
    } else if let Some(port) = field(fields, "src") {
        format!("port {port}")
    } else if let Some(path) = field(fields, "path") {
        path.to_owned()
    } else if field(fields, "opid").is_some() {
        // The host's pid of the target means nothing inside (and is not for tenants to see).
        format!("a process outside the command's domain ({})", field(fields, "ocomm").unwrap_or("?"))
    } else {
        fields
            .iter()
            .filter(|(key, _)| !matches!(*key, "domain" | "blockers"))
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Paths are the command's choice: no control characters reach a terminal or a log.
    let target: String =
        target.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect();
    if target.is_empty() { format!("{blockers} denied") } else { format!("{blockers} denied: {target}") }
}

/// "cx" and 13 random lowercase hex digits, from the kernel's generator.
fn random_name() -> Option<ProcessName> {
    let mut random = [0u8; 7];
    // SAFETY: fills a local buffer of the length given.
    let filled = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if filled != random.len() as isize {
        return None;
    }
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    name_from_text(&format!("cx{}", &hex[..13]))
}

fn name_text(name: &ProcessName) -> String {
    let end = name.iter().position(|byte| *byte == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

fn name_from_text(text: &str) -> Option<ProcessName> {
    let bytes = text.as_bytes();
    if bytes.len() != 15 {
        return None;
    }
    let mut name = [0u8; 16];
    name[..15].copy_from_slice(bytes);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_records_become_short_descriptions() {
        let connect = "audit(1729738800.268:30): domain=195ba459b blockers=net.connect_tcp daddr=127.0.0.1 dest=8080";
        assert_eq!(describe_denial(&fields(connect)), "net.connect_tcp denied: 127.0.0.1:8080");
        let bind = "audit(1.2:3): domain=1a blockers=net.bind_tcp saddr=0.0.0.0 src=80";
        assert_eq!(describe_denial(&fields(bind)), "net.bind_tcp denied: port 80");
        let file =
            "audit(1.2:3): domain=1a blockers=fs.write_file,fs.truncate path=\"/dev/tty\" dev=\"devtmpfs\" ino=9";
        assert_eq!(describe_denial(&fields(file)), "fs.write_file,fs.truncate denied: /dev/tty");
        let signal = "audit(1.2:3): domain=1a blockers=scope.signal opid=4242 ocomm=\"sleep\"";
        assert_eq!(
            describe_denial(&fields(signal)),
            "scope.signal denied: a process outside the command's domain (sleep)"
        );
    }

    #[test]
    fn hex_encoded_values_are_decoded_and_numbers_are_not() {
        // "/tmp/a b" holds a space, so the kernel writes it in hex, unquoted.
        let record = "audit(1.2:3): domain=1a blockers=fs.read_file path=2F746D702F612062 dev=\"tmpfs\" ino=12";
        let parsed = fields(record);
        assert_eq!(field(&parsed, "path"), Some("/tmp/a b"));
        let accented = fields("audit(1.2:3): domain=1a blockers=fs.read_file path=2FC3A9 ino=12");
        assert_eq!(field(&accented, "path"), Some("/é"));
        assert_eq!(field(&parsed, "ino"), Some("12"));
        assert_eq!(field(&parsed, "domain"), Some("1a"));
    }

    #[test]
    fn domain_records_name_their_creator() {
        let record = "audit(1.2:3): domain=195ba459b status=allocated mode=enforcing pid=300 uid=0 \
                      exe=\"/usr/bin/codexos\" comm=\"cx0012ab0000001\"";
        let parsed = fields(record);
        assert_eq!(field(&parsed, "status"), Some("allocated"));
        assert_eq!(
            field(&parsed, "comm").and_then(name_from_text).map(|name| name_text(&name)).unwrap(),
            "cx0012ab0000001"
        );
    }

    #[test]
    fn datagrams_split_into_aligned_messages() {
        let mut data = Vec::new();
        for (kind, payload) in [(1423u16, &b"abcde"[..]), (1424, &b"xy"[..])] {
            let length = 16 + payload.len();
            data.extend_from_slice(&(length as u32).to_ne_bytes());
            data.extend_from_slice(&kind.to_ne_bytes());
            data.extend_from_slice(&[0; 10]);
            data.extend_from_slice(payload);
            data.resize((data.len() + 3) & !3, 0);
        }
        assert_eq!(messages(&data), vec![(1423, &b"abcde"[..]), (1424, &b"xy"[..])]);
        // A length past the end stops the walk instead of reading beyond it.
        data[16 + 8] = 200;
        assert_eq!(messages(&data).len(), 1);
    }

    fn reports_of<R>(log: &AuditLog, name: &ProcessName, read: impl FnOnce(&Reports) -> R) -> R {
        read(log.lock().sandboxes.get(name).unwrap())
    }

    #[test]
    fn denials_are_attributed_through_their_domain_record() {
        let writer = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let log: &'static AuditLog = Box::leak(Box::new(AuditLog::new(writer)));
        let ours = log.register().unwrap();
        let other = log.register().unwrap();
        assert_ne!(ours.process_name(), other.process_name());
        let name = name_text(&ours.process_name());
        let connect = |domain: &str, port: u16| {
            format!("audit(1.2:3): domain={domain} blockers=net.connect_tcp daddr=127.0.0.1 dest={port}")
        };
        let allocated = |domain: &str, comm: &str| {
            format!(
                "audit(1.2:3): domain={domain} status=allocated mode=enforcing pid=5 uid=0 exe=\"/x\" comm=\"{comm}\""
            )
        };
        // A domain's first denial comes before the record that names it.
        log.on_record(AUDIT_LANDLOCK_ACCESS, &connect("aa", 1));
        log.on_record(AUDIT_LANDLOCK_ACCESS, &connect("bb", 2));
        log.on_record(AUDIT_LANDLOCK_DOMAIN, &allocated("aa", &name));
        // Somebody else's domain, named like ours but not registered here.
        log.on_record(AUDIT_LANDLOCK_DOMAIN, &allocated("bb", "cx0000000000000"));
        // ... whose denials are dropped at once, now and later.
        assert!(log.lock().unattributed.is_empty());
        log.on_record(AUDIT_LANDLOCK_ACCESS, &connect("bb", 2));
        assert!(log.lock().unattributed.is_empty());
        log.on_record(AUDIT_LANDLOCK_ACCESS, &connect("aa", 1));
        log.on_record(AUDIT_LANDLOCK_ACCESS, &connect("aa", 3));
        assert_eq!(
            reports_of(log, &ours.process_name(), |reports| reports.denials.clone()),
            [
                ("net.connect_tcp denied: 127.0.0.1:1".to_owned(), 2),
                ("net.connect_tcp denied: 127.0.0.1:3".to_owned(), 1)
            ]
        );
        assert!(reports_of(log, &other.process_name(), |reports| reports.denials.is_empty()));

        // Only our own marker flushes our report.
        log.on_record(AUDIT_TRUSTED_APP, &format!("audit(1.2:4): pid=1 uid=0 msg='{MARKER_PREFIX}{name}'"));
        assert!(reports_of(log, &ours.process_name(), |reports| reports.flushed));
        assert!(!reports_of(log, &other.process_name(), |reports| reports.flushed));

        // A freed domain is forgotten; so is a finished sandbox's.
        log.on_record(AUDIT_LANDLOCK_DOMAIN, "audit(1.2:5): domain=aa status=deallocated denials=3");
        log.on_record(AUDIT_LANDLOCK_DOMAIN, "audit(1.2:5): domain=bb status=deallocated denials=2");
        assert!(log.lock().domains.is_empty());
        assert!(log.lock().foreign.is_empty());
        drop(ours);
        assert_eq!(log.lock().sandboxes.len(), 1);
    }

    #[test]
    fn a_flood_of_denials_passes_the_limit_once() {
        let mut reports = Reports::default();
        for _ in 0..MAX_DENIALS {
            reports.add("net.connect_tcp denied: 127.0.0.1:1".to_owned());
        }
        assert!(!reports.killed_at_limit);
        reports.add("net.connect_tcp denied: 127.0.0.1:1".to_owned());
        assert!(reports.killed_at_limit);
        assert_eq!(reports.denials, [("net.connect_tcp denied: 127.0.0.1:1".to_owned(), MAX_DENIALS + 1)]);
    }

    #[test]
    fn targets_are_unambiguous_and_printable() {
        let v6 = "audit(1.2:3): domain=1a blockers=net.connect_tcp daddr=::1 dest=8080";
        assert_eq!(describe_denial(&fields(v6)), "net.connect_tcp denied: [::1]:8080");
        // "/a\nb\x1b[31m", hex-encoded as the kernel writes it.
        let hostile = "audit(1.2:3): domain=1a blockers=fs.read_file path=2F610A621B5B33316D ino=1";
        assert_eq!(describe_denial(&fields(hostile)), "fs.read_file denied: /a\\nb\\u{1b}[31m");
    }

    #[test]
    fn denials_are_counted_and_bounded() {
        let mut reports = Reports::default();
        for round in 0..3 {
            for index in 0..(MAX_DISTINCT_DENIALS + 1) {
                reports.add(format!("denial {index}"));
            }
            assert_eq!(reports.uncounted, round + 1);
        }
        assert_eq!(reports.denials.len(), MAX_DISTINCT_DENIALS);
        assert!(reports.denials.iter().all(|(_, count)| *count == 3));
    }
}
