//! `codexos doctor`: what this host offers the sandbox, the database, and
//! the settings in effect, found without changing anything.

use std::process::ExitCode;

use codexos_sandbox::HostCapabilities;
use codexos_store::{DatabaseReport, Store};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::commands::platform::load_settings;

#[derive(Serialize)]
struct Report<'a> {
    version: &'static str,
    /// `ok` when the platform can start with every protection; `problems` otherwise.
    status: &'static str,
    problems: Vec<String>,
    sandbox: &'a HostCapabilities,
    database: &'a DatabaseReport,
    config: &'a codexos_core::Settings,
}

pub async fn run(global: &GlobalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let settings = load_settings(global, None, None)?;
    let sandbox = tokio::task::spawn_blocking(|| codexos_sandbox::host_capabilities().clone()).await?;
    let database = Store::inspect(settings.database_url().expose_secret()).await.map_err(anyhow::Error::msg)?;

    let mut problems: Vec<String> =
        sandbox.missing.iter().map(|missing| format!("sandbox protection unavailable: {missing}")).collect();
    if let Some(error) = &database.error {
        problems.push(format!("database unreachable: {error}"));
    } else if database.schema_version.is_some_and(|version| version > database.latest_version) {
        problems.push("the database was migrated by a newer CodexOS than this one".to_owned());
    }
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        status: if problems.is_empty() { "ok" } else { "problems" },
        problems,
        sandbox: &sandbox,
        database: &database,
        config: &settings,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_text(report: &Report<'_>) {
    let sandbox = report.sandbox;
    let mark = |available: bool| if available { "yes" } else { "NO " };
    println!("CodexOS {} doctor", report.version);
    println!();
    println!("Sandbox (kernel {})", sandbox.kernel);
    let namespaces = &sandbox.namespaces;
    for (name, capability) in [
        ("user", &namespaces.user),
        ("pid", &namespaces.pid),
        ("mount", &namespaces.mount),
        ("ipc", &namespaces.ipc),
        ("uts", &namespaces.uts),
        ("net", &namespaces.net),
    ] {
        println!("  {} {name} namespace{}", mark(capability.available), reason(capability.reason.as_deref()));
    }
    let landlock = &sandbox.landlock;
    let abi = landlock.abi.map(|abi| format!(" (ABI {abi})")).unwrap_or_default();
    println!("  {} Landlock{abi}{}", mark(landlock.available), reason(landlock.reason.as_deref()));
    let audit = &sandbox.landlock_audit;
    println!("  {} Landlock denials reported{}", mark(audit.available), reason(audit.reason.as_deref()));
    println!("  {} seccomp filters{}", mark(sandbox.seccomp.available), reason(sandbox.seccomp.reason.as_deref()));
    println!(
        "  {} no_new_privs{}",
        mark(sandbox.no_new_privs.available),
        reason(sandbox.no_new_privs.reason.as_deref())
    );
    let cgroups = &sandbox.cgroups;
    let mut controllers: Vec<&str> = cgroups.v1_controllers.iter().map(|controller| controller.name.as_str()).collect();
    controllers.extend(cgroups.v2_controllers.iter().map(String::as_str));
    println!(
        "  {} cgroups {:?}: {}{}",
        mark(cgroups.writable),
        cgroups.version,
        if controllers.is_empty() { "no controllers".to_owned() } else { controllers.join(", ") },
        reason(cgroups.reason.as_deref())
    );
    if cgroups.writable && !cgroups.favor_dynmods {
        println!(
            "    hint: on a busy host, a sandbox joining its cgroup can wait milliseconds for an RCU \
             grace period; mounting cgroup2 with favordynmods removes the wait (docs/sandbox.md)"
        );
    }
    println!();
    let database = report.database;
    println!("Database {} at {}", database.backend, database.url);
    if !database.exists {
        println!("  not created yet (the first `codexos up` creates it)");
    } else if database.reachable {
        println!(
            "  reachable; schema version {} (this build: {})",
            database.schema_version.map_or_else(|| "none".to_owned(), |version| version.to_string()),
            database.latest_version
        );
    } else {
        println!("  unreachable: {}", database.error.as_deref().unwrap_or("unknown error"));
    }
    println!();
    let config = report.config;
    println!("Config");
    println!("  data_dir  {}", config.data_dir.display());
    println!("  listen    {}", config.listen);
    println!("  log       {} ({:?})", config.log.level, config.log.format);
    println!(
        "  server    shutdown grace {:?}, max body {} bytes",
        config.server.shutdown_grace, config.server.max_body_bytes
    );
    println!(
        "  worker    heartbeat every {:?}, lease timeout {:?}",
        config.worker.heartbeat_interval, config.worker.lease_timeout
    );
    println!();
    if report.problems.is_empty() {
        println!("Everything CodexOS needs is here.");
    } else {
        for problem in &report.problems {
            println!("problem: {problem}");
        }
    }
}

fn reason(reason: Option<&str>) -> String {
    reason.map(|reason| format!(" ({reason})")).unwrap_or_default()
}
