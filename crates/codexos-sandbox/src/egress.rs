//! The egress proxy: the only way out of a sandbox with an allow-listed
//! network. It runs on the host side, listens on a Unix socket that is bound
//! into the sandbox (the init relays 127.0.0.1:3128 to it), and speaks HTTP
//! proxy: `CONNECT host:port` for TLS and absolute-form requests for plain
//! HTTP. Every decision, allowed or blocked, is recorded with its destination.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use crate::policy::Destination;

/// One connection attempt through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkDecision {
    /// `host:port` as the client asked for it.
    pub destination: String,
    pub allowed: bool,
}

/// A running proxy; `finish` stops it and returns its decisions.
pub(crate) struct EgressProxy {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
    acceptor: Option<JoinHandle<()>>,
    decisions: Arc<Mutex<Vec<NetworkDecision>>>,
}

const MAX_HEAD: usize = 16 * 1024;
/// Connections served at once; more get 503 (each one is a host thread).
const MAX_CONNECTIONS: usize = 64;
/// A tunnel idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Decisions kept per run; a flood of attempts is summarised, not stored.
const MAX_DECISIONS: usize = 1000;

impl EgressProxy {
    pub(crate) fn start(path: &Path, allow: &[Destination]) -> std::io::Result<Self> {
        let listener = Arc::new(UnixListener::bind(path)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, stopping, decisions, allow) =
                (Arc::clone(&listener), Arc::clone(&stopping), Arc::clone(&decisions), allow.to_vec());
            std::thread::Builder::new().name("egress-proxy".into()).spawn(move || {
                let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                for client in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut client) = client else { continue };
                    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::AcqRel);
                        respond(
                            &mut client,
                            "503 Service Unavailable",
                            "codexos sandbox: too many proxy connections\n",
                        );
                        continue;
                    }
                    let (allow, decisions, finished) = (allow.clone(), Arc::clone(&decisions), Arc::clone(&active));
                    let spawned = std::thread::Builder::new().name("egress-connection".into()).spawn(move || {
                        serve(client, &allow, &decisions);
                        finished.fetch_sub(1, Ordering::AcqRel);
                    });
                    if spawned.is_err() {
                        // The thread never ran, so neither did its decrement.
                        active.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?
        };
        Ok(Self { path: path.to_owned(), stopping, listener, acceptor: Some(acceptor), decisions })
    }

    /// Stops accepting and returns every decision made.
    pub(crate) fn finish(mut self) -> Vec<NetworkDecision> {
        self.stop();
        self.decisions.lock().map(|decisions| decisions.clone()).unwrap_or_default()
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the acceptor blocked in accept().
        // SAFETY: shutdown on a socket we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.stop();
        }
    }
}

fn serve(mut client: UnixStream, allow: &[Destination], decisions: &Mutex<Vec<NetworkDecision>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some((head, rest)) = read_head(&mut client) else { return };
    let Some(request) = parse_request(&head) else {
        respond(&mut client, "400 Bad Request", "codexos sandbox: not an HTTP proxy request\n");
        return;
    };
    let destination = format!("{}:{}", request.host, request.port);
    let allowed =
        allow.iter().any(|entry| entry.host.eq_ignore_ascii_case(&request.host) && entry.port == request.port);
    if let Ok(mut decisions) = decisions.lock()
        && decisions.len() < MAX_DECISIONS
    {
        decisions.push(NetworkDecision { destination: destination.clone(), allowed });
    }
    if !allowed {
        respond(
            &mut client,
            "403 Forbidden",
            &format!("codexos sandbox: egress to {destination} is not allowed by the policy\n"),
        );
        return;
    }
    // A name on the allow-list must not become a way into the host or its
    // network's metadata service through what it resolves to; an address
    // listed literally is taken as meant.
    let listed_literally = request.host.parse::<std::net::IpAddr>().is_ok();
    let upstream = (request.host.as_str(), request.port).to_socket_addrs().ok().and_then(|mut addresses| {
        addresses.find_map(|address| {
            if !listed_literally && is_internal(address.ip()) {
                return None;
            }
            TcpStream::connect_timeout(&address, Duration::from_secs(10)).ok()
        })
    });
    let Some(mut upstream) = upstream else {
        respond(&mut client, "502 Bad Gateway", &format!("codexos sandbox: cannot reach {destination}\n"));
        return;
    };
    let _ = client.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = upstream.set_read_timeout(Some(IDLE_TIMEOUT));
    // Plain HTTP carries exactly one request per connection ("Connection:
    // close"): a second request could name another host and must be
    // checked on its own connection.
    let mut upload_left: Option<u64> = None;
    let forwarded = match &request.origin_form {
        // CONNECT: the tunnel is open; what follows is the client's TLS.
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Some(first_line) => {
            let (headers, body_length) = single_request_headers(&head[request.head_rest..]);
            let body_sent = u64::try_from(rest.len()).unwrap_or(u64::MAX).min(body_length);
            upload_left = Some(body_length - body_sent);
            upstream
                .write_all(first_line.as_bytes())
                .and_then(|()| upstream.write_all(headers.as_bytes()))
                .and_then(|()| upstream.write_all(&rest[..usize::try_from(body_sent).unwrap_or(0)]))
        }
    };
    if forwarded.is_err() {
        return;
    }
    let (Ok(client_reader), Ok(mut upstream_reader)) = (client.try_clone(), upstream.try_clone()) else { return };
    let upload = std::thread::spawn(move || {
        let mut client_reader: Box<dyn Read + Send> = match upload_left {
            Some(left) => Box::new(client_reader.take(left)),
            None => Box::new(client_reader),
        };
        let _ = std::io::copy(&mut client_reader, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream_reader, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = upload.join();
}

/// Reads up to the end of the request head; returns it and any bytes after.
fn read_head(client: &mut UnixStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            let rest = head.split_off(end + 4);
            return Some((head, rest));
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ProxyRequest {
    host: String,
    port: u16,
    /// For plain HTTP: the request line rewritten to origin form.
    origin_form: Option<String>,
    /// Where the head continues after the request line.
    head_rest: usize,
}

fn parse_request(head: &[u8]) -> Option<ProxyRequest> {
    let line_end = head.windows(2).position(|window| window == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/") {
        return None;
    }
    if method == "CONNECT" {
        let destination = Destination::parse(target).ok()?;
        return Some(ProxyRequest {
            host: destination.host,
            port: destination.port,
            origin_form: None,
            head_rest: line_end + 2,
        });
    }
    let rest = target.strip_prefix("http://")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let destination = Destination::parse(&with_port).ok()?;
    Some(ProxyRequest {
        host: destination.host,
        port: destination.port,
        origin_form: Some(format!("{method} {path} {version}\r\n")),
        head_rest: line_end + 2,
    })
}

/// The request's header lines with hop-by-hop connection headers replaced
/// by `Connection: close`, and its declared body length.
fn single_request_headers(headers: &[u8]) -> (String, u64) {
    let text = String::from_utf8_lossy(headers);
    let mut kept = String::with_capacity(text.len() + 32);
    let mut body_length = 0u64;
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        if name == "content-length" {
            body_length = line.split_once(':').and_then(|(_, value)| value.trim().parse().ok()).unwrap_or(0);
        }
        if matches!(name.as_str(), "connection" | "proxy-connection" | "keep-alive") {
            continue;
        }
        kept.push_str(line);
        kept.push_str("\r\n");
    }
    kept.push_str("Connection: close\r\n\r\n");
    (kept, body_length)
}

/// Loopback, link-local (cloud metadata lives there), unspecified and
/// multicast addresses: not reachable through a name.
fn is_internal(address: std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn respond(client: &mut UnixStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_are_limited_to_one() {
        let (headers, length) =
            single_request_headers(b"Host: a\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(headers, "Host: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n");
        assert_eq!(length, 5);
        assert!(is_internal("169.254.169.254".parse().unwrap()));
        assert!(is_internal("127.0.0.1".parse().unwrap()) && is_internal("fe80::1".parse().unwrap()));
        assert!(!is_internal("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn proxy_requests_parse() {
        let connect = parse_request(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!((connect.host.as_str(), connect.port, connect.origin_form), ("pypi.org", 443, None));
        let get = parse_request(b"GET http://example.com/a/b?c HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!((get.host.as_str(), get.port), ("example.com", 80));
        assert_eq!(get.origin_form.as_deref(), Some("GET /a/b?c HTTP/1.1\r\n"));
        let port = parse_request(b"GET http://127.0.0.1:8080 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((port.port, port.origin_form.as_deref()), (8080, Some("GET / HTTP/1.1\r\n")));
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"CONNECT nohost HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert_eq!(parse_request(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
