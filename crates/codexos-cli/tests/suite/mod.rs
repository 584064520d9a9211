mod bad_input;
mod cli;
mod durable;
mod engine;
mod http;
mod lifecycle;
mod sandbox;

use std::path::Path;

use codexos_test_support::TestServer;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_codexos"))
}

pub async fn server() -> TestServer {
    TestServer::start(bin()).await
}
