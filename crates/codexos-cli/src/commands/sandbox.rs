//! `codexos sandbox exec`: one command in the sandbox, from the terminal.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use codexos_sandbox::{Destination, Limits, NetworkPolicy, SandboxCommand, SandboxPolicy};

use crate::cli::{GlobalArgs, SandboxExecArgs};

/// The exit status when the sandbox, not the command, decided the outcome.
const VIOLATION_EXIT: u8 = 125;

pub async fn exec(global: &GlobalArgs, args: SandboxExecArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::commands::platform::load_settings(global, None, None)?;
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let workspace = std::path::absolute(&workspace).context("cannot resolve the workspace path")?;
    // A home directory as the workspace would hand the command ~/.ssh and
    // ~/.bashrc read-write: code planted there runs outside the sandbox.
    if let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty())
        && std::fs::canonicalize(&workspace).ok() == std::fs::canonicalize(&home).ok()
    {
        bail!("refusing to use your home directory {} as the workspace; pass --workspace DIR", workspace.display());
    }
    let network = parse_network(&args.net)?;
    let limits = Limits {
        cpu_seconds: Some(args.cpu_seconds),
        memory_bytes: Some(parse_size(&args.memory).context("--memory")?),
        pids: Some(args.pids),
        open_files: Some(args.open_files),
        file_size_bytes: Some(parse_size(&args.file_size).context("--file-size")?),
        timeout: humantime::parse_duration(&args.timeout)
            .map_err(|err| anyhow::anyhow!("--timeout: '{}' is not a duration like 30s or 5m: {err}", args.timeout))?,
    };
    let policy = SandboxPolicy {
        read_only_paths: args.read_only.clone(),
        read_write_paths: args.read_write.clone(),
        // The platform's own data (database, owner key) is never visible.
        hidden_paths: vec![std::path::absolute(&settings.data_dir).unwrap_or(settings.data_dir.clone())],
        network,
        limits,
        allow_missing_protections: args.allow_weaker_sandbox,
        ..SandboxPolicy::for_workspace(workspace)
    };
    let mut env = Vec::new();
    for pair in &args.env {
        let Some((name, value)) = pair.split_once('=') else { bail!("--env '{pair}' must be NAME=VALUE") };
        env.push((name.to_owned(), value.to_owned()));
    }
    let mut stdin = Vec::new();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin().read_to_end(&mut stdin).context("cannot read standard input")?;
    }
    let command = SandboxCommand { argv: args.command.clone(), env, cwd: None, stdin };
    // The sandbox dies with the thread that runs it; a dedicated blocking
    // thread lives exactly as long as the run.
    let outcome = tokio::task::spawn_blocking(move || codexos_sandbox::run(&policy, &command))
        .await
        .context("the sandbox thread failed")??;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        std::io::stdout().write_all(&outcome.stdout.bytes)?;
        std::io::stderr().write_all(&outcome.stderr.bytes)?;
    }
    for absent in &outcome.absent_protections {
        eprintln!("codexos sandbox: warning: ran without {absent}");
    }
    for decision in &outcome.network {
        let verdict = if decision.allowed { "allowed" } else { "blocked" };
        eprintln!("codexos sandbox: network: {verdict} {}", decision.destination);
    }
    for violation in &outcome.violations {
        eprintln!("codexos sandbox: {}: {}", violation.kind, violation.detail);
    }
    // A limit that ended the command decides the exit status; a denied call
    // or connection, or truncated output, is reported, and the command's
    // own status says whether it coped.
    use codexos_sandbox::ViolationKind::{CpuLimit, DenialLimit, FileSizeLimit, MemoryLimit, PidsLimit, Timeout};
    let decided_by_sandbox = outcome.violations.iter().any(|violation| {
        matches!(violation.kind, Timeout | CpuLimit | MemoryLimit | PidsLimit | FileSizeLimit | DenialLimit)
    });
    if decided_by_sandbox {
        return Ok(ExitCode::from(VIOLATION_EXIT));
    }
    Ok(ExitCode::from(u8::try_from(outcome.shell_status()).unwrap_or(1)))
}

fn parse_network(text: &str) -> anyhow::Result<NetworkPolicy> {
    if text == "none" {
        return Ok(NetworkPolicy::None);
    }
    let Some(list) = text.strip_prefix("allow=") else {
        bail!("--net '{text}' must be none or allow=HOST:PORT,...");
    };
    let destinations = list.split(',').map(Destination::parse).collect::<Result<Vec<_>, _>>()?;
    Ok(NetworkPolicy::Allow(destinations))
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    Ok(codexos_core::parse_size(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse() {
        assert_eq!(parse_network("none").unwrap(), NetworkPolicy::None);
        assert!(
            matches!(parse_network("allow=pypi.org:443,github.com:443").unwrap(), NetworkPolicy::Allow(list) if list.len() == 2)
        );
        assert!(parse_network("everything").is_err());
        assert!(parse_network("allow=pypi.org").is_err());
    }
}
