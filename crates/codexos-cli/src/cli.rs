//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "codexos",
    version,
    about = "Run autonomous engineering agents safely, accountably, for many tenants."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory: the embedded database, `url` and `owner.key` [default: ./.codexos]
    #[arg(long, global = true, env = "CODEXOS_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Settings file (TOML); `CODEXOS_*` variables and flags override it
    #[arg(long, global = true, env = "CODEXOS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Server to talk to [default: the one `codexos up` wrote to DATA_DIR/url]
    #[arg(long, global = true, env = "CODEXOS_URL", value_name = "URL")]
    pub server: Option<String>,
    /// API key [default: DATA_DIR/owner.key]
    #[arg(long, global = true, env = "CODEXOS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole platform in one process: API, worker, embedded SQLite in the data directory
    Up(UpArgs),
    /// The API server alone (scale-out: run several against one PostgreSQL)
    Serve(ServeArgs),
    /// A worker alone (scale-out)
    Worker(WorkerArgs),
    /// What this host supports for sandboxing, the database, the effective config
    Doctor(JsonFlag),
    /// The server's detailed health: database, sandbox, workers and queue
    Status(JsonFlag),
    /// Your tenant's usage this month against its quotas
    Usage(JsonFlag),
    /// API keys of your tenant
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run one command in the sandbox
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Register and inspect agents
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Start an execution and follow its timeline
    Run(RunArgs),
    /// Inspect and control executions: list, show, events, pause, resume, cancel, approve, deny, rollback, fork
    #[command(subcommand)]
    Exec(ExecCommand),
    /// The tamper-evident audit log: list, verify, prove and export entries
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Tenants of the installation (an operator's commands, straight on the database)
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Your tenant's members, and your own password
    #[command(subcommand)]
    User(UserCommand),
    /// Tenant secrets: set (value from standard input), list, delete; rotate the master key
    #[command(subcommand)]
    Secret(SecretCommand),
    /// The tenant's policy in Rego: set (a new version), get, versions, test against example inputs
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The agent marketplace
    Market(NotBuilt),
    /// Evaluate agents against task suites
    Eval(NotBuilt),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to listen on; port 0 picks a free one (the URL is printed and written to DATA_DIR/url)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// `sqlite://PATH` or `postgres://...` [default: SQLite in the data directory]
    // Deliberately not read from DATABASE_URL: a variable exported for some
    // other project must not move `up` off its embedded database.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the URL is printed and written to DATA_DIR/url)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// `sqlite://PATH` or `postgres://...` [default: SQLite in the data directory]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// `sqlite://PATH` or `postgres://...` [default: SQLite in the data directory]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with its owner; prints the owner's API key once
    Create {
        /// The tenant's slug: lowercase letters, digits and dashes
        slug: String,
        /// The owner's email (an existing user keeps their password)
        #[arg(long, value_name = "EMAIL")]
        owner_email: String,
        /// A display name [default: the slug]
        #[arg(long)]
        name: Option<String>,
        /// `sqlite://PATH` or `postgres://...` [default: the configured database]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every tenant of the installation
    List {
        /// `sqlite://PATH` or `postgres://...` [default: the configured database]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show or set a tenant's quotas and print those in effect (a tenant's
    /// own admins cannot raise them); a running server applies a change
    /// within seconds
    Quota(TenantQuotaArgs),
    /// Your tenant's single sign-on with OpenID Connect (through the API,
    /// as a tenant admin): set, show, delete
    #[command(subcommand)]
    Sso(SsoCommand),
}

#[derive(Debug, Subcommand)]
pub enum SsoCommand {
    /// Configure your tenant's identity provider; the server checks it by
    /// running its discovery. Register the printed callback URL at the provider
    Set {
        /// The issuer, exactly as the provider names it
        #[arg(long, value_name = "URL")]
        issuer: String,
        /// Our client id at the provider
        #[arg(long, value_name = "ID")]
        client_id: String,
        /// Read the client secret from standard input (kept encrypted);
        /// without a secret the client is public (PKCE alone)
        #[arg(long, conflicts_with = "client_secret_secret")]
        client_secret_stdin: bool,
        /// Or use this tenant secret as the client secret
        #[arg(long, value_name = "NAME")]
        client_secret_secret: Option<String>,
        /// The role of people joining by their first login (at most your own)
        #[arg(long, default_value = "developer", value_name = "ROLE")]
        default_role: String,
        /// Only emails of this domain may log in; repeat for more [default: any]
        #[arg(long = "allowed-domain", value_name = "DOMAIN")]
        allowed_domains: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Your tenant's single sign-on, with its callback and login URLs
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Remove your tenant's single sign-on (sessions already open stay)
    Delete,
}

#[derive(Debug, Args)]
pub struct TenantQuotaArgs {
    /// The tenant's slug
    pub slug: String,
    /// API requests per second, sustained; `default` for the installation's
    #[arg(long, value_name = "N", value_parser = parse_quota_count, allow_hyphen_values = true)]
    pub requests_per_second: Option<QuotaSetting>,
    /// API requests at once above that rate; `default` for the installation's
    #[arg(long, value_name = "N", value_parser = parse_quota_count, allow_hyphen_values = true)]
    pub burst: Option<QuotaSetting>,
    /// Executions not finished at one time; `default` for the installation's
    #[arg(long, value_name = "N", value_parser = parse_quota_count, allow_hyphen_values = true)]
    pub max_concurrent_executions: Option<QuotaSetting>,
    /// Sandbox CPU seconds per calendar month (UTC); `default` for the installation's
    #[arg(long, value_name = "N", value_parser = parse_quota_count, allow_hyphen_values = true)]
    pub cpu_seconds_per_month: Option<QuotaSetting>,
    /// Checkpoint content and memory notes kept, e.g. 10GiB; `default` for the installation's
    #[arg(long, value_name = "SIZE", value_parser = parse_quota_size, allow_hyphen_values = true)]
    pub storage: Option<QuotaSetting>,
    /// Every quota back to the installation's default (then the values given apply)
    #[arg(long)]
    pub reset: bool,
    /// `sqlite://PATH` or `postgres://...` [default: the configured database]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// A quota on the command line: a value, or the installation's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSetting {
    Default,
    Value(u64),
}

fn parse_quota_count(text: &str) -> Result<QuotaSetting, String> {
    match text.trim() {
        "default" => Ok(QuotaSetting::Default),
        number => number
            .parse()
            .map(QuotaSetting::Value)
            .map_err(|_| format!("'{number}' is not a whole number of 0 or more, nor 'default'")),
    }
}

fn parse_quota_size(text: &str) -> Result<QuotaSetting, String> {
    match text.trim() {
        "default" => Ok(QuotaSetting::Default),
        size => codexos_core::parse_size(size).map(QuotaSetting::Value).map_err(|err| format!("{err}, nor 'default'")),
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a member to your tenant; a new user's password is read from standard input with --password-stdin
    Add {
        email: String,
        /// owner, admin, developer or viewer (at most your own)
        #[arg(long)]
        role: String,
        /// Read a new user's password from standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Your tenant's members
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a member's role
    Role {
        /// The user's id
        id: String,
        role: String,
    },
    /// Remove a member: their sessions end and their keys in this tenant are revoked
    Remove {
        /// The user's id
        id: String,
    },
    /// Set your own password (standard input: the current one on the first line if you have one, then the new one)
    Password,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Your tenant's entries, oldest first (through the API)
    List {
        /// Entries after this sequence number
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Check the logs straight from the database (no server needed): the
    /// hash chain, the Merkle tree, every signed checkpoint and their
    /// consistency. Exits 0 when intact, 1 naming the first bad entry
    Verify {
        /// Only this tenant's log [default: every tenant's]
        #[arg(long, value_name = "SLUG")]
        tenant: Option<String>,
        /// The verifier key (`name+id+key`) to trust [default: the one of the installation's signing key file]
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// A signed checkpoint kept outside the database (a file holding the note, e.g. saved from an
        /// export or `GET /v1/audit/verify`): the log must still contain what it covers. Repeatable
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// `sqlite://PATH` or `postgres://...` [default: the configured database]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// An inclusion proof of one entry in a signed checkpoint, as JSON (through the API)
    Proof {
        /// The entry's sequence number
        seq: u64,
    },
    /// Check a proof written by `audit proof` or `audit export`, with nothing but the verifier key
    CheckProof {
        /// The proof (JSON; one proof per line is accepted too); `-` for standard input
        file: PathBuf,
        /// The verifier key (`name+id+key`) to trust [default: the one of the installation's signing key file]
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// The tenant id the proofs must be of (one key signs every tenant's log)
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
    },
    /// Every entry of a tenant's log as JSON lines, each with its inclusion
    /// proof in the latest checkpoint (signed now if entries follow it);
    /// straight from the database
    Export {
        /// The tenant [default: default]
        #[arg(long, value_name = "SLUG", default_value = "default")]
        tenant: String,
        /// Write here instead of standard output
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// `sqlite://PATH` or `postgres://...` [default: the configured database]
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed once
    Create {
        /// What the key is for, e.g. `ci`
        name: String,
        /// owner, admin, developer or viewer (at most your own)
        #[arg(long, default_value = "developer")]
        role: String,
        /// Lifetime, e.g. 30d or 12h [default: never expires]
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's keys
    List(JsonFlag),
    /// Revoke a key at once
    Revoke {
        /// The key's id (from `codexos key list`)
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Publisher keys: the Ed25519 keys that sign agent manifests, and which the tenant trusts
    #[command(subcommand)]
    Publisher(PublisherCommand),
}

#[derive(Debug, Subcommand)]
pub enum PublisherCommand {
    /// Make a key pair here (the private key stays in a 0600 file) and register its public key, trusted
    Create {
        /// A label: 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'
        name: String,
        /// Where to write the private key [default: ./NAME.publisher.key]; never overwritten
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Register another publisher's public key (ed25519:...), to check and trust what it signs
    Add {
        /// A label for the publisher
        name: String,
        /// The publisher's public key, as `codexos key publisher list` shows it where it was made
        public_key: String,
        /// Register it without trusting it yet
        #[arg(long)]
        untrusted: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's publisher keys
    List(JsonFlag),
    /// Trust manifests signed by a key
    Trust {
        /// The key id
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key: versions it signed stop running
    Distrust {
        /// The key id
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key for good
    Revoke {
        /// The key id
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret; its value is read from standard input (typed without
    /// echo at a terminal; one final line break dropped) and never shown again
    Set {
        /// 1-128 characters of A-Z, a-z, 0-9 and '_', not starting with a digit
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's secrets by name (values are never shown)
    List(JsonFlag),
    /// Delete a secret
    Delete { name: String },
    /// Re-wrap every tenant's data key with a new master key, on the
    /// database and the key file directly; stop the platform first
    RotateMasterKey {
        /// `sqlite://PATH` or `postgres://...` [default: the configured database]
        #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
        database_url: Option<String>,
        /// Rotate even though workers are running on the database
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set the tenant's policy from Rego modules (a new version, current at
    /// once); one that does not compile is refused with each problem's place
    Set {
        /// The Rego modules, named by their file names (see docs/policy.md)
        #[arg(required = true, value_name = "FILE.rego")]
        files: Vec<std::path::PathBuf>,
        /// The data document (a JSON object) the policy reads as `data`
        #[arg(long, value_name = "FILE.json")]
        data: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print the tenant's policy (the current version, or --version N), or
    /// the default policy while it has set none
    Get {
        /// A version other than the current one
        #[arg(long, value_name = "N")]
        version: Option<i64>,
        /// Print the default policy CodexOS ships (no server needed)
        #[arg(long, conflicts_with = "version")]
        default: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the versions of the tenant's policy, newest first
    Versions(JsonFlag),
    /// Run test cases (a JSON file of inputs and expected decisions) against
    /// the tenant's policy, or against local modules with --policy (no server
    /// needed); exits 1 if any case fails
    Test {
        /// The cases: `[{"name", "input", "expect": "allow"|"ask"|"deny", "reason"?}]`
        #[arg(value_name = "CASES.json")]
        cases: std::path::PathBuf,
        /// Test this Rego module instead of the tenant's policy (repeat for several)
        #[arg(long = "policy", value_name = "FILE.rego")]
        policy: Vec<std::path::PathBuf>,
        /// The data document that goes with --policy
        #[arg(long, value_name = "FILE.json", requires = "policy")]
        data: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run one command in the sandbox; exit with its status, or 125 naming the violation
    Exec(Box<SandboxExecArgs>),
    /// Inside a sandbox: run one built-in tool call read from standard input (used by workers)
    #[command(hide = true)]
    ToolRunner,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent, or a new version of one, from its TOML manifest
    Create {
        /// The manifest file (see docs/manifest.md)
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's agents
    List(JsonFlag),
    /// Show an agent: its manifest and versions
    Show {
        name: String,
        /// A version other than the newest
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a manifest with a publisher key (on this machine; no server needed)
    Sign {
        /// The manifest file
        file: std::path::PathBuf,
        /// The publisher's private key file (from `codexos key publisher create`)
        #[arg(long, value_name = "KEYFILE")]
        key: std::path::PathBuf,
        /// Rewrite FILE instead of printing the signed manifest
        #[arg(long)]
        in_place: bool,
    },
    /// Show what changed between two versions of an agent, as a unified diff of their manifests
    Diff {
        name: String,
        /// The older version
        from: String,
        /// The newer version
        to: String,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent to run
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// A version of the agent [default: the newest]
    #[arg(long)]
    pub version: Option<String>,
    /// The directory the agent works on [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<std::path::PathBuf>,
    /// Print the execution's id and return at once
    #[arg(long)]
    pub detach: bool,
    /// Print the final execution record as JSON instead of the live timeline
    #[arg(long)]
    pub json: bool,
    /// What the agent should do
    #[arg(value_name = "TASK")]
    pub task: String,
}

#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// List executions, newest first
    List {
        /// Only this status (queued, running, succeeded, failed, ...)
        #[arg(long)]
        status: Option<String>,
        /// Only this agent
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one execution
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Pause an execution after its current step
    Pause {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused execution from its last recorded step
    Resume {
        id: String,
        /// A new instruction for the agent, read as the user's next message
        #[arg(long, value_name = "TEXT")]
        task: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve the call an execution waits for (STEP: the number of its approval request)
    Approve {
        id: String,
        step: i64,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deny the call an execution waits for; the reason is told to the agent
    Deny {
        id: String,
        step: i64,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Fork an execution at a step into a new one that runs on from there
    Fork {
        id: String,
        /// The step to fork at (the `step` of `exec events`)
        #[arg(long = "from", value_name = "STEP")]
        from_step: u32,
        /// A new instruction for the fork's agent
        #[arg(long, value_name = "TEXT")]
        task: Option<String>,
        /// The fork's workspace, a new directory [default: beside the parent's]
        #[arg(long, value_name = "DIR")]
        workspace: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Roll a paused or finished execution back to the start of a step: the
    /// workspace as it was then, the session forgetting what followed
    Rollback {
        id: String,
        /// The step to go back to (the `step` of `exec events`)
        #[arg(long = "to", value_name = "STEP")]
        to_step: u32,
        #[arg(long)]
        json: bool,
    },
    /// Cancel an execution now
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print an execution's timeline; with --follow, keep printing until it ends
    Events {
        id: String,
        /// Keep following the live timeline
        #[arg(long)]
        follow: bool,
        /// Start after this sequence number
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// One JSON object per event
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SandboxExecArgs {
    /// The only directory the command may write [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<std::path::PathBuf>,
    /// Network: `none`, or `allow=HOST:PORT,...` (through the egress proxy)
    #[arg(long, default_value = "none", value_name = "none|allow=HOST:PORT,...")]
    pub net: String,
    /// Memory of the whole process tree, e.g. 512M, 2G
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub memory: String,
    /// CPU seconds of the whole process tree
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub cpu_seconds: u64,
    /// Processes and threads at once
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub pids: u64,
    /// Open files per process
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub open_files: u64,
    /// Largest file a process may write, e.g. 1G
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub file_size: String,
    /// Wall-clock limit, e.g. 30s, 5m
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub timeout: String,
    /// Extra host path visible read-only (repeatable)
    #[arg(long = "ro", value_name = "PATH")]
    pub read_only: Vec<std::path::PathBuf>,
    /// Extra host path visible read-write (repeatable)
    #[arg(long = "rw", value_name = "PATH")]
    pub read_write: Vec<std::path::PathBuf>,
    /// Environment variable for the command, NAME=VALUE (repeatable)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Run even if this host lacks a protection (recorded in the outcome)
    #[arg(long)]
    pub allow_weaker_sandbox: bool,
    /// Print the outcome as JSON (output, usage, violations) instead of passing output through
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A command group whose capability is not built yet: it accepts anything
/// and says so, instead of pretending.
#[derive(Debug, Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0.., hide = true)]
    pub args: Vec<String>,
}
