//! The engine's own overhead per step: whole executions of an `llm` agent
//! whose model and tool answer at once, so that all the time measured is the
//! loop's (event writes, bookkeeping, dispatch) and none of it the model's or
//! the tool's.
//!
//! A step is one model turn that asks for one tool call and the call itself:
//! the `model_request`, `model_reply`, `tool_call` and `tool_result` events.
//! Each execution runs `STEPS` such steps and then a final turn that answers
//! without a tool call; its whole time divided by `STEPS` is the time per
//! step (the final turn is counted in, so the figure errs on the high side).
//!
//! Two journals: the worker's `StoreJournal` on a real SQLite store (its
//! migrations, its pool settings, a file on disk), and an in-memory one that
//! encodes each event as the store would and keeps it in a `Vec`. The
//! difference is the database's share.
//!
//! After criterion's estimates, each journal also runs `DISTRIBUTION_RUNS`
//! executions with every step timed on its own (from one `model_request`
//! to the next), for the percentiles of single steps that criterion's
//! per-sample means do not show.
//!
//! `cargo xtask bench engine`; the figures are in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use codexos_core::{ExecutionStatus, TenantId, TenantSlug};
use codexos_engine::model::{ModelError, ModelEvent, ModelRequest};
use codexos_engine::{
    AgentManifest, ExecutionSetup, Journal, JournalError, Message, Model, ModelReply, NoMemory, TimelineEvent,
    TokenUsage, ToolCall, Totals, run_with,
};
use codexos_store::{AgentVersion, Lease, NewAgentVersion, NewExecution, Store, WorkerId};
use codexos_worker::journal::{StoreJournal, store_totals};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod common;
use common::{CannedTool, percentile};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Tool-calling steps per execution.
const STEPS: u32 = 20;
/// Executions per journal in the per-step distribution pass.
const DISTRIBUTION_RUNS: usize = 50;
const TASK: &str = "Review the modules under src/ and say whether they read well.";

/// An ordinary coding agent: six tools offered to the model (their schemas
/// go into every token estimate), default limits.
const MANIFEST: &str = r#"
name = "bench"
version = "1.0.0"
kind = "llm"
instructions = "You are a careful engineer. Read the code before you change it."

[model]
provider = "openai"
name = "instant"
base_url = "http://127.0.0.1:9/v1"

[tools]
allow = ["shell", "read_file", "write_file", "apply_patch", "list_dir", "search"]
"#;

/// Answers every turn at once: a `read_file` call for each of the first
/// `STEPS` turns, then a final text. The turn is known from the number of
/// assistant messages so far, so the model needs no state.
struct ScriptedModel;

impl Model for ScriptedModel {
    async fn complete(
        &self,
        request: &ModelRequest<'_>,
        _events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply, ModelError> {
        let turn = request.messages.iter().filter(|message| matches!(message, Message::Assistant { .. })).count();
        let usage = TokenUsage { input_tokens: 1200 + 600 * turn as u64, output_tokens: 40 };
        if turn < STEPS as usize {
            Ok(ModelReply {
                content: Some("Let me look at the next file.".to_owned()),
                tool_calls: vec![ToolCall {
                    id: format!("call_{turn}"),
                    name: "read_file".to_owned(),
                    arguments: format!(r#"{{"path":"src/module_{turn}.rs"}}"#),
                }],
                usage,
                stop_reason: Some("tool_calls".to_owned()),
            })
        } else {
            Ok(ModelReply {
                content: Some("Done: the code reads well.".to_owned()),
                tool_calls: Vec::new(),
                usage,
                stop_reason: Some("stop".to_owned()),
            })
        }
    }
}

/// Keeps the events in memory, encoded as the store encodes them (kind and
/// compact JSON payload), so that it differs from `StoreJournal` only by the
/// database.
#[derive(Default)]
struct VecJournal {
    rows: Vec<(&'static str, String)>,
    totals: Totals,
}

impl Journal for VecJournal {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        self.rows.extend(events.iter().map(|event| (event.kind(), event.payload().to_string())));
        self.totals = *totals;
        Ok(())
    }
}

/// Notes when each model turn is journaled: the time between two
/// `model_request` events is one step, whole.
struct StepClock<J> {
    inner: J,
    turns: Vec<Instant>,
}

impl<J: Journal> Journal for StepClock<J> {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        if let Some(TimelineEvent::ModelRequest { .. }) = events.first() {
            self.turns.push(Instant::now());
        }
        self.inner.append(events, totals).await
    }
}

/// A migrated SQLite store with one tenant and the bench agent registered.
struct Fixture {
    store: Store,
    tenant: TenantId,
    version: AgentVersion,
    worker: WorkerId,
    workspace: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        // Under the target directory rather than /tmp, which may be a tmpfs
        // where syncs cost nothing: the store's data directory is on disk.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let url = format!("sqlite://{}", dir.path().join("codexos.db").display());
        let store = Store::connect(&url).await.unwrap();
        let tenant = store.create_tenant(&TenantSlug::parse("bench").unwrap(), "bench").await.unwrap().id;
        let new_version = NewAgentVersion {
            name: "bench".to_owned(),
            version: "1.0.0".to_owned(),
            version_key: "000001.000000.000000".to_owned(),
            kind: "llm".to_owned(),
            description: "the engine_step benchmark's agent".to_owned(),
            manifest: MANIFEST.to_owned(),
            manifest_sha256: "bench".to_owned(),
            signature_status: codexos_core::SignatureStatus::Unsigned,
            publisher_key_id: None,
            created_by: None,
        };
        let version = store.create_agent_version(tenant, &new_version).await.unwrap();
        let worker = store.register_worker("bench", std::process::id()).await.unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        Fixture { store, tenant, version, worker, workspace, _dir: dir }
    }

    /// A fresh execution, queued and leased as the worker would, with what
    /// the engine needs to run it.
    async fn lease(&self) -> (ExecutionSetup, Lease) {
        let new_execution = NewExecution {
            agent_version_id: self.version.id,
            task: TASK.to_owned(),
            workspace: self.workspace.display().to_string(),
            created_by: None,
        };
        self.store.create_execution(self.tenant, &new_execution).await.unwrap();
        let leased = self.store.lease_next_execution(&self.worker, Duration::from_secs(600)).await.unwrap().unwrap();
        (execution_setup(&leased.manifest, &self.workspace), leased.lease)
    }

    async fn finish(&self, lease: &Lease, totals: &Totals) {
        let outcome = serde_json::json!({ "reason": "completed" });
        self.store.finish_execution(lease, ExecutionStatus::Succeeded, &outcome, &store_totals(totals)).await.unwrap();
    }
}

fn execution_setup(manifest: &str, workspace: &std::path::Path) -> ExecutionSetup {
    ExecutionSetup {
        task: TASK.to_owned(),
        manifest: AgentManifest::parse(manifest).unwrap(),
        workspace: workspace.to_owned(),
        runner: PathBuf::from("/nonexistent/codexos"),
        hidden_paths: Vec::new(),
        allow_missing_protections: false,
        api_key: None,
        secrets: Default::default(),
        price: None,
        shutdown: CancellationToken::new(),
        pause: codexos_engine::PauseSignal::default(),
        cancel: CancellationToken::new(),
        history: Vec::new(),
        totals: Totals::default(),
        // `read_file` takes no checkpoint anyway.
        checkpoints: None,
        policy: None,
    }
}

/// Runs one execution to its end and checks that it did all its steps.
async fn execute<J: Journal>(setup: ExecutionSetup, tool: &CannedTool, journal: &mut J) -> Totals {
    let outcome = run_with(setup, Some(&ScriptedModel), tool, journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{:?}", outcome.summary);
    assert_eq!(outcome.totals.steps, u64::from(STEPS) + 1);
    outcome.totals
}

/// The time of `iters` steps, for criterion: whole executions are run (as
/// many as cover `iters` steps) and their mean time per step is scaled back
/// to `iters`, so criterion's budget of iterations holds.
fn per_step(iters: u64, executions_time: Duration, executions: u64) -> Duration {
    executions_time.mul_f64(iters as f64 / (executions * u64::from(STEPS)) as f64)
}

fn engine_step(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let fixture = runtime.block_on(Fixture::new());
    let tool = CannedTool::default();
    let manifest = MANIFEST;

    let mut group = c.benchmark_group("engine_step");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let executions = iters.div_ceil(u64::from(STEPS));
                let mut timed = Duration::ZERO;
                for _ in 0..executions {
                    let (setup, lease) = fixture.lease().await;
                    let mut journal =
                        StoreJournal { store: fixture.store.clone(), lease, redactor: Default::default() };
                    let started = Instant::now();
                    let totals = execute(setup, &tool, &mut journal).await;
                    timed += started.elapsed();
                    fixture.finish(&journal.lease, &totals).await;
                }
                per_step(iters, timed, executions)
            })
        });
    });
    group.bench_function("in_memory", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let executions = iters.div_ceil(u64::from(STEPS));
                let mut timed = Duration::ZERO;
                for _ in 0..executions {
                    let setup = execution_setup(manifest, &fixture.workspace);
                    let mut journal = VecJournal::default();
                    let started = Instant::now();
                    execute(setup, &tool, &mut journal).await;
                    timed += started.elapsed();
                }
                per_step(iters, timed, executions)
            })
        });
    });
    group.finish();

    // Each step timed on its own, and each execution whole (divided by
    // `STEPS`, as criterion's figures are), in the same runs.
    let mut sqlite = (Vec::new(), Vec::new());
    let mut in_memory = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..DISTRIBUTION_RUNS {
            let (setup, lease) = fixture.lease().await;
            let store_journal = StoreJournal { store: fixture.store.clone(), lease, redactor: Default::default() };
            let mut journal = StepClock { inner: store_journal, turns: Vec::new() };
            let started = Instant::now();
            let totals = execute(setup, &tool, &mut journal).await;
            sqlite.1.push(started.elapsed() / STEPS);
            sqlite.0.extend(journal.turns.windows(2).map(|pair| pair[1] - pair[0]));
            fixture.finish(&journal.inner.lease, &totals).await;

            let setup = execution_setup(manifest, &fixture.workspace);
            let mut journal = StepClock { inner: VecJournal::default(), turns: Vec::new() };
            let started = Instant::now();
            execute(setup, &tool, &mut journal).await;
            in_memory.1.push(started.elapsed() / STEPS);
            in_memory.0.extend(journal.turns.windows(2).map(|pair| pair[1] - pair[0]));
        }
    });
    println!("{DISTRIBUTION_RUNS} more executions of {STEPS} steps per journal, in µs:");
    for (name, (steps, executions)) in [("sqlite", &mut sqlite), ("in_memory", &mut in_memory)] {
        let mean = steps.iter().sum::<Duration>() / steps.len().max(1) as u32;
        println!(
            "engine_step/{name:<10} single steps: mean {:.1} p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}; \
             whole executions / {STEPS}: p50 {:.1}",
            micros(mean),
            micros(percentile(steps, 50)),
            micros(percentile(steps, 95)),
            micros(percentile(steps, 99)),
            micros(percentile(steps, 100)),
            micros(percentile(executions, 50)),
        );
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

criterion_group! {
    name = benches;
    // Whole executions per sample keep the samples few and long; on two
    // cores the whole bench takes about a minute.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = engine_step
}
criterion_main!(benches);
