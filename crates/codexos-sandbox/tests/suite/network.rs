//! An allow-listed network: only the listed destinations, only through the
//! egress proxy, every attempt recorded.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use codexos_sandbox::{Destination, NetworkDecision, NetworkPolicy, ViolationKind};

use super::{policy, python, stderr, stdout, workspace};

/// A one-page HTTP server on the host's loopback, answering `body` to every request.
fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ =
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[test]
fn allowed_destinations_are_reachable_through_the_proxy_and_others_are_refused() {
    let allowed = http_server("hello through the proxy");
    let refused = http_server("must not be seen");
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.network = NetworkPolicy::Allow(vec![Destination::parse(&format!("127.0.0.1:{allowed}")).unwrap()]);
    let code = format!(
        "import urllib.request, urllib.error, socket\n\
         print(urllib.request.urlopen('http://127.0.0.1:{allowed}/page', timeout=10).read().decode())\n\
         try:\n\
         \x20   urllib.request.urlopen('http://127.0.0.1:{refused}/', timeout=10)\n\
         except urllib.error.HTTPError as e:\n\
         \x20   print('refused', e.code)\n\
         try:\n\
         \x20   socket.create_connection(('127.0.0.1', {allowed}), timeout=2)\n\
         \x20   print('BYPASSED')\n\
         except OSError:\n\
         \x20   print('no direct route')"
    );
    let outcome = python(&policy, &code);
    assert_eq!(stdout(&outcome), "hello through the proxy\nrefused 403\nno direct route\n", "{}", stderr(&outcome));
    assert_eq!(
        outcome.network,
        vec![
            NetworkDecision { destination: format!("127.0.0.1:{allowed}"), allowed: true },
            NetworkDecision { destination: format!("127.0.0.1:{refused}"), allowed: false },
        ]
    );
    assert!(outcome.has_violation(ViolationKind::NetworkBlocked));
}

#[test]
fn tls_tunnels_are_only_opened_to_allowed_destinations() {
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.network = NetworkPolicy::Allow(vec![Destination::parse("pypi.org:443").unwrap()]);
    // CONNECT to a destination not on the list: 403, and nothing was dialled.
    let outcome = python(
        &policy,
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', 3128), timeout=5)\n\
         s.sendall(b'CONNECT example.com:443 HTTP/1.1\\r\\nHost: example.com:443\\r\\n\\r\\n')\n\
         print(s.recv(100).split(b'\\r\\n')[0].decode())",
    );
    assert_eq!(stdout(&outcome), "HTTP/1.1 403 Forbidden\n", "{}", stderr(&outcome));
    assert_eq!(outcome.network, vec![NetworkDecision { destination: "example.com:443".into(), allowed: false }]);
}

#[test]
fn a_tunnel_to_an_allowed_destination_carries_traffic() {
    let port = http_server("tunnelled");
    let ws = workspace();
    let mut policy = policy(ws.path());
    policy.network = NetworkPolicy::Allow(vec![Destination::parse(&format!("127.0.0.1:{port}")).unwrap()]);
    let outcome = python(
        &policy,
        &format!(
            "import socket\n\
             s = socket.create_connection(('127.0.0.1', 3128), timeout=5)\n\
             s.sendall(b'CONNECT 127.0.0.1:{port} HTTP/1.1\\r\\n\\r\\n')\n\
             print(s.recv(100).split(b'\\r\\n')[0].decode())\n\
             s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
             data = b''\n\
             while not data.endswith(b'tunnelled'):\n\
             \x20   chunk = s.recv(1000)\n\
             \x20   if not chunk: break\n\
             \x20   data += chunk\n\
             print(data.split(b'\\r\\n\\r\\n')[1].decode())"
        ),
    );
    assert_eq!(stdout(&outcome), "HTTP/1.1 200 Connection established\ntunnelled\n", "{}", stderr(&outcome));
}
