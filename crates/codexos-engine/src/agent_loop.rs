//! The loop that runs one execution: model → tool calls → each call checked
//! against the allow-list and its schema → run in the sandbox → results back
//! to the model, until the model answers without tool calls, a limit is
//! hit, or something fails for good. Workflow agents run their declared
//! steps through the same tool path.
//!
//! Every step is appended to the journal before the loop goes on, so what
//! the timeline shows is what happened.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use codexos_core::ExecutionStatus;
use codexos_core::settings::ModelPrice;
use codexos_policy::Verdict;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::conversation::{Message, ModelReply, TokenUsage, ToolCall, ToolSpec};
use crate::manifest::{AgentKind, AgentManifest, LlmAgent, ModelSpec, Workflow};
use crate::mcp::{McpSession, McpSettings, McpTool};
use crate::memory::{self, Memory, MemoryTool};
use crate::model::{ModelClient, ModelConfig, ModelError, ModelEvent, ModelRequest};
use crate::replay::{Decision, History, Item, PendingRollback, RecordedEvent, denied_content, result_content};
use crate::timeline::{CheckpointTaken, Journal, JournalError, TimelineEvent, Totals};
use crate::tools::{self, BuiltinTool, SandboxSettings, ToolError, ToolExecution, ToolInvocation};

/// The model an execution talks to: [`ModelClient`] over HTTP, or anything
/// that answers a turn the same way (the engine's benchmark uses an instant
/// one to measure the loop alone).
pub trait Model: Send + Sync {
    fn complete(
        &self,
        request: &ModelRequest<'_>,
        events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> impl Future<Output = Result<ModelReply, ModelError>> + Send;
}

impl Model for ModelClient {
    fn complete(
        &self,
        request: &ModelRequest<'_>,
        events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> impl Future<Output = Result<ModelReply, ModelError>> + Send {
        ModelClient::complete(self, request, events)
    }
}

/// Where tool calls run: [`KernelSandbox`] in production.
pub trait ToolRunner: Send + Sync {
    fn run(
        &self,
        invocation: &ToolInvocation,
        settings: &SandboxSettings,
    ) -> impl Future<Output = Result<ToolExecution, ToolError>> + Send;
}

/// Every tool call in the kernel sandbox (`codexos-sandbox`).
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSandbox;

impl ToolRunner for KernelSandbox {
    fn run(
        &self,
        invocation: &ToolInvocation,
        settings: &SandboxSettings,
    ) -> impl Future<Output = Result<ToolExecution, ToolError>> + Send {
        tools::execute(invocation, settings)
    }
}

/// A pause request that can be withdrawn (unlike a cancellation token).
#[derive(Debug, Clone, Default)]
pub struct PauseSignal(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl PauseSignal {
    pub fn set(&self, requested: bool) {
        self.0.store(requested, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Everything an execution needs, resolved by the worker.
#[derive(Debug)]
pub struct ExecutionSetup {
    pub task: String,
    pub manifest: AgentManifest,
    pub workspace: PathBuf,
    /// The binary that runs the file tools inside the sandbox.
    pub runner: PathBuf,
    /// Host paths that must never be visible to a tool (the data directory).
    pub hidden_paths: Vec<PathBuf>,
    pub allow_missing_protections: bool,
    /// The model's API key, from the environment or a tenant secret.
    pub api_key: Option<SecretString>,
    /// The tenant secrets the manifest's `[secrets]` names, for the tool
    /// calls' environment, and the redactor that keeps every secret the
    /// execution opened off the timeline and away from the model.
    pub secrets: crate::redact::ExecutionSecrets,
    /// The model's price, when the operator configured one.
    pub price: Option<ModelPrice>,
    /// Cancelled when the worker stops: the execution is left to resume.
    pub shutdown: CancellationToken,
    /// Raised while someone asks to pause: the loop stops before its next
    /// model call or tool call, leaving the execution to resume later. A
    /// request withdrawn in time lowers it again.
    pub pause: PauseSignal,
    /// Cancelled when someone cancels the execution: the loop stops at once,
    /// abandoning the model call or tool call in progress.
    pub cancel: CancellationToken,
    /// The timeline recorded so far, when the execution is resumed; the
    /// loop carries on from its last recorded step.
    pub history: Vec<RecordedEvent>,
    /// The totals recorded so far (zero for a fresh start).
    pub totals: Totals,
    /// Where checkpoints of the workspace are kept (a store per tenant), if
    /// they are taken: before every call that can change the workspace.
    pub checkpoints: Option<PathBuf>,
    /// The tenant's policy, asked before every tool call (docs/policy.md);
    /// `None` asks none (tests and benchmarks of the loop alone).
    pub policy: Option<crate::policy::PolicyGate>,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionOutcome {
    pub status: ExecutionStatus,
    /// `answer` (the model's final text), `reason` and `error` as they apply.
    pub summary: serde_json::Value,
    pub totals: Totals,
}

/// Why the loop stopped without an outcome: the execution stays where it
/// is, for this or another worker to pick up.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the worker is shutting down")]
    Shutdown,
    /// Someone asked to pause; the loop stopped between two steps.
    #[error("paused")]
    Paused,
    /// The loop stopped between steps and the execution is to be parked in
    /// `status` (paused after a rollback, or waiting for an approval), with
    /// `events` recorded in the same transaction as the park, so that a
    /// crash cannot leave one without the other.
    #[error("parked as {status}")]
    Park { status: ExecutionStatus, events: Vec<TimelineEvent> },
    /// Someone cancelled the execution during a tool call (internal: the
    /// loop turns it into a `cancelled` outcome).
    #[error("cancelled")]
    Cancelled,
}

/// The share of the context window at which the session is compacted.
const COMPACT_AT: f64 = 0.75;
/// The cap on what the sandbox keeps of one tool call's output.
const TOOL_OUTPUT_KEPT_BYTES: usize = 1024 * 1024;
/// Time for one MCP server to start, initialize and list its tools.
const MCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest message an MCP server may send.
const MCP_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Runs an execution to its end with the real model client and the
/// kernel sandbox.
pub async fn run_execution<J: Journal, M: Memory>(
    setup: ExecutionSetup,
    journal: &mut J,
    memory: &M,
) -> Result<ExecutionOutcome, Interrupted> {
    let client = match &setup.manifest.kind {
        AgentKind::Workflow(_) => None,
        AgentKind::Llm(llm) => match ModelClient::new(model_config(&llm.model, setup.api_key.clone())) {
            Ok(client) => Some(client),
            Err(err) => {
                let error = format!("cannot set up the model client: {err}");
                journal
                    .append(&[TimelineEvent::ModelError { step: 1, error: error.clone() }], &Totals::default())
                    .await?;
                let summary = json!({ "reason": "model_error", "error": error });
                return Ok(ExecutionOutcome { status: ExecutionStatus::Failed, summary, totals: Totals::default() });
            }
        },
    };
    run_with(setup, client.as_ref(), &KernelSandbox, journal, memory).await
}

/// Runs an execution with the given model (for `llm` agents) and tool runner.
pub async fn run_with<Mo: Model, T: ToolRunner, J: Journal, M: Memory>(
    setup: ExecutionSetup,
    model: Option<&Mo>,
    tools: &T,
    journal: &mut J,
    memory: &M,
) -> Result<ExecutionOutcome, Interrupted> {
    let started = Instant::now();
    // A resumed execution gets the whole timeout again: the time it spent
    // waiting for a worker to take it over was not its own.
    let deadline = started + setup.manifest.limits.timeout;
    let kind = setup.manifest.kind.clone();
    let history = History::read(&setup.history, setup.manifest.limits.tool_output_bytes);
    let totals = setup.totals;
    let wall_before = totals.wall_ms;
    let mut clocked = Clocked { inner: journal, started, wall_before };
    let journal = &mut clocked;
    let mut run =
        Run { deadline, totals, setup, tools, memory, mcp: McpSession::default(), decisions: Default::default() };
    let history = match history {
        Ok(history) => history,
        Err(error) => {
            let summary = json!({ "reason": "unreadable_history", "error": format!("cannot resume: {error}") });
            return Ok(ExecutionOutcome { status: ExecutionStatus::Failed, summary, totals: run.totals });
        }
    };
    run.decisions = history.decisions.clone();
    if let Some(rollback) = history.pending_rollback.clone() {
        // Asked for while no worker held the execution: put the workspace
        // back. A rollback then waits (paused) for a resume, the event
        // recorded with the park; a fork, whose workspace was just made,
        // carries on at once (or fails, without a workspace).
        let event = run.roll_back(&rollback).await;
        let failed = matches!(event, TimelineEvent::RollbackFailed { .. });
        if rollback.fork_of.is_none() {
            return Err(Interrupted::Park { status: ExecutionStatus::Paused, events: vec![event] });
        }
        journal.append(std::slice::from_ref(&event), &run.totals).await?;
        if failed {
            let summary = json!({ "reason": "fork_failed", "error": "the fork's workspace could not be made" });
            return Ok(ExecutionOutcome { status: ExecutionStatus::Failed, summary, totals: run.totals });
        }
    }
    let ended = match (&kind, model) {
        (AgentKind::Workflow(workflow), _) => run.workflow(workflow, &history, journal).await,
        (AgentKind::Llm(llm), Some(model)) => run.llm(llm, model, history, journal).await,
        (AgentKind::Llm(_), None) => {
            let error = "no model client for an llm agent".to_owned();
            journal.append(&[TimelineEvent::ModelError { step: 1, error: error.clone() }], &run.totals).await?;
            Ok((ExecutionStatus::Failed, json!({ "reason": "model_error", "error": error })))
        }
    };
    let (status, summary) = match ended {
        Err(Interrupted::Cancelled) => cancelled(),
        other => other?,
    };
    run.totals.wall_ms = wall_before.saturating_add(millis(started.elapsed()));
    Ok(ExecutionOutcome { status, summary, totals: run.totals })
}

/// Keeps the recorded wall time current: every append carries the time
/// spent so far, so an execution parked (paused, waiting for an approval)
/// or taken over after a crash has its time counted up to its last step,
/// not only when it ends.
struct Clocked<'a, J> {
    inner: &'a mut J,
    started: Instant,
    wall_before: u64,
}

impl<J: Journal> Journal for Clocked<'_, J> {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        let totals = Totals { wall_ms: self.wall_before.saturating_add(millis(self.started.elapsed())), ..*totals };
        self.inner.append(events, &totals).await
    }
}

struct Run<'a, T, M> {
    setup: ExecutionSetup,
    deadline: Instant,
    totals: Totals,
    tools: &'a T,
    memory: &'a M,
    /// The agent's MCP servers, connected for an llm execution.
    mcp: McpSession,
    /// Approvals decided so far, by call id.
    decisions: std::collections::HashMap<String, Decision>,
}

type Ended = Result<(ExecutionStatus, serde_json::Value), Interrupted>;

/// What one tool call came to, for the model and the loop.
struct Answered {
    content: String,
    is_error: bool,
}

impl<T: ToolRunner, M: Memory> Run<'_, T, M> {
    async fn workflow<J: Journal>(&mut self, workflow: &Workflow, history: &History, journal: &mut J) -> Ended {
        let mut failed_steps = Vec::new();
        for (index, step) in workflow.steps.iter().enumerate() {
            let number = index as u32 + 1;
            let call_id = format!("step-{number}");
            let answered = match history.answers.get(&call_id) {
                // Recorded before an interruption: not run again.
                Some(answer) => Answered { content: answer.content.clone(), is_error: answer.is_error },
                None => {
                    if let Some(ended) = self.check_limits(number, journal).await? {
                        return Ok(ended);
                    }
                    self.restore_before_rerun(number, &call_id, history, journal).await?;
                    let call = ToolCall { id: call_id, name: step.tool.clone(), arguments: step.arguments.to_string() };
                    let answered = self.tool_call(number, &call, journal).await?;
                    // Counted once it ran: a step parked for an approval is not.
                    self.totals.steps += 1;
                    answered
                }
            };
            if answered.is_error {
                failed_steps.push(step.name.clone());
                if !step.continue_on_error {
                    return Ok((
                        ExecutionStatus::Failed,
                        json!({ "reason": "step_failed", "error": format!("step {number} ({}) failed", step.name) }),
                    ));
                }
            }
        }
        if failed_steps.is_empty() {
            Ok((ExecutionStatus::Succeeded, json!({ "reason": "completed", "steps": workflow.steps.len() })))
        } else {
            Ok((
                ExecutionStatus::Failed,
                json!({ "reason": "steps_failed", "error": format!("steps failed: {}", failed_steps.join(", ")) }),
            ))
        }
    }

    async fn llm<Mo: Model, J: Journal>(
        &mut self,
        llm: &LlmAgent,
        client: &Mo,
        history: History,
        journal: &mut J,
    ) -> Ended {
        // MCP servers are connected for the whole execution and closed at
        // its end, however it ends.
        if !self.setup.manifest.mcp.is_empty() {
            let settings = self.mcp_settings();
            let connected = tokio::select! {
                connected = McpSession::connect(&self.setup.manifest.mcp, &settings) => connected,
                () = self.setup.shutdown.cancelled() => return Err(Interrupted::Shutdown),
                () = self.setup.cancel.cancelled() => return Ok(cancelled()),
            };
            match connected {
                Ok(session) => {
                    let events: Vec<TimelineEvent> =
                        session.connected().iter().cloned().map(TimelineEvent::McpConnected).collect();
                    self.mcp = session;
                    if let Err(err) = journal.append(&events, &self.totals).await {
                        // Not recorded: the journal just failed.
                        let _ = self.close_mcp(None::<&mut J>).await;
                        return Err(err.into());
                    }
                }
                Err(err) => {
                    // A server's failure quotes its stderr, which may hold a secret.
                    let redactor = &self.setup.secrets.redactor;
                    let error = redactor.redact(&err.reason);
                    let event = TimelineEvent::McpFailed { server: err.server.to_string(), error };
                    journal.append(&[event], &self.totals).await?;
                    let summary = json!({ "reason": "mcp_error", "error": redactor.redact(&err.to_string()) });
                    return Ok((ExecutionStatus::Failed, summary));
                }
            }
        }
        let ended = self.llm_turns(llm, client, history, journal).await;
        // Closing is recorded unless the journal itself failed.
        let recorded = if matches!(ended, Err(Interrupted::Journal(_))) { None } else { Some(&mut *journal) };
        let closed = self.close_mcp(recorded).await;
        match (ended, closed) {
            (Ok(_), Err(err)) => Err(err.into()),
            (ended, _) => ended,
        }
    }

    /// Closes the MCP servers, adds what the sandbox accounted for them to
    /// the totals and, with a journal, records how each ended.
    async fn close_mcp<J: Journal>(&mut self, journal: Option<&mut J>) -> Result<(), JournalError> {
        let session = std::mem::take(&mut self.mcp);
        let closed = session.close().await;
        for server in &closed {
            if let Some(usage) = &server.usage {
                self.totals.cpu_ms += millis(usage.cpu_time);
                self.totals.peak_memory_bytes = self.totals.peak_memory_bytes.max(usage.peak_memory_bytes);
            }
        }
        match journal {
            Some(journal) if !closed.is_empty() => {
                let events: Vec<TimelineEvent> = closed.into_iter().map(TimelineEvent::McpClosed).collect();
                journal.append(&events, &self.totals).await
            }
            _ => Ok(()),
        }
    }

    /// Where the MCP servers run: the execution's sandbox, for what is left
    /// of its time (and a little more, so that closing is orderly) and CPU.
    fn mcp_settings(&self) -> McpSettings {
        let limits = &self.setup.manifest.limits;
        let cpu_left_ms = (limits.cpu_seconds * 1000).saturating_sub(self.totals.cpu_ms);
        let wall_left = self.deadline.saturating_duration_since(Instant::now());
        McpSettings {
            workspace: self.setup.workspace.clone(),
            limits: codexos_sandbox::Limits {
                cpu_seconds: Some(cpu_left_ms.div_ceil(1000).max(1)),
                memory_bytes: Some(limits.memory_bytes),
                pids: Some(limits.pids),
                timeout: wall_left + Duration::from_secs(30),
                ..codexos_sandbox::Limits::default()
            },
            network: limits.network.clone(),
            hidden_paths: self.setup.hidden_paths.clone(),
            read_only_paths: Vec::new(),
            env: self.setup.secrets.env.clone(),
            allow_missing_protections: self.setup.allow_missing_protections,
            connect_timeout: MCP_CONNECT_TIMEOUT.min(wall_left).max(Duration::from_secs(1)),
            max_message_bytes: MCP_MESSAGE_BYTES,
            output_limit_bytes: TOOL_OUTPUT_KEPT_BYTES,
        }
    }

    async fn llm_turns<Mo: Model, J: Journal>(
        &mut self,
        llm: &LlmAgent,
        client: &Mo,
        history: History,
        journal: &mut J,
    ) -> Ended {
        let mut specs: Vec<ToolSpec> = self.setup.manifest.tools.iter().filter_map(|name| tool_spec(name)).collect();
        let manifest = &self.setup.manifest;
        specs.extend(
            self.mcp.tools().iter().filter(|tool| manifest.allows(&tool.qualified_name)).map(|tool| tool.spec.clone()),
        );
        let system = llm.instructions.clone();
        let mut messages = vec![Message::User { content: self.setup.task.clone() }];
        let mut step = 0u32;
        // Replay: the conversation as the recorded turns and answers built it;
        // calls of the last turn without a recorded answer run now.
        for item in &history.items {
            let turn = match item {
                Item::Instruction(text) => {
                    messages.push(Message::User { content: text.clone() });
                    continue;
                }
                Item::Turn(turn) => turn,
            };
            step = turn.step;
            messages.push(Message::Assistant { content: turn.content.clone(), tool_calls: turn.tool_calls.clone() });
            if turn.tool_calls.is_empty() {
                return Ok((
                    ExecutionStatus::Succeeded,
                    json!({ "reason": "completed", "answer": turn.content.clone().unwrap_or_default() }),
                ));
            }
            for call in &turn.tool_calls {
                let answered = match history.answers.get(&call.id) {
                    Some(answer) => Answered { content: answer.content.clone(), is_error: answer.is_error },
                    None if self.setup.pause.is_requested() => return Err(Interrupted::Paused),
                    None => {
                        self.restore_before_rerun(step, &call.id, &history, journal).await?;
                        self.tool_call(step, call, journal).await?
                    }
                };
                messages.push(Message::Tool {
                    call_id: call.id.clone(),
                    content: answered.content,
                    is_error: answered.is_error,
                });
            }
        }
        loop {
            step += 1;
            if let Some(ended) = self.check_limits(step, journal).await? {
                return Ok(ended);
            }
            self.totals.steps += 1;
            self.compact_if_needed(step, &system, &mut messages, &specs, llm.model.context_window, journal).await?;
            let estimated_tokens = estimate_tokens(&system, &messages, &specs);
            let request_event = TimelineEvent::ModelRequest {
                step,
                model: llm.model.name.clone(),
                messages: messages.len(),
                tools: specs.len(),
                estimated_tokens,
            };
            journal.append(&[request_event], &self.totals).await?;

            let called = Instant::now();
            // Retries are recorded as they happen, so the live timeline shows
            // a model that is being retried rather than silence.
            let (retry_sender, mut retry_receiver) = tokio::sync::mpsc::unbounded_channel();
            let deadline = tokio::time::Instant::from_std(self.deadline);
            let reply = {
                let request = ModelRequest { system: &system, messages: &messages, tools: &specs };
                let mut on_event = move |event: ModelEvent| {
                    if let ModelEvent::Retry { attempt, reason, delay } = event {
                        let retry = TimelineEvent::ModelRetry { step, attempt, reason, delay_ms: millis(delay) };
                        let _ = retry_sender.send(retry);
                    }
                };
                let call = client.complete(&request, &mut on_event);
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        reply = &mut call => break Some(reply),
                        Some(retry) = retry_receiver.recv() => journal.append(&[retry], &self.totals).await?,
                        () = tokio::time::sleep_until(deadline) => break None,
                        () = self.setup.shutdown.cancelled() => return Err(Interrupted::Shutdown),
                        () = self.setup.cancel.cancelled() => return Ok(cancelled()),
                    }
                }
            };
            while let Ok(retry) = retry_receiver.try_recv() {
                journal.append(&[retry], &self.totals).await?;
            }
            let reply = match reply {
                None => {
                    let detail = "the execution's time ran out waiting for the model";
                    return self.limit_hit("timeout", detail, journal).await;
                }
                Some(Err(err)) => {
                    let error = err.to_string();
                    journal.append(&[TimelineEvent::ModelError { step, error: error.clone() }], &self.totals).await?;
                    return Ok((ExecutionStatus::Failed, json!({ "reason": "model_error", "error": error })));
                }
                Some(Ok(reply)) => reply,
            };
            let cost = cost_microdollars(self.setup.price, reply.usage);
            self.totals.input_tokens += reply.usage.input_tokens;
            self.totals.output_tokens += reply.usage.output_tokens;
            self.totals.cost_microdollars = self.totals.cost_microdollars.saturating_add(cost);
            let reply_event = TimelineEvent::ModelReply {
                step,
                content: reply.content.clone(),
                tool_calls: reply.tool_calls.clone(),
                usage: reply.usage,
                cost_microdollars: cost,
                stop_reason: reply.stop_reason.clone(),
                duration_ms: millis(called.elapsed()),
            };
            journal.append(&[reply_event], &self.totals).await?;
            messages.push(Message::Assistant { content: reply.content.clone(), tool_calls: reply.tool_calls.clone() });
            if reply.tool_calls.is_empty() {
                return Ok((
                    ExecutionStatus::Succeeded,
                    json!({ "reason": "completed", "answer": reply.content.unwrap_or_default() }),
                ));
            }
            // Every call is answered under its own id, even when an earlier
            // one in the same turn failed: the model needs all the answers.
            // A pause between two calls leaves the rest to the resumed run.
            for (index, call) in reply.tool_calls.iter().enumerate() {
                if self.setup.pause.is_requested() {
                    return Err(Interrupted::Paused);
                }
                if Instant::now() >= self.deadline {
                    // The calls not started are recorded as such, under their ids.
                    let reason = "not run: the execution's time ran out".to_owned();
                    let skipped: Vec<TimelineEvent> = reply.tool_calls[index..]
                        .iter()
                        .map(|call| TimelineEvent::ToolDenied {
                            step,
                            call_id: call.id.clone(),
                            tool: call.name.clone(),
                            reason: reason.clone(),
                            arguments: call.arguments.chars().take(4096).collect(),
                            by: None,
                        })
                        .collect();
                    journal.append(&skipped, &self.totals).await?;
                    let detail = "the execution ran out of time in the middle of a turn";
                    return self.limit_hit("timeout", detail, journal).await;
                }
                let answered = self.tool_call(step, call, journal).await?;
                messages.push(Message::Tool {
                    call_id: call.id.clone(),
                    content: answered.content,
                    is_error: answered.is_error,
                });
            }
        }
    }

    /// Checks one call against the allow-list and the tool's schema, runs it
    /// in the sandbox, records it, and returns what the model is told.
    async fn tool_call<J: Journal>(
        &mut self,
        step: u32,
        call: &ToolCall,
        journal: &mut J,
    ) -> Result<Answered, Interrupted> {
        let denied = |reason: String| TimelineEvent::ToolDenied {
            step,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            reason,
            arguments: call.arguments.chars().take(4096).collect(),
            by: None,
        };
        if let Some(tool) = self.mcp.find(&call.name).cloned() {
            if self.setup.manifest.allows(&tool.qualified_name)
                && let Some(answered) = self.gate(step, call, &tool.qualified_name, journal).await?
            {
                return Ok(answered);
            }
            return self.mcp_call(step, call, &tool, journal).await;
        }
        let allowed = &self.setup.manifest.tools;
        if !self.setup.manifest.allows(&call.name) || tool_spec(&call.name).is_none() {
            let reason =
                format!("tool '{}' is not allowed for this agent (allowed: {})", call.name, allowed.join(", "));
            journal.append(&[denied(reason.clone())], &self.totals).await?;
            return Ok(Answered { content: format!("error: {reason}"), is_error: true });
        }
        if let Some(memory_tool) = MemoryTool::from_name(&call.name) {
            if let Some(answered) = self.gate(step, call, &call.name, journal).await? {
                return Ok(answered);
            }
            return self.memory_call(step, call, memory_tool, journal).await;
        }
        let Some(builtin) = BuiltinTool::from_name(&call.name) else {
            let reason = format!("tool '{}' has no runner", call.name);
            journal.append(&[denied(reason.clone())], &self.totals).await?;
            return Ok(Answered { content: denied_content(&reason), is_error: true });
        };
        let invocation = match tools::parse_call(builtin, &call.arguments) {
            Ok(invocation) => invocation,
            Err(err) => {
                let reason = format!("invalid arguments for '{}': {err}", call.name);
                journal.append(&[denied(reason.clone())], &self.totals).await?;
                return Ok(Answered { content: denied_content(&reason), is_error: true });
            }
        };
        // A built-in tool's call is put to the policy and to a person only
        // once its arguments are well-formed.
        if let Some(answered) = self.gate(step, call, &call.name, journal).await? {
            return Ok(answered);
        }
        let checkpoint = match builtin {
            BuiltinTool::Shell | BuiltinTool::WriteFile | BuiltinTool::ApplyPatch => self.checkpoint().await,
            _ => None,
        };
        let call_event = TimelineEvent::ToolCall {
            step,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: invocation.arguments.clone(),
            checkpoint,
        };
        journal.append(&[call_event], &self.totals).await?;

        let sandbox = self.sandbox_settings();
        let executed = tokio::select! {
            executed = self.tools.run(&invocation, &sandbox) => executed,
            () = self.setup.shutdown.cancelled() => return Err(Interrupted::Shutdown),
            () = self.setup.cancel.cancelled() => return Err(Interrupted::Cancelled),
        };
        let limits = &self.setup.manifest.limits;
        let event = match executed {
            Ok(execution) => {
                let cpu_ms = millis(execution.usage.cpu_time);
                self.totals.cpu_ms += cpu_ms;
                self.totals.peak_memory_bytes = self.totals.peak_memory_bytes.max(execution.usage.peak_memory_bytes);
                let for_model = result_content(&execution.output, limits.tool_output_bytes);
                let truncated_for_model = for_model.len() != execution.output.len();
                let answered = Answered { content: for_model, is_error: execution.is_error };
                let event = TimelineEvent::ToolResult {
                    step,
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    is_error: execution.is_error,
                    exit_code: execution.exit_code,
                    output: execution.output,
                    truncated_for_model,
                    cpu_ms,
                    peak_memory_bytes: execution.usage.peak_memory_bytes,
                    wall_ms: millis(execution.usage.wall_time),
                    violations: execution.violations,
                    network: execution.network,
                    absent_protections: execution.absent_protections,
                };
                journal.append(&[event], &self.totals).await?;
                return Ok(answered);
            }
            Err(err) => err.to_string(),
        };
        // The sandbox could not run the call at all (e.g. a protection the
        // host lacks): recorded as a failed result, answered as an error.
        let result = TimelineEvent::ToolResult {
            step,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            is_error: true,
            exit_code: None,
            output: format!("error: the sandbox could not run this call: {event}"),
            truncated_for_model: false,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            wall_ms: 0,
            violations: Vec::new(),
            network: Vec::new(),
            absent_protections: Vec::new(),
        };
        journal.append(&[result], &self.totals).await?;
        let output = format!("error: the sandbox could not run this call: {event}");
        let content = result_content(&output, self.setup.manifest.limits.tool_output_bytes);
        Ok(Answered { content, is_error: true })
    }

    /// A call of an MCP server's tool (the model calls it `server__tool`):
    /// checked against the allow-list as `server.tool`, its arguments must
    /// be a JSON object (the server checks them against its schema), and it
    /// is recorded like any call, under `server.tool`.
    async fn mcp_call<J: Journal>(
        &mut self,
        step: u32,
        call: &ToolCall,
        tool: &McpTool,
        journal: &mut J,
    ) -> Result<Answered, Interrupted> {
        let denied = |reason: String| TimelineEvent::ToolDenied {
            step,
            call_id: call.id.clone(),
            tool: tool.qualified_name.clone(),
            reason,
            arguments: call.arguments.chars().take(4096).collect(),
            by: None,
        };
        let arguments = if call.arguments.trim().is_empty() {
            Ok(serde_json::Map::new())
        } else {
            match serde_json::from_str::<serde_json::Value>(&call.arguments) {
                Ok(serde_json::Value::Object(arguments)) => Ok(arguments),
                Ok(_) => Err("arguments must be a JSON object".to_owned()),
                Err(err) => Err(format!("arguments are not valid JSON: {err}")),
            }
        };
        let arguments = match arguments {
            _ if !self.setup.manifest.allows(&tool.qualified_name) => {
                let allowed = self.setup.manifest.tools.join(", ");
                Err(format!("tool '{}' is not allowed for this agent (allowed: {allowed})", tool.qualified_name))
            }
            Ok(arguments) => Ok(arguments),
            Err(err) => Err(format!("invalid arguments for '{}': {err}", tool.qualified_name)),
        };
        let arguments = match arguments {
            Ok(arguments) => arguments,
            Err(reason) => {
                journal.append(&[denied(reason.clone())], &self.totals).await?;
                return Ok(Answered { content: denied_content(&reason), is_error: true });
            }
        };
        let call_event = TimelineEvent::ToolCall {
            step,
            call_id: call.id.clone(),
            tool: tool.qualified_name.clone(),
            arguments: serde_json::Value::Object(arguments.clone()),
            checkpoint: None,
        };
        journal.append(&[call_event], &self.totals).await?;
        let limits = &self.setup.manifest.limits;
        let wall_left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = limits.tool_timeout.min(wall_left).max(Duration::from_secs(1));
        let started = Instant::now();
        let result = tokio::select! {
            result = self.mcp.call(tool, arguments, timeout) => result,
            () = self.setup.shutdown.cancelled() => return Err(Interrupted::Shutdown),
            () = self.setup.cancel.cancelled() => return Err(Interrupted::Cancelled),
        };
        let output = self.setup.secrets.redactor.redact(&result.output);
        let content = result_content(&output, limits.tool_output_bytes);
        let event = TimelineEvent::ToolResult {
            step,
            call_id: call.id.clone(),
            tool: tool.qualified_name.clone(),
            is_error: result.is_error,
            exit_code: None,
            truncated_for_model: content.len() != output.len(),
            output,
            // The server's own CPU and memory are accounted when it closes.
            cpu_ms: 0,
            peak_memory_bytes: 0,
            wall_ms: millis(started.elapsed()),
            violations: Vec::new(),
            network: Vec::new(),
            absent_protections: Vec::new(),
        };
        journal.append(&[event], &self.totals).await?;
        Ok(Answered { content, is_error: result.is_error })
    }

    /// The tenant's policy and the manifest's `[approval]` on one call, the
    /// strictest winning: an answer when the call is not to run (the
    /// policy or a person denied it), `Err(Park)` while it waits for a
    /// person, `None` when it runs.
    async fn gate<J: Journal>(
        &mut self,
        step: u32,
        call: &ToolCall,
        tool: &str,
        journal: &mut J,
    ) -> Result<Option<Answered>, Interrupted> {
        let arguments: serde_json::Value = serde_json::from_str(&call.arguments).unwrap_or_default();
        let mut policy_asks = None;
        if let Some(gate) = &self.setup.policy {
            let decision = gate.tool_call(tool, &arguments, step).await;
            tracing::debug!(%tool, step, verdict = %decision.verdict, "policy decision");
            match decision.verdict {
                Verdict::Allow => {}
                Verdict::Ask => {
                    policy_asks = Some(format!("{} asks: {}", gate.source.describe(), decision.reasons_text()))
                }
                Verdict::Deny => {
                    let reason = format!("denied by {}: {}", gate.source.describe(), decision.reasons_text());
                    return self.refuse(step, call, tool, reason, Some("policy"), journal).await.map(Some);
                }
            }
        }
        self.approval_gate(step, call, tool, &arguments, policy_asks, journal).await
    }

    /// Holds a call that needs a person's approval (by the manifest's
    /// `[approval]`, or because the policy asks): runs on (`None`) once it
    /// was approved, answers it as denied, or parks the execution with the
    /// request (recorded together with the park, by the worker).
    async fn approval_gate<J: Journal>(
        &mut self,
        step: u32,
        call: &ToolCall,
        tool: &str,
        arguments: &serde_json::Value,
        policy_asks: Option<String>,
        journal: &mut J,
    ) -> Result<Option<Answered>, Interrupted> {
        let manifest_asks = self.setup.manifest.approval.needs_approval(tool, arguments);
        // A person's denial stands even if nothing asks any more (a newer
        // policy, a rule that changed its mind): denied calls never run.
        let denied = matches!(self.decisions.get(&call.id), Some(Decision { approved: false, .. }));
        let (why, by) = match (manifest_asks, policy_asks) {
            (None, None) if !denied => return Ok(None),
            (None, None) => (String::new(), None),
            (Some(manifest), None) => (manifest, None),
            (None, Some(policy)) => (policy, Some("policy".to_owned())),
            (Some(manifest), Some(policy)) => (format!("{manifest}; {policy}"), Some("policy".to_owned())),
        };
        match self.decisions.get(&call.id) {
            Some(Decision { approved: true, .. }) => Ok(None),
            Some(Decision { approved: false, reason, by }) => {
                let reason = match reason {
                    Some(reason) => format!("denied by {by}: {reason}"),
                    None => format!("denied by {by}"),
                };
                self.refuse(step, call, tool, reason, None, journal).await.map(Some)
            }
            None => {
                // Shown whole: a person approves exactly what will run.
                let request = TimelineEvent::ApprovalRequested {
                    step,
                    call_id: call.id.clone(),
                    tool: tool.to_owned(),
                    arguments: call.arguments.clone(),
                    reason: why,
                    by,
                };
                Err(Interrupted::Park { status: ExecutionStatus::WaitingApproval, events: vec![request] })
            }
        }
    }

    /// Records a call refused before it ran (`tool_denied`; `by` names who
    /// refused when it was not the manifest's rules or a person) and
    /// answers it to the model as an error.
    async fn refuse<J: Journal>(
        &self,
        step: u32,
        call: &ToolCall,
        tool: &str,
        reason: String,
        by: Option<&str>,
        journal: &mut J,
    ) -> Result<Answered, Interrupted> {
        let content = denied_content(&reason);
        let event = TimelineEvent::ToolDenied {
            step,
            call_id: call.id.clone(),
            tool: tool.to_owned(),
            reason,
            arguments: call.arguments.chars().take(4096).collect(),
            by: by.map(str::to_owned),
        };
        journal.append(&[event], &self.totals).await?;
        Ok(Answered { content, is_error: true })
    }

    /// A call of a memory tool: checked like any call, served by the memory.
    async fn memory_call<J: Journal>(
        &mut self,
        step: u32,
        call: &ToolCall,
        tool: MemoryTool,
        journal: &mut J,
    ) -> Result<Answered, Interrupted> {
        let parsed = match memory::parse_call(tool, &call.arguments) {
            Ok(parsed) => parsed,
            Err(err) => {
                let reason = format!("invalid arguments for '{}': {err}", call.name);
                return self.refuse(step, call, &call.name, reason, None, journal).await;
            }
        };
        let arguments = serde_json::from_str(&call.arguments).unwrap_or_default();
        let call_event = TimelineEvent::ToolCall {
            step,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments,
            checkpoint: None,
        };
        journal.append(&[call_event], &self.totals).await?;
        let started = Instant::now();
        let (output, is_error) = memory::perform(self.memory, &parsed).await;
        let output = self.setup.secrets.redactor.redact(&output);
        let content = result_content(&output, self.setup.manifest.limits.tool_output_bytes);
        let result = TimelineEvent::ToolResult {
            step,
            call_id: call.id.clone(),
            tool: call.name.clone(),
            is_error,
            exit_code: None,
            truncated_for_model: content.len() != output.len(),
            output,
            cpu_ms: 0,
            peak_memory_bytes: 0,
            wall_ms: millis(started.elapsed()),
            violations: Vec::new(),
            network: Vec::new(),
            absent_protections: Vec::new(),
        };
        journal.append(&[result], &self.totals).await?;
        Ok(Answered { content, is_error })
    }

    /// A checkpoint of the workspace, when the execution keeps them. A
    /// checkpoint that fails does not stop the call: the event says why.
    async fn checkpoint(&self) -> Option<CheckpointTaken> {
        let store_dir = self.setup.checkpoints.clone()?;
        let workspace = self.setup.workspace.clone();
        let started = Instant::now();
        let taken = tokio::task::spawn_blocking(move || {
            codexos_checkpoint::Store::open(&store_dir).and_then(|store| store.snapshot(&workspace))
        })
        .await;
        let duration_ms = millis(started.elapsed());
        Some(match taken {
            Ok(Ok(snapshot)) => CheckpointTaken {
                id: Some(snapshot.checkpoint.id.to_string()),
                added_bytes: snapshot.checkpoint.added_bytes,
                workspace_bytes: snapshot.checkpoint.logical_bytes,
                duration_ms,
                error: None,
            },
            Ok(Err(err)) => CheckpointTaken { duration_ms, error: Some(err.to_string()), ..CheckpointTaken::default() },
            Err(_) => CheckpointTaken {
                duration_ms,
                error: Some("the checkpoint thread ended abnormally".to_owned()),
                ..CheckpointTaken::default()
            },
        })
    }

    /// Before an interrupted call runs again: the workspace goes back to the
    /// checkpoint taken before it, so the call's partial effects are undone
    /// and the call runs on what it first saw.
    async fn restore_before_rerun<J: Journal>(
        &mut self,
        step: u32,
        call_id: &str,
        history: &History,
        journal: &mut J,
    ) -> Result<(), Interrupted> {
        let (Some(store_dir), Some(checkpoint)) = (self.setup.checkpoints.clone(), history.checkpoints.get(call_id))
        else {
            return Ok(());
        };
        let Ok(id) = codexos_checkpoint::CheckpointId::parse(checkpoint) else { return Ok(()) };
        let workspace = self.setup.workspace.clone();
        let restored = tokio::task::spawn_blocking(move || {
            codexos_checkpoint::Store::open(&store_dir).and_then(|store| store.restore(&id, &workspace))
        })
        .await;
        match restored {
            Ok(Ok(report)) => {
                let event = TimelineEvent::WorkspaceRestored {
                    step,
                    call_id: call_id.to_owned(),
                    checkpoint: checkpoint.clone(),
                    files_written: report.files_written + report.symlinks_written,
                    removed: report.removed,
                };
                journal.append(&[event], &self.totals).await?;
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot restore the checkpoint before running a call again"),
            Err(_) => tracing::warn!("the restore thread ended abnormally"),
        }
        Ok(())
    }

    /// Carries out a rollback, or makes a fork's workspace, and returns the
    /// event saying how it went. A rollback first checkpoints the workspace
    /// as it is, so that the rollback itself can be undone (`undo_checkpoint`).
    /// Without a checkpoint for the step, nothing changed the workspace from
    /// that step on. A failure leaves the workspace as it was and is
    /// reported as `rollback_failed`; the session is then not truncated.
    async fn roll_back(&mut self, rollback: &PendingRollback) -> TimelineEvent {
        let store_dir = self.setup.checkpoints.clone();
        let workspace = self.setup.workspace.clone();
        let (checkpoint, fork_of) = (rollback.checkpoint.clone(), rollback.fork_of.clone());
        type Restored = (Option<codexos_checkpoint::RestoreReport>, Option<String>);
        let work = move || -> Result<Restored, String> {
            let open = |dir: &std::path::Path| codexos_checkpoint::Store::open(dir).map_err(|err| err.to_string());
            let parse = |id: &str| codexos_checkpoint::CheckpointId::parse(id).map_err(|err| err.to_string());
            match (store_dir, checkpoint, fork_of) {
                (_, None, None) => Ok((None, None)),
                (None, _, _) => Err("this worker keeps no checkpoints".to_owned()),
                (Some(dir), Some(checkpoint), None) => {
                    let store = open(&dir)?;
                    let undo = store
                        .snapshot(&workspace)
                        .map_err(|err| format!("cannot checkpoint the workspace first: {err}"))?;
                    let report = store.restore(&parse(&checkpoint)?, &workspace).map_err(|err| err.to_string())?;
                    Ok((Some(report), Some(undo.checkpoint.id.to_string())))
                }
                (Some(dir), Some(checkpoint), Some(_)) => {
                    let report = make_fork_workspace(&open(&dir)?, &parse(&checkpoint)?, &workspace)?;
                    Ok((Some(report), None))
                }
                // Nothing changed the parent's workspace from that step on:
                // the fork starts from a copy of it as it is.
                (Some(dir), None, Some(parent)) => {
                    let store = open(&dir)?;
                    let snapshot = store.snapshot(&parent).map_err(|err| err.to_string())?;
                    let report = make_fork_workspace(&store, &snapshot.checkpoint.id, &workspace)?;
                    Ok((Some(report), None))
                }
            }
        };
        let done = tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|_| Err("the restore thread ended abnormally".to_owned()));
        match done {
            Ok((report, undo_checkpoint)) => TimelineEvent::RolledBack {
                to_step: rollback.to_step,
                checkpoint: rollback.checkpoint.clone(),
                undo_checkpoint,
                files_written: report.as_ref().map_or(0, |report| report.files_written + report.symlinks_written),
                removed: report.as_ref().map_or(0, |report| report.removed),
            },
            Err(error) => TimelineEvent::RollbackFailed { to_step: rollback.to_step, error },
        }
    }

    /// The sandbox for the next tool call: the manifest's limits, with the
    /// execution's remaining CPU and wall-clock budgets as ceilings.
    fn sandbox_settings(&self) -> SandboxSettings {
        let limits = &self.setup.manifest.limits;
        let cpu_left_ms = (limits.cpu_seconds * 1000).saturating_sub(self.totals.cpu_ms);
        let wall_left = self.deadline.saturating_duration_since(Instant::now());
        SandboxSettings {
            workspace: self.setup.workspace.clone(),
            runner: self.setup.runner.clone(),
            limits: codexos_sandbox::Limits {
                cpu_seconds: Some(cpu_left_ms.div_ceil(1000).max(1)),
                memory_bytes: Some(limits.memory_bytes),
                pids: Some(limits.pids),
                timeout: limits.tool_timeout.min(wall_left).max(Duration::from_secs(1)),
                ..codexos_sandbox::Limits::default()
            },
            network: limits.network.clone(),
            hidden_paths: self.setup.hidden_paths.clone(),
            allow_missing_protections: self.setup.allow_missing_protections,
            output_limit_bytes: TOOL_OUTPUT_KEPT_BYTES,
            env: self.setup.secrets.env.clone(),
            redactor: self.setup.secrets.redactor.clone(),
        }
    }

    /// Stops the execution when a limit of the manifest is reached.
    async fn check_limits<J: Journal>(
        &mut self,
        step: u32,
        journal: &mut J,
    ) -> Result<Option<(ExecutionStatus, serde_json::Value)>, Interrupted> {
        if self.setup.shutdown.is_cancelled() {
            return Err(Interrupted::Shutdown);
        }
        if self.setup.cancel.is_cancelled() {
            return Ok(Some(cancelled()));
        }
        if self.setup.pause.is_requested() {
            return Err(Interrupted::Paused);
        }
        if !self.setup.workspace.is_dir() {
            // Deleted (or unmounted) under the execution: nothing more can run.
            let error = format!("the workspace {} is gone", self.setup.workspace.display());
            return Ok(Some((ExecutionStatus::Failed, json!({ "reason": "workspace_gone", "error": error }))));
        }
        let limits = &self.setup.manifest.limits;
        let hit = if step > limits.max_steps {
            Some(("max_steps", format!("the agent used all of its {} steps", limits.max_steps)))
        } else if Instant::now() >= self.deadline {
            Some((
                "timeout",
                format!("the execution ran past its {} limit", humantime::format_duration(limits.timeout)),
            ))
        } else if self.totals.cpu_ms >= limits.cpu_seconds * 1000 {
            Some(("cpu", format!("the tool calls used all of the {} CPU seconds", limits.cpu_seconds)))
        } else {
            None
        };
        match hit {
            Some((limit, detail)) => Ok(Some(self.limit_hit(limit, &detail, journal).await?)),
            None => Ok(None),
        }
    }

    async fn limit_hit<J: Journal>(
        &mut self,
        limit: &str,
        detail: &str,
        journal: &mut J,
    ) -> Result<(ExecutionStatus, serde_json::Value), Interrupted> {
        let event = TimelineEvent::LimitHit { limit: limit.to_owned(), detail: detail.to_owned() };
        journal.append(&[event], &self.totals).await?;
        Ok((ExecutionStatus::Failed, json!({ "reason": "limit_hit", "limit": limit, "error": detail })))
    }

    /// Keeps the session within the model's context: once the estimate
    /// passes `COMPACT_AT` of the window, the outputs of earlier tool calls
    /// are replaced by a note (they stay whole in the event log). The last
    /// turn's results are kept, since the model is about to read them.
    async fn compact_if_needed<J: Journal>(
        &mut self,
        step: u32,
        system: &str,
        messages: &mut [Message],
        specs: &[ToolSpec],
        context_window: u64,
        journal: &mut J,
    ) -> Result<(), Interrupted> {
        let before = estimate_tokens(system, messages, specs);
        if (before as f64) < context_window as f64 * COMPACT_AT {
            return Ok(());
        }
        let last_assistant = messages.iter().rposition(|message| matches!(message, Message::Assistant { .. }));
        let mut elided = 0;
        for (index, message) in messages.iter_mut().enumerate() {
            if Some(index) >= last_assistant {
                break;
            }
            if let Message::Tool { content, .. } = message
                && !content.starts_with("[elided")
            {
                *content =
                    format!("[elided: {} bytes of output from an earlier step, kept in the event log]", content.len());
                elided += 1;
            }
        }
        if elided > 0 {
            let after = estimate_tokens(system, messages, specs);
            let event = TimelineEvent::Compacted {
                step,
                elided_results: elided,
                estimated_tokens_before: before,
                estimated_tokens_after: after,
            };
            journal.append(&[event], &self.totals).await?;
        }
        Ok(())
    }
}

/// How a cancelled execution ends.
fn cancelled() -> (ExecutionStatus, serde_json::Value) {
    (ExecutionStatus::Cancelled, json!({ "reason": "cancelled", "error": "cancelled while running" }))
}

/// The spec of a tool by name: built-in or memory.
fn tool_spec(name: &str) -> Option<ToolSpec> {
    BuiltinTool::from_name(name).map(BuiltinTool::spec).or_else(|| MemoryTool::from_name(name).map(MemoryTool::spec))
}

fn model_config(spec: &ModelSpec, api_key: Option<SecretString>) -> ModelConfig {
    ModelConfig {
        provider: spec.provider,
        model: spec.name.clone(),
        base_url: spec.base_url.clone(),
        api_key,
        stream: spec.stream,
        max_output_tokens: spec.max_output_tokens,
        temperature: spec.temperature,
        request_timeout: spec.request_timeout,
        max_retries: spec.max_retries,
        retry_base_delay: Duration::from_millis(500),
    }
}

/// Cost in millionths of a dollar: prices are dollars per million tokens,
/// so a token costs `price` microdollars.
pub fn cost_microdollars(price: Option<ModelPrice>, usage: TokenUsage) -> i64 {
    let Some(price) = price else { return 0 };
    let cost =
        usage.input_tokens as f64 * price.input_per_million + usage.output_tokens as f64 * price.output_per_million;
    cost.round() as i64
}

/// A rough token count (four bytes a token), enough to decide when to compact.
fn estimate_tokens(system: &str, messages: &[Message], specs: &[ToolSpec]) -> u64 {
    let message_bytes: usize = messages
        .iter()
        .map(|message| match message {
            Message::User { content } => content.len(),
            Message::Assistant { content, tool_calls } => {
                content.as_ref().map_or(0, String::len)
                    + tool_calls.iter().map(|call| call.name.len() + call.arguments.len()).sum::<usize>()
            }
            Message::Tool { content, .. } => content.len(),
        })
        .sum();
    let spec_bytes: usize = specs.iter().map(|spec| spec.description.len() + spec.parameters.to_string().len()).sum();
    ((system.len() + message_bytes + spec_bytes) / 4) as u64
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Makes a fork's workspace the checkpoint `id`. The first try finds the
/// directory empty; a retry, after a worker died half-way through, finds
/// what that worker wrote, and makes it exact the same way a rollback does.
fn make_fork_workspace(
    store: &codexos_checkpoint::Store,
    id: &codexos_checkpoint::CheckpointId,
    workspace: &std::path::Path,
) -> Result<codexos_checkpoint::RestoreReport, String> {
    let empty = std::fs::read_dir(workspace).map(|mut entries| entries.next().is_none()).unwrap_or(true);
    let restored = if empty { store.restore_into(id, workspace) } else { store.restore(id, workspace) };
    restored.map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_workspace_half_made_by_a_dead_worker_is_made_exact() {
        let root = tempfile::tempdir().unwrap();
        let (parent, fork, store_dir) =
            (root.path().join("parent"), root.path().join("fork"), root.path().join("store"));
        std::fs::create_dir_all(parent.join("src")).unwrap();
        std::fs::write(parent.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(parent.join("README.md"), "# parent\n").unwrap();
        let store = codexos_checkpoint::Store::open(&store_dir).unwrap();
        let checkpoint = store.snapshot(&parent).unwrap().checkpoint.id;

        // What a worker killed mid-restore leaves: part of it, part wrong.
        std::fs::create_dir_all(fork.join("src")).unwrap();
        std::fs::write(fork.join("src/main.rs"), "fn ma").unwrap();
        std::fs::write(fork.join("partial.tmp"), "x").unwrap();
        make_fork_workspace(&store, &checkpoint, &fork).unwrap();
        assert_eq!(std::fs::read_to_string(fork.join("src/main.rs")).unwrap(), "fn main() {}\n");
        assert_eq!(std::fs::read_to_string(fork.join("README.md")).unwrap(), "# parent\n");
        assert!(!fork.join("partial.tmp").exists());

        // The first try, on an empty directory.
        let fresh = root.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        make_fork_workspace(&store, &checkpoint, &fresh).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.join("README.md")).unwrap(), "# parent\n");
    }

    #[test]
    fn cost_follows_the_price_table() {
        let usage = TokenUsage { input_tokens: 1_000_000, output_tokens: 500_000 };
        let price = ModelPrice { input_per_million: 0.4, output_per_million: 1.6 };
        assert_eq!(cost_microdollars(Some(price), usage), 400_000 + 800_000);
        assert_eq!(cost_microdollars(None, usage), 0);
    }

    #[test]
    fn tokens_are_estimated_from_sizes() {
        let messages = vec![Message::User { content: "x".repeat(400) }];
        assert_eq!(estimate_tokens("", &messages, &[]), 100);
    }
}
