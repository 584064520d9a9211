//! The `codexos` binary: argument parsing, process wiring and output. The
//! work itself lives in the library crates; this crate connects them.

mod cli;
mod client;
mod commands;
mod data_dir;
mod logging;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The tool runner starts once per tool call inside a sandbox: it needs
    // no async runtime of ours, and starting one would only cost time.
    if let cli::Command::Sandbox(cli::SandboxCommand::ToolRunner) = cli.command {
        return codexos_engine::tools::runner_main();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
