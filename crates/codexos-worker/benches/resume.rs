//! Resume time after a crash (issue 5): what a worker does between leasing
//! an execution whose previous worker died and running its next new step.
//! That is reading the execution's timeline from the store (every event,
//! in pages, as the worker's `load_history` in `src/execution.rs` does) and
//! the engine replaying it (`run_with` with the events in
//! `ExecutionSetup.history`).
//!
//! The timelines, built once and untimed: real executions of an `llm` agent
//! of `steps` steps and a final answer (a step is one model turn asking for
//! one `read_file` call and the call: `model_request`, `model_reply`,
//! `tool_call`, `tool_result`), run by `run_with` with a scripted model and
//! a canned tool through the worker's `StoreJournal` on a real SQLite store,
//! as `engine_step` runs them. The first worker's lease has a zero timeout
//! and the execution is never finished: the worker died after recording the
//! final answer and before recording the end. A second worker then leases
//! it (the expired lease is taken over, `resumed: true`) and holds it for
//! the rest of the bench.
//!
//! Timed, per resume ("criterion" and the single runs after it): from that
//! lease, `load_history` (the paged reads, each a read transaction, and the
//! decoding of every payload), parsing the stored manifest into the
//! `ExecutionSetup` (as the worker's `prepare` does, without its workspace
//! and API key checks), and `run_with`, which reads the events back into
//! turns and answers and rebuilds the conversation as the live loop built
//! it. The recorded last turn is the final answer, so the replay ends there
//! and `run_with` returns without calling the model, running a tool or
//! writing an event: every resume does the same work on the same timeline,
//! and stops where the next new step would begin. One thing more than that
//! is timed: `run_with` frees the loaded events and the replayed
//! conversation as it returns, which a live execution does at its end (for
//! the longest timeline about 2 ms; the "first step" pass stops before it).
//! The single runs also time the load on its own; "replay" is the rest.
//!
//! A second pass, "first step": the crash comes one event earlier, while
//! the model was being asked for step `steps + 1` (the same timeline without
//! its final `model_reply`). Each such resume writes events, so each runs
//! on a fresh copy of the timeline (written in one transaction with the
//! store's `append_events`, then leased, left to expire and taken over).
//! Timed from the start of `load_history` to the moment the model is called
//! for the new step: the above plus that step's start — the limit checks,
//! the compaction check (replay rebuilds the conversation with every tool
//! output in full, so a long timeline is compacted again, one more event
//! written), the token estimate and the `model_request` append.
//!
//! Not included: leasing itself (one transaction), and before it the lease
//! timeout a dead worker's lease must outlive before anyone may take the
//! execution over (30 s by default), which dominates a real resume.
//!
//! `cargo xtask bench resume`; the figures are in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use codexos_core::{ExecutionStatus, TenantId, TenantSlug};
use codexos_engine::model::{ModelError, ModelEvent, ModelRequest};
use codexos_engine::tools::{SandboxSettings, ToolError, ToolExecution, ToolInvocation};
use codexos_engine::{
    AgentManifest, ExecutionSetup, Journal, JournalError, Message, Model, ModelReply, NoMemory, RecordedEvent,
    TimelineEvent, TokenUsage, ToolCall, ToolRunner, Totals, run_with,
};
use codexos_store::{AgentVersion, LeasedExecution, NewAgentVersion, NewEvent, NewExecution, Store, WorkerId};
use codexos_worker::journal::{StoreJournal, engine_totals};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

mod common;
use common::{CannedTool, percentile};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Tool-calling steps of the timelines resumed.
const SIZES: [u32; 3] = [20, 200, 1000];
/// Resumes per timeline timed one by one after criterion.
const SINGLE_RUNS: usize = 50;
/// Resumes per timeline, each on a fresh copy, in the "first step" pass.
const FIRST_STEP_RUNS: usize = 20;
/// As in `src/execution.rs`: the events of a fresh lease (`queued`,
/// `running`), and the events read per page when loading a timeline.
const EVENTS_OF_A_FRESH_START: i64 = 2;
/// The page size of `Store::timeline`, for the report.
const HISTORY_PAGE: i64 = 1000;
const TASK: &str = "Review the modules under src/ and say whether they read well.";
const ANSWER: &str = "Done: the code reads well.";

/// The `engine_step` agent, with room for the longest timeline's steps.
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

[limits]
max_steps = 2000
"#;

/// Builds the timelines: a `read_file` call for each of the first `steps`
/// turns, then the final answer (`engine_step`'s model, with a length).
struct ScriptedModel {
    steps: u32,
}

impl Model for ScriptedModel {
    async fn complete(
        &self,
        request: &ModelRequest<'_>,
        _events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply, ModelError> {
        let turn = request.messages.iter().filter(|message| matches!(message, Message::Assistant { .. })).count();
        let usage = TokenUsage { input_tokens: 1200 + 600 * turn as u64, output_tokens: 40 };
        if turn < self.steps as usize {
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
            Ok(final_answer(usage))
        }
    }
}

fn final_answer(usage: TokenUsage) -> ModelReply {
    ModelReply { content: Some(ANSWER.to_owned()), tool_calls: Vec::new(), usage, stop_reason: Some("stop".to_owned()) }
}

/// The model of a resume that must end in the replay: never called.
struct NoModel;

impl Model for NoModel {
    async fn complete(
        &self,
        _request: &ModelRequest<'_>,
        _events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply, ModelError> {
        panic!("the replay should have ended at the recorded final answer");
    }
}

/// The model of a "first step" resume: notes when it is called, which is
/// when the new step is ready to run, and answers at once.
struct FirstStepModel {
    called: Mutex<Option<Instant>>,
}

impl Model for FirstStepModel {
    async fn complete(
        &self,
        _request: &ModelRequest<'_>,
        _events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply, ModelError> {
        let now = Instant::now();
        assert!(self.called.lock().unwrap().replace(now).is_none(), "one model call per resume");
        Ok(final_answer(TokenUsage { input_tokens: 1200, output_tokens: 40 }))
    }
}

/// The tool of a resume: every call is answered in the timeline.
struct NoTool;

impl ToolRunner for NoTool {
    async fn run(&self, _invocation: &ToolInvocation, _settings: &SandboxSettings) -> Result<ToolExecution, ToolError> {
        panic!("a resume of a timeline whose calls are all answered ran a tool");
    }
}

/// Notes the kinds of the events a journal writes.
struct Recording<J> {
    inner: J,
    kinds: Vec<&'static str>,
}

impl<J: Journal> Journal for Recording<J> {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        self.kinds.extend(events.iter().map(TimelineEvent::kind));
        self.inner.append(events, totals).await
    }
}

/// A migrated SQLite store with one tenant, the bench agent, the worker
/// that dies and the one that takes over.
struct Fixture {
    store: Store,
    tenant: TenantId,
    version: AgentVersion,
    dead: WorkerId,
    survivor: WorkerId,
    workspace: PathBuf,
    _dir: tempfile::TempDir,
}

/// A timeline to resume: taken over by the survivor, not finished.
struct Interrupted {
    steps: u32,
    leased: LeasedExecution,
}

impl Fixture {
    async fn new() -> Self {
        // On disk under the target directory, as in `engine_step`.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let url = format!("sqlite://{}", dir.path().join("codexos.db").display());
        let store = Store::connect(&url).await.unwrap();
        let tenant = store.create_tenant(&TenantSlug::parse("bench").unwrap(), "bench").await.unwrap().id;
        let new_version = NewAgentVersion {
            name: "bench".to_owned(),
            version: "1.0.0".to_owned(),
            version_key: "000001.000000.000000".to_owned(),
            kind: "llm".to_owned(),
            description: "the resume benchmark's agent".to_owned(),
            manifest: MANIFEST.to_owned(),
            manifest_sha256: "bench".to_owned(),
            signature_status: codexos_core::SignatureStatus::Unsigned,
            publisher_key_id: None,
            created_by: None,
        };
        let version = store.create_agent_version(tenant, &new_version).await.unwrap();
        let dead = store.register_worker("bench-dead", std::process::id()).await.unwrap();
        let survivor = store.register_worker("bench-survivor", std::process::id()).await.unwrap();
        let workspace = dir.path().join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        Fixture { store, tenant, version, dead, survivor, workspace, _dir: dir }
    }

    /// A new execution, leased by the worker that will die, under a lease
    /// that expires at once (appends still succeed until it is taken over).
    async fn lease_doomed(&self) -> LeasedExecution {
        let new_execution = NewExecution {
            agent_version_id: self.version.id,
            task: TASK.to_owned(),
            workspace: self.workspace.display().to_string(),
            created_by: None,
        };
        let execution = self.store.create_execution(self.tenant, &new_execution).await.unwrap();
        let leased = self.store.lease_next_execution(&self.dead, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(leased.execution.id, execution.id);
        leased
    }

    /// The survivor takes the execution over once its lease has expired.
    async fn take_over(&self, doomed: &LeasedExecution) -> LeasedExecution {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let leased = self.store.lease_next_execution(&self.survivor, Duration::from_secs(600)).await.unwrap().unwrap();
        assert_eq!(leased.execution.id, doomed.execution.id, "the expired execution is taken over");
        assert!(leased.last_seq > EVENTS_OF_A_FRESH_START);
        leased
    }

    /// Runs an execution of `steps` steps and a final answer through the
    /// store's journal, leaves it unfinished, and has it taken over.
    async fn interrupted(&self, steps: u32) -> Interrupted {
        let doomed = self.lease_doomed().await;
        let setup = execution_setup(&doomed, &self.workspace, Vec::new());
        let mut journal =
            StoreJournal { store: self.store.clone(), lease: doomed.lease.clone(), redactor: Default::default() };
        let outcome = run_with(setup, Some(&ScriptedModel { steps }), &CannedTool::default(), &mut journal, &NoMemory)
            .await
            .unwrap();
        assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{:?}", outcome.summary);
        assert_eq!(outcome.totals.steps, u64::from(steps) + 1);
        Interrupted { steps, leased: self.take_over(&doomed).await }
    }

    /// A fresh copy of `timeline` without its final answer, taken over: an
    /// execution whose worker died waiting for the model's reply.
    async fn interrupted_before_the_answer(&self, timeline: &[RecordedEvent], totals: &Totals) -> LeasedExecution {
        let mut events: Vec<NewEvent> = timeline
            .iter()
            .filter(|event| event.kind != "status")
            .map(|event| NewEvent { kind: event.kind.clone(), payload: event.payload.clone() })
            .collect();
        let last = events.pop().unwrap();
        assert_eq!(last.kind, "model_reply");
        assert_eq!(events.last().unwrap().kind, "model_request");
        let doomed = self.lease_doomed().await;
        let totals = codexos_worker::journal::store_totals(totals);
        self.store.append_events(&doomed.lease, &events, Some(&totals)).await.unwrap();
        self.take_over(&doomed).await
    }
}

/// What `prepare` in `src/execution.rs` gives the engine, without the
/// checks of the workspace and of the model's key.
fn execution_setup(leased: &LeasedExecution, workspace: &Path, history: Vec<RecordedEvent>) -> ExecutionSetup {
    ExecutionSetup {
        task: leased.execution.task.clone(),
        manifest: AgentManifest::parse(&leased.manifest).unwrap(),
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
        history,
        totals: engine_totals(&leased.execution.totals),
        checkpoints: None,
        policy: None,
    }
}

/// `load_history` of `src/execution.rs`, which is private to the worker.
async fn load_history(store: &Store, leased: &LeasedExecution) -> Vec<RecordedEvent> {
    if leased.last_seq <= EVENTS_OF_A_FRESH_START {
        return Vec::new();
    }
    let timeline = store.timeline(leased.lease.tenant, leased.execution.id).await.unwrap();
    timeline.into_iter().map(|event| RecordedEvent { kind: event.kind, payload: event.payload }).collect()
}

/// One resume of a timeline that ends in its final answer: the time to
/// load it and the time to replay it.
async fn resume(fixture: &Fixture, leased: &LeasedExecution) -> (Duration, Duration) {
    let started = Instant::now();
    let history = load_history(&fixture.store, leased).await;
    let loaded = started.elapsed();
    let setup = execution_setup(leased, &fixture.workspace, history);
    let mut journal =
        StoreJournal { store: fixture.store.clone(), lease: leased.lease.clone(), redactor: Default::default() };
    let outcome = run_with(setup, Some(&NoModel), &NoTool, &mut journal, &NoMemory).await.unwrap();
    let total = started.elapsed();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{:?}", outcome.summary);
    assert_eq!(outcome.summary["answer"], ANSWER);
    (loaded, total - loaded)
}

/// One "first step" resume: the time from the start of the load to the
/// model's call, and whether the new step compacted the conversation.
async fn resume_to_first_step(fixture: &Fixture, leased: &LeasedExecution) -> (Duration, bool) {
    let model = FirstStepModel { called: Mutex::new(None) };
    let started = Instant::now();
    let history = load_history(&fixture.store, leased).await;
    let setup = execution_setup(leased, &fixture.workspace, history);
    let store_journal =
        StoreJournal { store: fixture.store.clone(), lease: leased.lease.clone(), redactor: Default::default() };
    let mut journal = Recording { inner: store_journal, kinds: Vec::new() };
    let outcome = run_with(setup, Some(&model), &NoTool, &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded, "{:?}", outcome.summary);
    let called = model.called.lock().unwrap().expect("the model was called for the new step");
    let before_the_call = journal.kinds.iter().take_while(|kind| **kind != "model_reply").copied().collect::<Vec<_>>();
    assert_eq!(before_the_call.last(), Some(&"model_request"), "{:?}", journal.kinds);
    (called - started, before_the_call.contains(&"compacted"))
}

fn resume_bench(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let fixture = runtime.block_on(Fixture::new());
    let built = Instant::now();
    let timelines: Vec<Interrupted> = runtime.block_on(async {
        let mut timelines = Vec::new();
        for steps in SIZES {
            timelines.push(fixture.interrupted(steps).await);
        }
        timelines
    });
    println!("timelines of {SIZES:?} steps built in {:.1} s", built.elapsed().as_secs_f64());
    for timeline in &timelines {
        let history = runtime.block_on(load_history(&fixture.store, &timeline.leased));
        let bytes: usize = history.iter().map(|event| event.kind.len() + event.payload.to_string().len()).sum();
        let compactions = history.iter().filter(|event| event.kind == "compacted").count();
        println!(
            "resume/{:<5} {} events, {:.2} MiB of kinds and payloads, {} pages of {HISTORY_PAGE}, {compactions} compactions",
            timeline.steps,
            history.len(),
            bytes as f64 / (1024.0 * 1024.0),
            history.len() as i64 / HISTORY_PAGE + 1,
        );
    }

    let mut group = c.benchmark_group("resume");
    group.sampling_mode(SamplingMode::Flat);
    for timeline in &timelines {
        group.bench_with_input(BenchmarkId::new("sqlite", timeline.steps), timeline, |b, timeline| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let (loaded, replayed) = resume(&fixture, &timeline.leased).await;
                        timed += loaded + replayed;
                    }
                    timed
                })
            });
        });
    }
    group.finish();

    println!("{SINGLE_RUNS} more resumes per timeline, in ms:");
    for timeline in &timelines {
        let (mut loads, mut replays, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        runtime.block_on(async {
            for _ in 0..SINGLE_RUNS {
                let (loaded, replayed) = resume(&fixture, &timeline.leased).await;
                loads.push(loaded);
                replays.push(replayed);
                totals.push(loaded + replayed);
            }
        });
        println!(
            "resume/{:<5} whole: p50 {:.2} min {:.2} p95 {:.2} max {:.2}; load p50 {:.2}, replay p50 {:.2}",
            timeline.steps,
            millis(percentile(&mut totals, 50)),
            millis(percentile(&mut totals, 0)),
            millis(percentile(&mut totals, 95)),
            millis(percentile(&mut totals, 100)),
            millis(percentile(&mut loads, 50)),
            millis(percentile(&mut replays, 50)),
        );
    }

    println!("{FIRST_STEP_RUNS} resumes per timeline to the new step's model call, each on a fresh copy, in ms:");
    for timeline in &timelines {
        let mut times = Vec::new();
        let mut compacted = 0;
        runtime.block_on(async {
            let original = load_history(&fixture.store, &timeline.leased).await;
            let totals = engine_totals(&timeline.leased.execution.totals);
            for _ in 0..FIRST_STEP_RUNS {
                let leased = fixture.interrupted_before_the_answer(&original, &totals).await;
                let (time, compaction) = resume_to_first_step(&fixture, &leased).await;
                times.push(time);
                compacted += usize::from(compaction);
            }
        });
        println!(
            "first_step/{:<5} p50 {:.2} min {:.2} max {:.2}; the new step compacted in {compacted} of {FIRST_STEP_RUNS}",
            timeline.steps,
            millis(percentile(&mut times, 50)),
            millis(percentile(&mut times, 0)),
            millis(percentile(&mut times, 100)),
        );
    }

    // No resume wrote to the timelines it measured.
    for timeline in &timelines {
        let after = runtime.block_on(fixture.store.events(
            timeline.leased.lease.tenant,
            timeline.leased.execution.id,
            timeline.leased.last_seq,
            1,
        ));
        assert!(after.unwrap().is_empty(), "a resume wrote to the timeline of {} steps", timeline.steps);
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

criterion_group! {
    name = benches;
    // Flat sampling: a resume of the longest timeline takes tens of
    // milliseconds, so samples are few iterations each.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = resume_bench
}
criterion_main!(benches);
