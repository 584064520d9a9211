//! Authenticated request throughput of the API (issue: "a benchmark of
//! authenticated request throughput"): a load generator against the real
//! `codexos up` on 127.0.0.1, with its own data directory and embedded
//! SQLite (PostgreSQL when `CODEXOS_TEST_POSTGRES` is set, as in the tests).
//!
//! `CLIENTS` client tasks (tokio, one keep-alive reqwest client, so one
//! connection each) send requests back to back, each waiting for its answer
//! before sending the next, for `WARM_UP` untimed and then `MEASURE` timed,
//! against, one after another:
//!
//! - `GET /health`: no credentials; the baseline of the server's own
//!   routing, middleware and JSON.
//! - `GET /v1/me` with the owner's API key as a bearer token: the key's
//!   SHA-256 and one indexed lookup, the tenant's rate limiter, and the
//!   handler's read of the tenant.
//! - `GET /v1/me` with a login session's cookie (a member created with a
//!   password through `POST /v1/users`, logged in through `POST /v1/login`):
//!   the session's lookup instead of the key's.
//!
//! The tenant's rate limit (`quotas.requests_per_second` and `burst`, 50 and
//! 100 by default) is raised through the environment for these passes, so
//! that they measure the server and not the limiter. A last, short pass runs
//! a second server with the default limit and counts the 429s, each of
//! which must carry `Retry-After`.
//!
//! Reported per pass: requests per second (answers received in the timed
//! window over its length), latency percentiles (from sending to the whole
//! body read), errors (transport errors and any status but 200, or but 429
//! in the limited pass), and the server's CPU time per request (its process'
//! user and system time over the window, from /proc, over the answers).
//! The load generator runs on the same machine and competes with the server
//! for its CPUs.
//!
//! `cargo xtask bench http`; the figures are in BENCHMARKS.md. Overrides:
//! `CODEXOS_BENCH_HTTP_CLIENTS`, `CODEXOS_BENCH_HTTP_SECONDS`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use codexos_test_support::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CLIENTS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
/// The limited pass: long enough for the bucket's burst to run out.
const LIMITED: Duration = Duration::from_secs(3);
const EMAIL: &str = "bench@codexos.test";
const PASSWORD: &str = "a bench password, long enough";

#[derive(Clone)]
enum Credential {
    None,
    Bearer(String),
    Cookie(String),
}

/// What the clients saw in the timed window.
#[derive(Default)]
struct Tally {
    /// Latencies of the answers received, in microseconds.
    latencies: Vec<u32>,
    ok: u64,
    limited: u64,
    limited_without_retry_after: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.limited += other.limited;
        self.limited_without_retry_after += other.limited_without_retry_after;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn percentile_ms(&self, pct: usize) -> f64 {
        let index = self.latencies.len().saturating_sub(1) * pct / 100;
        f64::from(self.latencies.get(index).copied().unwrap_or(0)) / 1000.0
    }
}

/// The server process' user and system CPU time so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

fn client() -> reqwest::Client {
    codexos_engine::http_client::builder()
        .unwrap()
        // Loopback only, whatever proxy the environment names.
        .no_proxy()
        .pool_max_idle_per_host(CLIENTS * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One client task: requests back to back until `stop`, tallied from `start`.
async fn run_client(
    http: reqwest::Client,
    url: String,
    credential: Credential,
    start: Instant,
    stop: Instant,
    expect_limits: bool,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let sent = Instant::now();
        if sent >= stop {
            return tally;
        }
        let mut request = http.get(&url);
        match &credential {
            Credential::None => {}
            Credential::Bearer(key) => request = request.bearer_auth(key),
            Credential::Cookie(cookie) => request = request.header("cookie", cookie),
        }
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response.headers().contains_key("retry-after");
                match response.bytes().await {
                    Ok(_) => Ok((status, retry_after)),
                    Err(err) => Err(err.to_string()),
                }
            }
            Err(err) => Err(err.to_string()),
        };
        let received = Instant::now();
        if sent < start {
            continue;
        }
        match outcome {
            Ok((StatusCode::OK, _)) => tally.ok += 1,
            Ok((StatusCode::TOO_MANY_REQUESTS, retry_after)) if expect_limits => {
                tally.limited += 1;
                tally.limited_without_retry_after += u64::from(!retry_after);
            }
            Ok((status, _)) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("status {status}"));
            }
            Err(err) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(err);
            }
        }
        tally.latencies.push(u32::try_from((received - sent).as_micros()).unwrap_or(u32::MAX));
    }
}

/// Runs `clients` tasks against `path` for `warm_up` and then `measure`,
/// and prints what they saw.
async fn pass(
    server: &TestServer,
    name: &str,
    path: &str,
    credential: Credential,
    (clients, warm_up, measure): (usize, Duration, Duration),
    expect_limits: bool,
) -> Tally {
    let http = client();
    let url = format!("{}{path}", server.url);
    let start = Instant::now() + warm_up;
    let stop = start + measure;
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(run_client(http.clone(), url.clone(), credential.clone(), start, stop, expect_limits)))
        .collect();
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = cpu_time(server.pid());
    tokio::time::sleep_until(stop.into()).await;
    let cpu_used = cpu_time(server.pid()) - cpu_before;
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.unwrap());
    }
    tally.latencies.sort_unstable();
    let answered = tally.latencies.len() as f64;
    println!(
        "http/{name:<28} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {:>3}  \
         server CPU {:>5.1} µs/req",
        answered / measure.as_secs_f64(),
        tally.percentile_ms(50),
        tally.percentile_ms(99),
        tally.percentile_ms(100),
        tally.errors,
        cpu_used.as_secs_f64() * 1e6 / answered.max(1.0),
    );
    if let Some(error) = &tally.first_error {
        println!("http/{name:<28} first error: {error}");
    }
    tally
}

/// A member with a password, logged in: its session cookie (`name=value`).
async fn session_cookie(server: &TestServer) -> String {
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/v1/users",
            Some(&server.owner_key),
            Some(json!({ "email": EMAIL, "role": "viewer", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = server
        .request(reqwest::Method::POST, "/v1/login")
        .json(&json!({ "tenant": "default", "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("codexos_session="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // The cookie is `Secure`; a browser would not send it over plain HTTP,
    // the server does not mind.
    let me: Value = server
        .request(reqwest::Method::GET, "/v1/me")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(me["session_id"].is_string(), "{me}");
    cookie
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| value.parse().unwrap_or_else(|_| panic!("{name}: not a number: {value}")))
}

async fn bench(bin: &Path) {
    let clients = env_number("CODEXOS_BENCH_HTTP_CLIENTS").map_or(CLIENTS, |n| usize::try_from(n).unwrap());
    let measure = env_number("CODEXOS_BENCH_HTTP_SECONDS").map_or(MEASURE, Duration::from_secs);
    let shape = (clients, WARM_UP, measure);

    // The rate limit raised far above what the server can serve.
    let unlimited = [("CODEXOS_QUOTAS__REQUESTS_PER_SECOND", "1000000"), ("CODEXOS_QUOTAS__BURST", "1000000")];
    let server = TestServer::start_with_env(bin, &unlimited).await;
    assert!(server.url.starts_with("http://127.0.0.1:"), "not on loopback: {}", server.url);
    let cookie = session_cookie(&server).await;
    println!(
        "http: codexos up on {} ({}), {clients} clients with keep-alive, {} s warm-up, {} s timed per pass",
        server.url,
        if server.is_postgres() { "PostgreSQL" } else { "SQLite" },
        WARM_UP.as_secs(),
        measure.as_secs()
    );
    let health = pass(&server, "GET /health", "/health", Credential::None, shape, false).await;
    let key =
        pass(&server, "GET /v1/me (API key)", "/v1/me", Credential::Bearer(server.owner_key.clone()), shape, false)
            .await;
    let session = pass(&server, "GET /v1/me (session)", "/v1/me", Credential::Cookie(cookie), shape, false).await;
    let rate = |tally: &Tally| tally.latencies.len() as f64 / measure.as_secs_f64();
    println!(
        "http: throughput against /health: API key {:.2}, session {:.2}; p50 latency: {:.2} and {:.2}",
        rate(&key) / rate(&health),
        rate(&session) / rate(&health),
        key.percentile_ms(50) / health.percentile_ms(50).max(0.001),
        session.percentile_ms(50) / health.percentile_ms(50).max(0.001),
    );
    drop(server);

    // The default limit: 429s with Retry-After once the burst is spent.
    let server = TestServer::start(bin).await;
    assert!(server.url.starts_with("http://127.0.0.1:"), "not on loopback: {}", server.url);
    let limited = pass(
        &server,
        "GET /v1/me (default limit)",
        "/v1/me",
        Credential::Bearer(server.owner_key.clone()),
        (clients, Duration::ZERO, LIMITED),
        true,
    )
    .await;
    println!(
        "http: default limit: {} answered 200 ({:.0}/s), {} answered 429 ({} without Retry-After), {} errors",
        limited.ok,
        limited.ok as f64 / LIMITED.as_secs_f64(),
        limited.limited,
        limited.limited_without_retry_after,
        limited.errors,
    );
    assert!(limited.limited > 0, "the default rate limit never answered 429");
    assert_eq!(limited.limited_without_retry_after, 0, "a 429 came without Retry-After");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it, and a 40-second load run is no test.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("http_load: skipped (run it with cargo bench)");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(bench(Path::new(env!("CARGO_BIN_EXE_codexos"))));
}
