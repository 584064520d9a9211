//! Project automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask test [sqlite|postgres|all]`: the whole test suite, on
//!   SQLite and then on PostgreSQL (started, or installed, if need be).
//! - `cargo xtask postgres`: make sure the local PostgreSQL is installed and running.
//! - `cargo xtask bench sandbox`: start-to-exit time of `true` bare, in our
//!   sandbox and in bubblewrap, in one run (see BENCHMARKS.md).
//! - `cargo xtask bench engine`: the engine's own overhead per step, on
//!   SQLite and with an in-memory journal (criterion; see BENCHMARKS.md).
//! - `cargo xtask bench checkpoint`: checkpoint and rollback time and storage
//!   for a 10,000-file workspace (criterion; see BENCHMARKS.md).
//! - `cargo xtask bench resume`: resume time after a crash, for timelines of
//!   20, 200 and 1,000 steps on SQLite (criterion; see BENCHMARKS.md).
//! - `cargo xtask bench audit`: appending to the audit log on SQLite, and
//!   verifying a million-entry log from SQLite (and from PostgreSQL when
//!   `CODEXOS_BENCH_POSTGRES` or `CODEXOS_TEST_POSTGRES` is set; criterion;
//!   see BENCHMARKS.md).
//! - `cargo xtask bench policy`: one decision of the default policy
//!   (criterion), then the sandbox's start time in the same run, the
//!   anchor it is compared with (see BENCHMARKS.md).
//! - `cargo xtask bench http`: authenticated request throughput of the real
//!   `codexos up` on loopback, against `/health` (a load generator; see
//!   BENCHMARKS.md).
//! - `cargo xtask vm cgroup2 [stable|backports|all]`: the sandbox's limit
//!   and escape tests in a QEMU guest whose only cgroup hierarchy is cgroup2,
//!   on Debian's stable and newer kernels (`scripts/cgroup2-vm.sh`; root).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The PostgreSQL the tests use to create (and drop) one database per test.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const POSTGRES_ENV: &str = "CODEXOS_TEST_POSTGRES";
/// Crates whose tests never touch a database run once, not per backend.
const DATABASE_FREE_CRATES: [&str; 3] = ["codexos-core", "codexos-sandbox", "codexos-checkpoint"];

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["test"] | ["test", "all"] => {
            test_sqlite()?;
            test_postgres()
        }
        ["test", "sqlite"] => test_sqlite(),
        ["test", "postgres"] => test_postgres(),
        ["postgres"] => ensure_postgres().map(|_| ()),
        ["bench", "sandbox"] => bench_sandbox(),
        ["bench", "engine"] => bench_engine(),
        ["bench", "checkpoint"] => bench_checkpoint(),
        ["bench", "resume"] => bench_resume(),
        ["bench", "audit"] => bench_audit(),
        ["bench", "http"] => bench_http(),
        ["bench", "policy"] => bench_policy(),
        ["vm", "cgroup2"] => vm_cgroup2("all"),
        ["vm", "cgroup2", kernel] => vm_cgroup2(kernel),
        _ => bail!(
            "usage: cargo xtask test [sqlite|postgres|all] | cargo xtask postgres | \
             cargo xtask bench sandbox|engine|checkpoint|resume|audit|http|policy | \
             cargo xtask vm cgroup2 [stable|backports|all]"
        ),
    }
}

fn test_sqlite() -> anyhow::Result<()> {
    enable_kernel_audit();
    eprintln!("xtask: tests on SQLite");
    let mut command = cargo_test();
    command.arg("--workspace").env_remove(POSTGRES_ENV);
    run_command(&mut command)
}

fn test_postgres() -> anyhow::Result<()> {
    let url = ensure_postgres()?;
    enable_kernel_audit();
    eprintln!("xtask: tests on PostgreSQL ({url})");
    let mut command = cargo_test();
    command.arg("--workspace").env(POSTGRES_ENV, &url);
    for krate in DATABASE_FREE_CRATES {
        command.args(["--exclude", krate]);
    }
    run_command(&mut command)
}

/// Landlock's denials are reported through the kernel's audit log, which
/// this kind of machine boots with disabled (and no auditd). As root, turn
/// it on, as an operator would, so that the reporting is tested; elsewhere
/// the tests check that the probe says why nothing is reported.
fn enable_kernel_audit() {
    match codexos_sandbox::enable_kernel_audit() {
        Ok(true) => eprintln!("xtask: enabled the kernel audit log (Landlock denials are reported through it)"),
        Ok(false) => {}
        Err(err) => eprintln!("xtask: the kernel audit log stays as it is ({err}); Landlock denials go unreported"),
    }
}

fn cargo_test() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["test", "--locked"]);
    command
}

/// Returns the admin URL of a running PostgreSQL, starting (or, when run as
/// root on Debian, installing) the local one if it is not answering.
fn ensure_postgres() -> anyhow::Result<String> {
    let url = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
    if url != DEFAULT_POSTGRES {
        // Somebody else's server: use it as given.
        return Ok(url);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    if answers(addr) {
        return Ok(url);
    }
    if !std::path::Path::new("/etc/postgresql").is_dir() {
        eprintln!("xtask: PostgreSQL is not installed; installing it with apt-get");
        run_command(Command::new("apt-get").arg("update").arg("-q"))?;
        run_command(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("cannot install PostgreSQL (needs root and Debian's package registry)")?;
        trust_local_connections()?;
    }
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")?
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect();
    let version = versions.iter().max().context("no PostgreSQL cluster under /etc/postgresql")?;
    eprintln!("xtask: starting PostgreSQL {version}");
    run_command(Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", version, "main", "start"]))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(addr) {
        if Instant::now() > deadline {
            bail!("PostgreSQL did not answer on {addr} within 30s of starting");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(url)
}

/// A fresh Debian install asks for passwords over TCP; the tests connect as
/// `postgres` over loopback with trust, as on our machines.
fn trust_local_connections() -> anyhow::Result<()> {
    for entry in std::fs::read_dir("/etc/postgresql")? {
        let hba = entry?.path().join("main/pg_hba.conf");
        let text = std::fs::read_to_string(&hba).with_context(|| format!("cannot read {}", hba.display()))?;
        let rule = "host all all 127.0.0.1/32 trust\n";
        if !text.starts_with(rule) {
            std::fs::write(&hba, format!("{rule}{text}")).with_context(|| format!("cannot write {}", hba.display()))?;
        }
    }
    Ok(())
}

/// Times `true` from spawn to exit, three ways, interleaved so that the
/// machine's state affects each alike.
fn bench_sandbox() -> anyhow::Result<()> {
    const ROUNDS: usize = 300;
    let workspace = std::env::temp_dir().join(format!("codexos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workspace)?;
    let policy = codexos_sandbox::SandboxPolicy::for_workspace(&workspace);
    let command = codexos_sandbox::SandboxCommand { argv: vec!["true".into()], ..Default::default() };
    let bwrap = which("bwrap");
    if bwrap.is_none() {
        eprintln!("xtask: bubblewrap is not installed (apt-get install bubblewrap); measuring without it");
    }
    let mut bare = Vec::with_capacity(ROUNDS);
    let mut ours = Vec::with_capacity(ROUNDS);
    let mut theirs = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS + 10 {
        let started = Instant::now();
        let status = Command::new("true").status()?;
        let bare_time = started.elapsed();
        anyhow::ensure!(status.success(), "bare true failed");

        let started = Instant::now();
        let outcome = codexos_sandbox::run(&policy, &command)?;
        let ours_time = started.elapsed();
        anyhow::ensure!(outcome.exit_code == Some(0), "sandboxed true failed: {outcome:?}");

        let bwrap_time = match &bwrap {
            Some(bwrap) => {
                let started = Instant::now();
                let status = Command::new(bwrap)
                    .args([
                        "--ro-bind",
                        "/",
                        "/",
                        "--dev",
                        "/dev",
                        "--proc",
                        "/proc",
                        "--unshare-all",
                        "--die-with-parent",
                        "true",
                    ])
                    .status()?;
                anyhow::ensure!(status.success(), "bwrap true failed");
                Some(started.elapsed())
            }
            None => None,
        };
        // The first rounds warm caches and are not counted.
        if round >= 10 {
            bare.push(bare_time);
            ours.push(ours_time);
            theirs.extend(bwrap_time);
        }
    }
    std::fs::remove_dir_all(&workspace)?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("start-to-exit of `true`, {ROUNDS} rounds each, interleaved; {cpus} CPUs, kernel {}", kernel.trim());
    let host = codexos_sandbox::host_capabilities();
    println!(
        "cgroups {:?}, favordynmods {}; Landlock denials reported (a marker per run): {}",
        host.cgroups.version,
        if host.cgroups.favor_dynmods { "on" } else { "off" },
        if host.landlock_audit.available { "yes" } else { "no" }
    );
    println!("{:<34} {:>9} {:>9} {:>9} {:>9}", "", "median", "mean", "p95", "vs bare");
    let bare_median = percentile(&mut bare, 50);
    for (name, samples) in [
        ("bare spawn", &mut bare),
        ("codexos sandbox (full policy)", &mut ours),
        ("bubblewrap (--unshare-all)", &mut theirs),
    ] {
        if samples.is_empty() {
            continue;
        }
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let median = percentile(samples, 50);
        println!(
            "{name:<34} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>8.1}x",
            ms(median),
            ms(mean),
            ms(percentile(samples, 95)),
            ms(median) / ms(bare_median)
        );
    }
    if !theirs.is_empty() {
        println!(
            "codexos / bubblewrap (median): {:.2}",
            ms(percentile(&mut ours, 50)) / ms(percentile(&mut theirs, 50))
        );
    }
    Ok(())
}

/// The criterion benchmark of one engine step (model and tool instant),
/// with the store's journal on SQLite and with an in-memory one.
fn bench_engine() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-worker", "--bench", "engine_step"]);
    run_command(&mut command)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let report = target.join("criterion/engine_step/report/index.html");
    println!("criterion's report: {}", report.canonicalize().unwrap_or(report).display());
    Ok(())
}

/// The criterion benchmark of checkpoints: snapshot and rollback of a one-file
/// change in a 10,000-file workspace, the storage it adds, the first snapshot.
fn bench_checkpoint() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-checkpoint", "--bench", "checkpoint"]);
    run_command(&mut command)
}

/// The criterion benchmark of a policy decision, then the sandbox's start
/// time: a decision must stay well under it, so that policy never
/// dominates a step.
fn bench_policy() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-policy", "--bench", "decide"]);
    run_command(&mut command)?;
    bench_sandbox()
}

/// The criterion benchmark of resuming after a crash: loading a timeline
/// from SQLite and replaying it, for three timeline lengths.
fn bench_resume() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-worker", "--bench", "resume"]);
    run_command(&mut command)
}

/// The criterion benchmark of the audit log in the database: appends on
/// SQLite, and the verification of a million entries read from SQLite (and
/// PostgreSQL, when an admin URL is in the environment).
fn bench_audit() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-store", "--bench", "audit"]);
    run_command(&mut command)
}

/// The load generator against the real server on loopback: requests per
/// second and latency of `/health`, and of `/v1/me` with an API key and
/// with a login session.
fn bench_http() -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(["bench", "--locked", "-p", "codexos-cli", "--bench", "http_load"]);
    run_command(&mut command)
}

fn percentile(samples: &mut [Duration], pct: usize) -> Duration {
    samples.sort_unstable();
    samples.get((samples.len().saturating_sub(1)) * pct / 100).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The cgroup v2 path never runs on our (v1) machines: the script boots a
/// guest where it does, and fails when a test fails there.
fn vm_cgroup2(kernel: &str) -> anyhow::Result<()> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cgroup2-vm.sh");
    run_command(Command::new("bash").arg(script).arg(kernel))
}

fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
