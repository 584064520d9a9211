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

/// Commands that talk to a server and print: the ones a closed pipe may end.
fn prints_only(command: &cli::Command) -> bool {
    use cli::Command;
    matches!(
        command,
        Command::Doctor(_)
            | Command::Status(_)
            | Command::Key(_)
            | Command::Agent(_)
            | Command::Exec(_)
            | Command::Policy(_)
    )
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The tool runner starts once per tool call inside a sandbox: it needs
    // no async runtime of ours, and starting one would only cost time.
    if let cli::Command::Sandbox(cli::SandboxCommand::ToolRunner) = cli.command {
        return codexos_engine::tools::runner_main();
    }
    if prints_only(&cli.command) {
        // `codexos exec show ID | head`: the reader went away, so stop
        // quietly, as command-line tools do, instead of failing to print.
        // Not for the long-running processes and the sandbox, which must
        // see a closed pipe as an error to handle.
        // SAFETY: restoring a signal's default action, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
