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

impl EgressProxy {
    pub(crate) fn start(path: &Path, allow: &[Destination]) -> std::io::Result<Self> {
        let listener = Arc::new(UnixListener::bind(path)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (listener, stopping, decisions, allow) =
                (Arc::clone(&listener), Arc::clone(&stopping), Arc::clone(&decisions), allow.to_vec());
            std::thread::Builder::new().name("egress-proxy".into()).spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (allow, decisions) = (allow.clone(), Arc::clone(&decisions));
                    let _ = std::thread::Builder::new()
                        .name("egress-connection".into())
                        .spawn(move || serve(client, &allow, &decisions));
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
    if let Ok(mut decisions) = decisions.lock() {
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
    let upstream = (request.host.as_str(), request.port).to_socket_addrs().ok().and_then(|mut addresses| {
        addresses.find_map(|address| TcpStream::connect_timeout(&address, Duration::from_secs(10)).ok())
    });
    let Some(mut upstream) = upstream else {
        respond(&mut client, "502 Bad Gateway", &format!("codexos sandbox: cannot reach {destination}\n"));
        return;
    };
    let _ = client.set_read_timeout(None);
    let forwarded = match &request.origin_form {
        // CONNECT: the tunnel is open; what follows is the client's TLS.
        None => client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Some(first_line) => upstream
            .write_all(first_line.as_bytes())
            .and_then(|()| upstream.write_all(&head[request.head_rest..]))
            .and_then(|()| upstream.write_all(&rest)),
    };
    if forwarded.is_err() {
        return;
    }
    let (Ok(mut client_reader), Ok(mut upstream_reader)) = (client.try_clone(), upstream.try_clone()) else { return };
    let upload = std::thread::spawn(move || {
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
