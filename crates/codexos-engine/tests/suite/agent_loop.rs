//! The loop alone: a scripted model, tools that answer at once, an
//! in-memory journal. What the sandbox and the providers do is tested
//! elsewhere (and end to end in the CLI's suite); here, the loop's own
//! decisions: limits, denials, workflows, compaction, journal failures.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use codexos_core::ExecutionStatus;
use codexos_engine::model::{ModelError, ModelEvent, ModelRequest};
use codexos_engine::tools::{SandboxSettings, ToolError, ToolExecution, ToolInvocation};
use codexos_engine::{
    AgentManifest, ExecutionSetup, Interrupted, Journal, JournalError, Message, Model, ModelReply, NoMemory,
    TimelineEvent, TokenUsage, ToolCall, ToolRunner, Totals, run_with,
};
use pretty_assertions::assert_eq;
use tokio_util::sync::CancellationToken;

/// Answers from a script, and keeps every request's messages.
struct ScriptedModel {
    replies: Mutex<VecDeque<ModelReply>>,
    seen: Mutex<Vec<Vec<Message>>>,
}

impl ScriptedModel {
    fn new(replies: Vec<ModelReply>) -> Self {
        Self { replies: Mutex::new(replies.into()), seen: Mutex::new(Vec::new()) }
    }
}

impl Model for ScriptedModel {
    async fn complete(
        &self,
        request: &ModelRequest<'_>,
        _events: &mut (dyn FnMut(ModelEvent) + Send),
    ) -> Result<ModelReply, ModelError> {
        self.seen.lock().unwrap().push(request.messages.to_vec());
        let next = self.replies.lock().unwrap().pop_front();
        next.ok_or_else(|| ModelError::Protocol("the script ran out".into()))
    }
}

/// Answers every call with its command (or tool name), failing those whose
/// command contains "fail", after `delay`.
struct InstantTools {
    delay: Duration,
    output_bytes: usize,
}

impl ToolRunner for InstantTools {
    async fn run(&self, invocation: &ToolInvocation, _settings: &SandboxSettings) -> Result<ToolExecution, ToolError> {
        tokio::time::sleep(self.delay).await;
        let command = invocation.arguments["command"].as_str().unwrap_or(invocation.tool.name()).to_owned();
        let output = if self.output_bytes > 0 { "x".repeat(self.output_bytes) } else { command.clone() };
        Ok(ToolExecution {
            output,
            is_error: command.contains("fail"),
            exit_code: Some(i32::from(command.contains("fail"))),
            violations: Vec::new(),
            network: Vec::new(),
            usage: codexos_sandbox::Usage {
                cpu_time: Duration::from_millis(5),
                peak_memory_bytes: 1024,
                wall_time: self.delay,
            },
            absent_protections: Vec::new(),
        })
    }
}

fn tools() -> InstantTools {
    InstantTools { delay: Duration::ZERO, output_bytes: 0 }
}

#[derive(Default)]
struct MemoryJournal {
    events: Vec<TimelineEvent>,
    /// Fail every append after this many.
    fail_after: Option<usize>,
    /// Each append's event kinds and the totals it carried.
    appends: Vec<(Vec<&'static str>, Totals)>,
}

impl Journal for MemoryJournal {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        if self.fail_after.is_some_and(|limit| self.events.len() >= limit) {
            return Err(JournalError::Storage("disk full".into()));
        }
        self.events.extend_from_slice(events);
        self.appends.push((events.iter().map(TimelineEvent::kind).collect(), *totals));
        Ok(())
    }
}

impl MemoryJournal {
    fn kinds(&self) -> Vec<&'static str> {
        self.events.iter().map(TimelineEvent::kind).collect()
    }
}

fn setup(manifest: &str) -> ExecutionSetup {
    ExecutionSetup {
        task: "do it".into(),
        manifest: AgentManifest::parse(manifest).unwrap(),
        workspace: std::env::temp_dir(),
        runner: "/bin/false".into(),
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
        checkpoints: None,
        policy: None,
    }
}

fn llm(limits: &str) -> String {
    format!(
        "name = \"a\"\nversion = \"1.0.0\"\nkind = \"llm\"\n[model]\nprovider = \"openai\"\nname = \"m\"\n\
         [tools]\nallow = [\"shell\"]\n[limits]\n{limits}\n"
    )
}

fn call(id: &str, command: &str) -> ToolCall {
    ToolCall { id: id.into(), name: "shell".into(), arguments: serde_json::json!({ "command": command }).to_string() }
}

fn reply(calls: Vec<ToolCall>) -> ModelReply {
    ModelReply {
        content: None,
        tool_calls: calls,
        usage: TokenUsage { input_tokens: 10, output_tokens: 2 },
        stop_reason: None,
    }
}

fn answer(text: &str) -> ModelReply {
    ModelReply { content: Some(text.into()), ..reply(Vec::new()) }
}

#[tokio::test]
async fn calls_are_answered_in_order_denials_included_and_totals_add_up() {
    let model = ScriptedModel::new(vec![
        reply(vec![
            call("a", "ls"),
            ToolCall { id: "b".into(), name: "read_file".into(), arguments: "{}".into() },
            ToolCall { id: "c".into(), name: "shell".into(), arguments: "{not json".into() },
            call("d", "false && fail"),
        ]),
        answer("done"),
    ]);
    let mut journal = MemoryJournal::default();
    let outcome = run_with(setup(&llm("")), Some(&model), &tools(), &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded);
    assert_eq!(outcome.summary["answer"], "done");
    assert_eq!(outcome.totals.steps, 2);
    assert_eq!(outcome.totals.input_tokens, 20);
    assert_eq!(outcome.totals.cpu_ms, 10);
    let seen = model.seen.lock().unwrap();
    let answers: Vec<(String, bool)> = seen[1]
        .iter()
        .filter_map(|message| match message {
            Message::Tool { call_id, is_error, .. } => Some((call_id.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![("a".into(), false), ("b".into(), true), ("c".into(), true), ("d".into(), true)]);
    assert_eq!(
        journal.kinds(),
        vec![
            "model_request",
            "model_reply",
            "tool_call",
            "tool_result",
            "tool_denied",
            "tool_denied",
            "tool_call",
            "tool_result",
            "model_request",
            "model_reply"
        ]
    );
}

#[tokio::test]
async fn the_deadline_stops_a_turn_between_its_calls() {
    let model = ScriptedModel::new(vec![reply((0..5).map(|n| call(&format!("c{n}"), "sleep")).collect())]);
    let slow = InstantTools { delay: Duration::from_millis(700), output_bytes: 0 };
    let mut journal = MemoryJournal::default();
    let outcome =
        run_with(setup(&llm("timeout = \"1s\"")), Some(&model), &slow, &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.summary["limit"], "timeout");
    // Two calls fit in the second; the rest were not started.
    let started = journal.events.iter().filter(|event| event.kind() == "tool_call").count();
    assert!(started <= 2, "{:?}", journal.kinds());
    assert_eq!(journal.kinds().last(), Some(&"limit_hit"));
}

#[tokio::test]
async fn the_cpu_budget_is_shared_by_all_calls() {
    let model = ScriptedModel::new((0..10).map(|n| reply(vec![call(&format!("c{n}"), "work")])).collect());
    let mut setup = setup(&llm("cpu_seconds = 1"));
    // 995 ms already spent (a resumed execution): one more call crosses the budget.
    setup.totals.cpu_ms = 995;
    let mut journal = MemoryJournal::default();
    let outcome = run_with(setup, Some(&model), &tools(), &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.summary["limit"], "cpu");
    assert_eq!(journal.events.iter().filter(|event| event.kind() == "tool_call").count(), 1);
}

#[tokio::test]
async fn long_sessions_are_compacted_and_the_log_keeps_the_output() {
    let mut replies: Vec<ModelReply> = (0..4).map(|n| reply(vec![call(&format!("c{n}"), "cat big")])).collect();
    replies.push(answer("ok"));
    let model = ScriptedModel::new(replies);
    let big = InstantTools { delay: Duration::ZERO, output_bytes: 3000 };
    let manifest = llm("tool_output = \"4KiB\"").replace("name = \"m\"\n", "name = \"m\"\ncontext_window = 2048\n");
    let mut journal = MemoryJournal::default();
    let outcome = run_with(setup(&manifest), Some(&model), &big, &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Succeeded);
    assert!(journal.kinds().contains(&"compacted"), "{:?}", journal.kinds());
    let seen = model.seen.lock().unwrap();
    let last = seen.last().unwrap();
    let elided = last
        .iter()
        .filter(|message| matches!(message, Message::Tool { content, .. } if content.starts_with("[elided")))
        .count();
    assert!(elided >= 2, "{last:?}");
    // The newest result is never elided: the model is about to read it.
    assert!(matches!(last.last(), Some(Message::Tool { content, .. }) if content.len() == 3000));
}

#[tokio::test]
async fn workflows_go_on_after_steps_allowed_to_fail_and_report_them() {
    let manifest = "name = \"w\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [[steps]]\nname = \"lint\"\ntool = \"shell\"\nargs = { command = \"fail lint\" }\ncontinue_on_error = true\n\
                    [[steps]]\ntool = \"shell\"\nargs = { command = \"test\" }\n";
    let mut journal = MemoryJournal::default();
    let outcome = run_with(setup(manifest), None::<&ScriptedModel>, &tools(), &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.summary["error"], "steps failed: lint");
    assert_eq!(journal.events.iter().filter(|event| event.kind() == "tool_result").count(), 2);
}

#[tokio::test]
async fn every_step_records_the_wall_time_spent_so_far() {
    let manifest = "name = \"w\"\nversion = \"1.0.0\"\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n\
                    [[steps]]\ntool = \"shell\"\nargs = { command = \"one\" }\n\
                    [[steps]]\ntool = \"shell\"\nargs = { command = \"two\" }\n";
    let mut resumed = setup(manifest);
    // Time spent before a crash or a pause counts on.
    resumed.totals.wall_ms = 1_000;
    let slow = InstantTools { delay: Duration::from_millis(40), output_bytes: 0 };
    let mut journal = MemoryJournal::default();
    run_with(resumed, None::<&ScriptedModel>, &slow, &mut journal, &NoMemory).await.unwrap();
    let walls: Vec<u64> = journal.appends.iter().map(|(_, totals)| totals.wall_ms).collect();
    assert!(walls.windows(2).all(|pair| pair[0] <= pair[1]), "{walls:?}");
    assert!(walls[0] >= 1_000, "{walls:?}");
    // What an execution parked after its first step would have on record.
    let after_first_step = journal.appends.iter().find(|(kinds, _)| kinds.contains(&"tool_result"));
    assert!(after_first_step.is_some_and(|(_, totals)| totals.wall_ms >= 1_040), "{walls:?}");
}

#[tokio::test]
async fn a_journal_that_cannot_record_stops_the_loop_before_the_next_effect() {
    let model = ScriptedModel::new(vec![reply(vec![call("a", "rm -rf build")]), answer("done")]);
    // model_request and model_reply are recorded; the tool_call cannot be.
    let mut journal = MemoryJournal { fail_after: Some(2), ..MemoryJournal::default() };
    let counting = InstantTools { delay: Duration::ZERO, output_bytes: 0 };
    let err = run_with(setup(&llm("")), Some(&model), &counting, &mut journal, &NoMemory).await.unwrap_err();
    assert!(matches!(err, Interrupted::Journal(JournalError::Storage(_))), "{err}");
    assert_eq!(journal.kinds(), vec!["model_request", "model_reply"]);
}

#[tokio::test]
async fn a_model_that_fails_for_good_fails_the_execution() {
    let model = ScriptedModel::new(Vec::new());
    let mut journal = MemoryJournal::default();
    let outcome = run_with(setup(&llm("")), Some(&model), &tools(), &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.summary["reason"], "model_error");
    assert_eq!(journal.kinds(), vec!["model_request", "model_error"]);
}

#[tokio::test]
async fn a_workspace_deleted_under_the_execution_fails_it_cleanly() {
    let workspace = tempfile::tempdir().unwrap();
    let model = ScriptedModel::new(vec![reply(vec![call("a", "ls")]), reply(vec![call("b", "ls")]), answer("done")]);
    let mut setup = setup(&llm(""));
    setup.workspace = workspace.path().to_owned();
    /// Deletes the workspace during the first call.
    struct Deleting(std::path::PathBuf);
    impl ToolRunner for Deleting {
        async fn run(
            &self,
            invocation: &ToolInvocation,
            settings: &SandboxSettings,
        ) -> Result<ToolExecution, ToolError> {
            let _ = std::fs::remove_dir_all(&self.0);
            tools().run(invocation, settings).await
        }
    }
    let mut journal = MemoryJournal::default();
    let deleting = Deleting(workspace.path().to_owned());
    let outcome = run_with(setup, Some(&model), &deleting, &mut journal, &NoMemory).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Failed);
    assert_eq!(outcome.summary["reason"], "workspace_gone");
    assert_eq!(journal.events.iter().filter(|event| event.kind() == "tool_call").count(), 1);
}
