//! Helpers shared by the integration tests: a fresh database per test
//! (SQLite in a temporary directory, or a PostgreSQL database created for the
//! test and dropped after it) and the real `codexos` binary started on port 0.
//!
//! The backend comes from the environment: with `CODEXOS_TEST_POSTGRES` set
//! to an admin URL (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) every
//! test runs on PostgreSQL; without it, on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fake_model;
pub mod mcp_server;
pub mod oidc_provider;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use tempfile::TempDir;

pub const POSTGRES_ENV: &str = "CODEXOS_TEST_POSTGRES";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    postgres: Option<PostgresDatabase>,
    _dir: Option<TempDir>,
}

#[derive(Debug)]
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A new, empty database on the backend the environment selects.
    pub async fn create() -> Self {
        match std::env::var(POSTGRES_ENV).ok().filter(|url| !url.is_empty()) {
            Some(admin_url) => {
                let name = format!("codexos_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|err| panic!("{POSTGRES_ENV}={admin_url}: cannot connect: {err}"));
                sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.unwrap();
                admin.close().await.unwrap();
                let url = database_url(&admin_url, &name);
                Self { url, postgres: Some(PostgresDatabase { admin_url, name }), _dir: None }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self { url, postgres: None, _dir: Some(dir) }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

/// The admin URL with its database name replaced.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(base, query)| (base, Some(query)));
    let after_scheme = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[after_scheme..].find('/').map_or(base.len(), |at| after_scheme + at);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(postgres) = self.postgres.take() else { return };
        // Drop may run inside a runtime, which cannot be blocked on; a
        // thread with its own runtime can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&postgres.admin_url).await?;
                let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", postgres.name);
                sqlx::query(&statement).execute(&mut admin).await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("warning: could not drop test database: {err}");
        }
    }
}

/// The environment variable test servers accept as the key of models on
/// 127.0.0.1 (see `TestServer`).
pub const TEST_MODEL_KEY_VAR: &str = "CODEXOS_TEST_MODEL_KEY";

/// The real `codexos up` (or `serve`) on port 0 with its own data directory;
/// on PostgreSQL with its own database, on SQLite with the embedded one.
#[derive(Debug)]
pub struct TestServer {
    pub bin: PathBuf,
    pub url: String,
    pub owner_key: String,
    command: &'static str,
    child: Child,
    data_dir: PathBuf,
    logs: PathBuf,
    http: reqwest::Client,
    database: Option<TestDatabase>,
    env: Vec<(String, String)>,
    _dir: TempDir,
}

impl TestServer {
    /// Starts `codexos up` on a fresh data directory (and, on PostgreSQL, database).
    pub async fn start(bin: &Path) -> Self {
        Self::start_with_env(bin, &[]).await
    }

    /// Like `start`, with extra environment variables for the server (and
    /// its worker), such as a model's API key.
    pub async fn start_with_env(bin: &Path, env: &[(&str, &str)]) -> Self {
        let database = match std::env::var(POSTGRES_ENV) {
            Ok(url) if !url.is_empty() => Some(TestDatabase::create().await),
            _ => None,
        };
        let env = env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        Self::start_on(bin, "up", tempfile::tempdir().unwrap(), database, env).await
    }

    /// Starts `codexos serve` (the API alone) on `database`.
    pub async fn serve(bin: &Path, database: TestDatabase) -> Self {
        Self::start_on(bin, "serve", tempfile::tempdir().unwrap(), Some(database), Vec::new()).await
    }

    async fn start_on(
        bin: &Path,
        subcommand: &'static str,
        dir: TempDir,
        database: Option<TestDatabase>,
        env: Vec<(String, String)>,
    ) -> Self {
        let data_dir = dir.path().join("data");
        let logs = dir.path().join(format!("run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&logs).unwrap();
        let mut command = Command::new(bin);
        command
            .args([subcommand, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(File::create(logs.join("stdout")).unwrap())
            .stderr(File::create(logs.join("stderr")).unwrap());
        clear_client_env(&mut command);
        // Tests keep their workspaces in the temporary directory, and their
        // model servers (fake ones) on loopback with a test key variable.
        let roots = format!("[\"{}\"]", std::env::temp_dir().display());
        command.env("CODEXOS_WORKER__WORKSPACE_ROOTS", roots);
        command
            .env("CODEXOS_MODEL_ENDPOINTS", format!("[{{host = \"127.0.0.1\", key_env = \"{TEST_MODEL_KEY_VAR}\"}}]"));
        command.envs(env.iter().map(|(name, value)| (name, value)));
        if let Some(database) = &database {
            command.args(["--database-url", database.url()]);
        }
        let child = command.spawn().unwrap();
        let mut server = Self {
            bin: bin.to_owned(),
            url: String::new(),
            owner_key: String::new(),
            command: subcommand,
            child,
            data_dir,
            logs,
            http: loopback_client(),
            database,
            env,
            _dir: dir,
        };
        server.url = server.wait_for_file("url").await;
        server.owner_key = std::fs::read_to_string(server.data_dir.join("owner.key")).unwrap().trim().to_owned();
        server
    }

    /// Stops this server with SIGTERM and starts a new one on the same data
    /// directory and database.
    pub async fn restart(mut self) -> Self {
        let status = self.terminate().await;
        assert!(status.success(), "server exited with {status}: {}", self.stderr());
        let bin = self.bin.clone();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let database = self.database.take();
        let env = std::mem::take(&mut self.env);
        let command = self.command;
        drop(self);
        Self::start_on(&bin, command, dir, database, env).await
    }

    /// Stops this server with SIGTERM, runs `between` while it is stopped
    /// (an offline command on its data directory and database), then starts
    /// a new one on the same data directory and database.
    pub async fn restart_after(mut self, between: impl FnOnce(&TestServer)) -> Self {
        let status = self.terminate().await;
        assert!(status.success(), "server exited with {status}: {}", self.stderr());
        between(&self);
        let bin = self.bin.clone();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let database = self.database.take();
        let env = std::mem::take(&mut self.env);
        let command = self.command;
        drop(self);
        Self::start_on(&bin, command, dir, database, env).await
    }

    /// Kills this server with SIGKILL, as a crash would, and starts a new
    /// one on the same data directory and database.
    pub async fn crash_and_restart(mut self) -> Self {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        // A crashed server leaves its URL behind; the new one writes its own.
        let _ = std::fs::remove_file(self.data_dir.join("url"));
        let bin = self.bin.clone();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let database = self.database.take();
        let env = std::mem::take(&mut self.env);
        let command = self.command;
        drop(self);
        Self::start_on(&bin, command, dir, database, env).await
    }

    async fn wait_for_file(&mut self, name: &str) -> String {
        let path = self.data_dir.join(name);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && text.ends_with('\n')
            {
                return text.trim().to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("codexos {} exited with {status} before writing {name}:\n{}", self.command, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "codexos {} did not write {name} within 60s:\n{}",
                self.command,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The database URL given to the server, if not its embedded SQLite.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(TestDatabase::url)
    }

    pub fn is_postgres(&self) -> bool {
        self.database.as_ref().is_some_and(TestDatabase::is_postgres)
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.join("stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A request builder for `path` on this server, without credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// Sends a request with `key` (or none) and returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
        (status, value)
    }

    /// GET with the owner key.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(&self.owner_key.clone()), None).await
    }

    /// The CLI, finding this server through `CODEXOS_HOME` as a user would.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(&self.bin);
        clear_client_env(&mut command);
        command.env("CODEXOS_HOME", &self.data_dir);
        command
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        terminate(&mut self.child).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM to a child process and waits for it to exit.
pub async fn terminate(child: &mut Child) -> ExitStatus {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process, which we have not
    // yet waited for, so its pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not stop within 30s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client tests drive servers with: plain HTTP to loopback. reqwest still
/// wants a rustls config to build any client (it is built with
/// `rustls-no-provider`), so it gets one with ring and no roots at all,
/// which refuses every HTTPS server.
fn loopback_client() -> reqwest::Client {
    loopback_builder().build().unwrap()
}

fn loopback_builder() -> reqwest::ClientBuilder {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

/// A client that behaves like a browser a test drives by hand: it follows
/// no redirect and keeps no cookie, so the test sees every hop.
pub fn browser_client() -> reqwest::Client {
    loopback_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The caller's own environment must not leak into a test's CLI runs.
pub fn clear_client_env(command: &mut Command) {
    for var in
        ["CODEXOS_URL", "CODEXOS_API_KEY", "CODEXOS_HOME", "CODEXOS_CONFIG", "DATABASE_URL", "CODEXOS_DATABASE_URL"]
    {
        command.env_remove(var);
    }
}

/// Runs a command to completion and returns (exit code, stdout, stderr).
pub fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.stdin(Stdio::null()).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_the_name() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(database_url("postgres://u:p@h/db?sslmode=disable", "t2"), "postgres://u:p@h/t2?sslmode=disable");
        assert_eq!(database_url("postgres://h:5432", "t3"), "postgres://h:5432/t3");
    }
}
