//! The supervisor's side of the seccomp filter: denied system calls are
//! sent here (SECCOMP_RET_USER_NOTIF), recorded as violations with their
//! names, and answered with the error the command sees.
//!
//! The command installs the filter just before `exec` and passes the
//! notification descriptor over a socket pair (SCM_RIGHTS).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::seccomp::DENIED;

/// Receives the listener, then answers notifications.
pub(crate) struct SyscallMonitor {
    socket: OwnedFd,
    listener: Option<OwnedFd>,
    /// Every filtered process is gone (or the channel failed): stop polling.
    finished: bool,
    /// Denied calls by name, with how often each was tried.
    pub denied: Vec<(&'static str, u32)>,
}

impl SyscallMonitor {
    pub(crate) fn new(socket: OwnedFd) -> Self {
        Self { socket, listener: None, finished: false, denied: Vec::new() }
    }

    /// The descriptor to poll: the socket until the listener arrives; none
    /// once finished.
    pub(crate) fn fd(&self) -> RawFd {
        if self.finished {
            return -1;
        }
        self.listener.as_ref().map_or(self.socket.as_raw_fd(), AsRawFd::as_raw_fd)
    }

    /// Handles the poll events `revents` on `fd()`.
    pub(crate) fn on_ready(&mut self, revents: libc::c_short) {
        match &self.listener {
            None if revents & libc::POLLIN != 0 => {
                self.listener = receive_fd(self.socket.as_raw_fd());
                if self.listener.is_none() {
                    self.finish();
                }
            }
            Some(listener) if revents & libc::POLLIN != 0 => {
                let raw = listener.as_raw_fd();
                self.answer(raw);
            }
            // Hung up: the command never sent a listener, or every
            // filtered process has exited.
            _ => self.finish(),
        }
    }

    /// Stops listening. Closing the listener matters: while it is open, a
    /// denied call would wait for an answer that never comes; once closed,
    /// the kernel fails such calls at once.
    fn finish(&mut self) {
        self.finished = true;
        self.listener = None;
    }

    fn answer(&mut self, listener: RawFd) {
        // SAFETY: the kernel requires a zeroed notification buffer; both
        // structs are plain data of the kernel's layout.
        let mut notification: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        let received = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notification) };
        if received < 0 {
            // ENOENT: the caller died before its notification was read;
            // anything else means the channel is broken.
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
                self.finish();
            }
            return;
        }
        let number = libc::c_long::from(notification.data.nr);
        let (name, error) = describe(number);
        match self.denied.iter_mut().find(|(denied, _)| *denied == name) {
            Some((_, count)) => *count += 1,
            None => self.denied.push((name, 1)),
        }
        let response = libc::seccomp_notif_resp { id: notification.id, val: 0, error: -error, flags: 0 };
        // SAFETY: answers the notification just received; a failure means
        // the caller died meanwhile, which needs no answer.
        unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &response) };
    }
}

/// The name of a denied call and the error its caller gets.
fn describe(number: libc::c_long) -> (&'static str, i32) {
    if number == libc::SYS_socket {
        return ("socket (address family)", libc::EAFNOSUPPORT);
    }
    if number == libc::SYS_clone {
        return ("clone (new namespace)", libc::EPERM);
    }
    if number == libc::SYS_ioctl {
        return ("ioctl (terminal injection)", libc::EPERM);
    }
    let name = DENIED.iter().find(|(_, nr)| *nr == number);
    (name.map_or("a foreign system call", |(name, _)| *name), libc::EPERM)
}

/// A one-byte message with room for one descriptor, over the caller's
/// buffers (which must outlive its use). Allocation-free, for `send_fd`.
fn fd_message(iov: &mut libc::iovec, control: &mut [u64; 4]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    message
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(socket: RawFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    let mut message = fd_message(&mut iov, &mut control);
    // SAFETY: the message points at locals that outlive the call.
    unsafe {
        if libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let header = libc::CMSG_FIRSTHDR(&message);
        if header.is_null() || (*header).cmsg_level != libc::SOL_SOCKET || (*header).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>());
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// Sends `fd` over `socket` (from the command, between fork and exec).
///
/// # Safety
/// Raw syscalls only; callable after fork.
pub(crate) unsafe fn send_fd(socket: RawFd, fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    let message = fd_message(&mut iov, &mut control);
    // SAFETY: as in receive_fd; the control buffer has room for one descriptor.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
        libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) == 1
    }
}
