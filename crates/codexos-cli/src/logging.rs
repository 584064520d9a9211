//! Logs go to standard error (standard output carries results): JSON when
//! not on a terminal, so log collectors get structure; readable otherwise.

use std::io::IsTerminal;

use anyhow::Context;
use codexos_core::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .parse(level)
        .with_context(|| format!("invalid log level '{level}' (try info, debug or codexos_server=debug,info)"))?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let res = if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
    res.map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))
}
