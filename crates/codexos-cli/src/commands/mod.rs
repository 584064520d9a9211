//! One module per command; `run` dispatches.

mod agents;
mod audit;
mod doctor;
mod executions;
mod keys;
mod operator;
pub mod platform;
mod policies;
mod publishers;
mod quotas;
mod sandbox;
pub mod secrets;
mod sso;
mod status;
mod tenants;
mod users;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Up(args) => platform::run(global, platform::Mode::Up, args.listen, args.database_url).await,
        Command::Serve(args) => platform::run(global, platform::Mode::Serve, args.listen, args.database_url).await,
        Command::Worker(args) => platform::run(global, platform::Mode::Worker, None, args.database_url).await,
        Command::Doctor(flag) => doctor::run(global, flag.json).await,
        Command::Status(flag) => status::run(global, flag.json).await,
        Command::Usage(flag) => quotas::usage(global, flag.json).await,
        Command::Key(command) => keys::run(global, command).await,
        Command::Sandbox(crate::cli::SandboxCommand::Exec(args)) => sandbox::exec(global, *args).await,
        Command::Sandbox(crate::cli::SandboxCommand::ToolRunner) => Ok(codexos_engine::tools::runner_main()),
        Command::Agent(command) => agents::run(global, command).await,
        Command::Run(args) => executions::start(global, args).await,
        Command::Exec(command) => executions::run(global, command).await,
        Command::Audit(command) => audit::run(global, command).await,
        Command::Tenant(command) => tenants::run(global, command).await,
        Command::User(command) => users::run(global, command).await,
        Command::Secret(command) => secrets::run(global, command).await,
        Command::Policy(command) => policies::run(global, command).await,
        Command::Market(_) => not_built("market", "the marketplace"),
        Command::Eval(_) => not_built("eval", "the eval harness"),
    }
}

/// Commands of capabilities still to come say so plainly and exit 2.
fn not_built(command: &str, capability: &str) -> anyhow::Result<ExitCode> {
    eprintln!("codexos {command}: not built yet (it arrives with {capability}); nothing was done");
    Ok(ExitCode::from(2))
}
