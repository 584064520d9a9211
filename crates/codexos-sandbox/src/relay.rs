//! The init's TCP-to-Unix relay, for sandboxes with an allow-listed network.
//!
//! The sandbox's network namespace has only a loopback interface. The init
//! listens on 127.0.0.1:PROXY_PORT there and relays each connection to the
//! platform's egress proxy, whose Unix socket is bound into the view; tools
//! reach it through `HTTP_PROXY`/`HTTPS_PROXY`. Like all code between fork
//! and exec, this allocates nothing: buffers come from one `mmap`, the
//! connection table is a fixed array.

use std::ffi::CStr;
use std::os::fd::RawFd;

use crate::child::{REPORT_EXIT_STATUS, report};

/// The port tools inside the sandbox use as their HTTP(S) proxy.
pub(crate) const PROXY_PORT: u16 = 3128;
/// Where the egress proxy's socket appears inside the sandbox.
pub(crate) const SOCKET_INSIDE: &CStr = c"/.codexos-egress.sock";

const MAX_CONNECTIONS: usize = 32;
const BUFFER: usize = 16 * 1024;

/// Brings up `lo` and listens on 127.0.0.1:PROXY_PORT; returns the listener.
///
/// # Safety
/// Only between fork and exec (raw syscalls).
pub(crate) unsafe fn listen() -> Result<RawFd, ()> {
    #[repr(C)]
    struct InterfaceFlags {
        name: [u8; 16],
        flags: libc::c_short,
        padding: [u8; 22],
    }
    // SAFETY: raw syscalls on locals.
    unsafe {
        let control = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if control < 0 {
            return Err(());
        }
        let mut request = InterfaceFlags { name: [0; 16], flags: 0, padding: [0; 22] };
        request.name[..2].copy_from_slice(b"lo");
        if libc::ioctl(control, libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(());
        }
        request.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(control, libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(());
        }
        libc::close(control);
        let listener = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0);
        if listener < 0 {
            return Err(());
        }
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: PROXY_PORT.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
            sin_zero: [0; 8],
        };
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(listener, (&address as *const libc::sockaddr_in).cast(), size) < 0
            || libc::listen(listener, 64) < 0
        {
            return Err(());
        }
        Ok(listener)
    }
}

#[derive(Clone, Copy)]
struct Connection {
    client: RawFd,
    upstream: RawFd,
    /// Bytes read from the client, waiting to go upstream: [sent, filled).
    to_upstream: (usize, usize),
    to_client: (usize, usize),
    client_eof: bool,
    upstream_eof: bool,
}

const EMPTY: Connection = Connection {
    client: -1,
    upstream: -1,
    to_upstream: (0, 0),
    to_client: (0, 0),
    client_eof: false,
    upstream_eof: false,
};

/// The init's loop with a network: relay connections and reap children
/// until the command exits; then report its status and exit.
///
/// # Safety
/// Only between fork and exec (raw syscalls); `signals` is a signalfd for
/// SIGCHLD, `listener` from [`listen`].
pub(crate) unsafe fn serve_until(command: libc::pid_t, report_fd: RawFd, listener: RawFd, signals: RawFd) -> ! {
    // SAFETY: raw syscalls on locals and on the buffer mapped here.
    unsafe {
        let buffers = libc::mmap(
            std::ptr::null_mut(),
            MAX_CONNECTIONS * 2 * BUFFER,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let buffers = if buffers == libc::MAP_FAILED { std::ptr::null_mut() } else { buffers as *mut u8 };
        let mut connections = [EMPTY; MAX_CONNECTIONS];
        let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 2 + 2 * MAX_CONNECTIONS];
        loop {
            fds[0] = libc::pollfd { fd: signals, events: libc::POLLIN, revents: 0 };
            let has_room = connections.iter().any(|connection| connection.client < 0);
            fds[1] = libc::pollfd {
                fd: if has_room && !buffers.is_null() { listener } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            };
            for (index, connection) in connections.iter().enumerate() {
                let (client_events, upstream_events) = interest(connection);
                fds[2 + 2 * index] = libc::pollfd { fd: connection.client, events: client_events, revents: 0 };
                fds[3 + 2 * index] = libc::pollfd { fd: connection.upstream, events: upstream_events, revents: 0 };
            }
            if libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                let mut info = [0u8; 128];
                libc::read(signals, info.as_mut_ptr().cast(), info.len());
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == command {
                        report(report_fd, REPORT_EXIT_STATUS, 0, status);
                        libc::_exit(0);
                    }
                }
            }
            if fds[1].revents != 0 {
                accept(listener, &mut connections);
            }
            for index in 0..MAX_CONNECTIONS {
                let connection = &mut connections[index];
                if connection.client < 0 {
                    continue;
                }
                let to_upstream = buffers.add(index * 2 * BUFFER);
                let to_client = to_upstream.add(BUFFER);
                let revents = fds[2 + 2 * index].revents | fds[3 + 2 * index].revents;
                if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    close(connection);
                } else if revents != 0 {
                    pump(connection, to_upstream, to_client);
                }
            }
        }
    }
}

fn interest(connection: &Connection) -> (libc::c_short, libc::c_short) {
    if connection.client < 0 {
        return (0, 0);
    }
    let mut client = 0;
    let mut upstream = 0;
    if !connection.client_eof && connection.to_upstream.1 == 0 {
        client |= libc::POLLIN;
    }
    if !connection.upstream_eof && connection.to_client.1 == 0 {
        upstream |= libc::POLLIN;
    }
    if connection.to_upstream.1 > connection.to_upstream.0 {
        upstream |= libc::POLLOUT;
    }
    if connection.to_client.1 > connection.to_client.0 {
        client |= libc::POLLOUT;
    }
    (client, upstream)
}

unsafe fn accept(listener: RawFd, connections: &mut [Connection; MAX_CONNECTIONS]) {
    // SAFETY: raw syscalls on locals.
    unsafe {
        let client = libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        );
        if client < 0 {
            return;
        }
        let upstream = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        let mut address: libc::sockaddr_un = std::mem::zeroed();
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (slot, byte) in address.sun_path.iter_mut().zip(SOCKET_INSIDE.to_bytes()) {
            *slot = *byte as libc::c_char;
        }
        let size = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if upstream < 0 || libc::connect(upstream, (&address as *const libc::sockaddr_un).cast(), size) < 0 {
            libc::close(client);
            if upstream >= 0 {
                libc::close(upstream);
            }
            return;
        }
        if let Some(slot) = connections.iter_mut().find(|connection| connection.client < 0) {
            *slot = Connection { client, upstream, ..EMPTY };
        } else {
            libc::close(client);
            libc::close(upstream);
        }
    }
}

/// Moves whatever can move without blocking; closes the connection when
/// both directions are finished or one fails.
unsafe fn pump(connection: &mut Connection, to_upstream: *mut u8, to_client: *mut u8) {
    // SAFETY: reads and writes within the connection's two BUFFER-sized areas.
    unsafe {
        let mut failed = false;
        failed |= !transfer(
            connection.client,
            connection.upstream,
            to_upstream,
            &mut connection.to_upstream,
            &mut connection.client_eof,
        );
        failed |= !transfer(
            connection.upstream,
            connection.client,
            to_client,
            &mut connection.to_client,
            &mut connection.upstream_eof,
        );
        let drained = connection.to_upstream.1 == 0 && connection.to_client.1 == 0;
        if failed || (connection.client_eof && connection.upstream_eof && drained) {
            close(connection);
        }
    }
}

unsafe fn close(connection: &mut Connection) {
    // SAFETY: closes the connection's own two descriptors.
    unsafe {
        libc::close(connection.client);
        libc::close(connection.upstream);
    }
    *connection = EMPTY;
}

/// One direction: read from `from` into the buffer when it is empty, write
/// pending bytes to `to`, pass an end-of-file on once flushed. False on error.
unsafe fn transfer(from: RawFd, to: RawFd, buffer: *mut u8, window: &mut (usize, usize), eof: &mut bool) -> bool {
    // SAFETY: the buffer is BUFFER bytes long; offsets stay inside it.
    unsafe {
        if window.1 == 0 && !*eof {
            let n = libc::read(from, buffer.cast(), BUFFER);
            if n == 0 {
                *eof = true;
                libc::shutdown(to, libc::SHUT_WR);
            } else if n > 0 {
                *window = (0, n as usize);
            } else if !would_block() {
                return false;
            }
        }
        while window.1 > window.0 {
            let n = libc::write(to, buffer.add(window.0).cast(), window.1 - window.0);
            if n > 0 {
                window.0 += n as usize;
            } else if n < 0 && would_block() {
                break;
            } else {
                return false;
            }
        }
        if window.0 == window.1 {
            *window = (0, 0);
        }
        true
    }
}

fn would_block() -> bool {
    matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}
