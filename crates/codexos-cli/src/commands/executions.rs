//! `codexos run` and `codexos exec list|show|events`: start executions and
//! follow their timelines live.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use codexos_engine::model::sse::{SseEvent, SseParser};
use serde_json::{Value, json};

use crate::cli::{ExecCommand, GlobalArgs, RunArgs};
use crate::client::Client;
use crate::output::{text, urlencode};

/// `codexos run`: start an execution, then follow it to its end.
pub async fn start(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    let workspace = match &args.workspace {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let workspace =
        workspace.canonicalize().with_context(|| format!("workspace {} cannot be used", workspace.display()))?;
    anyhow::ensure!(workspace.is_dir(), "workspace {} is not a directory", workspace.display());
    let workspace = workspace.to_str().context("the workspace path is not valid UTF-8")?.to_owned();
    let body = json!({ "agent": args.agent, "version": args.version, "task": args.task, "workspace": workspace });
    let execution: Value = client.post("/v1/executions", &body).await?;
    let id = text(&execution["id"]);
    if args.detach {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&execution)?);
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        println!("Execution {id}: {} {} on {workspace}", text(&execution["agent"]), text(&execution["agent_version"]));
    }
    let mut renderer = Renderer::new(!args.json, &id);
    // Attached to a terminal, a call that needs approval is asked about here.
    let interactive = !args.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    follow(&client, &id, 0, &mut |event| {
        renderer.event(event);
        if interactive && event["kind"] == "approval_requested" {
            renderer.clear_spinner();
            ask_approval(&client, &id, event);
        }
    })
    .await?;
    renderer.clear_spinner();
    let finished: Value = client.get(&format!("/v1/executions/{}", urlencode(&id))).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&finished)?);
    } else {
        print_summary(&finished);
    }
    Ok(exit_code_of(&finished))
}

pub async fn run(global: &GlobalArgs, command: ExecCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    match command {
        ExecCommand::List { status, agent, limit, json } => {
            let mut path = format!("/v1/executions?limit={}", limit.clamp(1, 200));
            if let Some(status) = &status {
                path.push_str(&format!("&status={}", urlencode(status)));
            }
            if let Some(agent) = &agent {
                path.push_str(&format!("&agent={}", urlencode(agent)));
            }
            let list: Value = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<18}  {:<10}  {:>5}  {:<24}  TASK", "ID", "AGENT", "STATUS", "STEPS", "CREATED");
                for execution in list["executions"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<18}  {:<10}  {:>5}  {:<24}  {}",
                        text(&execution["id"]),
                        format!("{} {}", text(&execution["agent"]), text(&execution["agent_version"])),
                        text(&execution["status"]),
                        text(&execution["totals"]["steps"]),
                        text(&execution["created_at"]),
                        first_line(&text(&execution["task"]), 60)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecCommand::Show { id, json } => {
            let execution: Value = client.get(&format!("/v1/executions/{}", urlencode(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&execution)?);
            } else {
                println!("Execution {}", text(&execution["id"]));
                println!("  agent      {} {}", text(&execution["agent"]), text(&execution["agent_version"]));
                println!("  manifest   sha256 {}", text(&execution["manifest_sha256"]));
                let signature = &execution["signature"];
                match signature["status"].as_str() {
                    Some("unsigned") | None => println!("  signature  unsigned"),
                    Some(status) => println!("  signature  {status} (key {})", text(&signature["key_id"])),
                }
                println!("  task       {}", first_line(&text(&execution["task"]), 100));
                println!("  workspace  {}", text(&execution["workspace"]));
                println!("  created    {}", text(&execution["created_at"]));
                if let Some(forked) = execution["forked_from"].as_object() {
                    println!("  forked     from {} at step {}", text(&forked["execution"]), text(&forked["step"]));
                }
                let checkpoints = &execution["checkpoints"];
                if checkpoints["count"].as_i64().is_some_and(|count| count > 0) {
                    println!(
                        "  checkpoints {} ({} of new content)",
                        text(&checkpoints["count"]),
                        human_bytes(checkpoints["bytes"].as_i64().unwrap_or(0))
                    );
                }
                print_summary(&execution);
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecCommand::Pause { id, json } => control(&client, &id, "pause", &json!({}), json).await,
        ExecCommand::Resume { id, task, json } => {
            control(&client, &id, "resume", &json!({ "instruction": task }), json).await
        }
        ExecCommand::Cancel { id, json } => control(&client, &id, "cancel", &json!({}), json).await,
        ExecCommand::Approve { id, step, reason, json } => decide(&client, &id, step, true, reason, json).await,
        ExecCommand::Deny { id, step, reason, json } => decide(&client, &id, step, false, reason, json).await,
        ExecCommand::Fork { id, from_step, task, workspace, json } => {
            let workspace = match workspace {
                // Absolute, as the API wants; it need not exist yet.
                Some(dir) => Some(std::path::absolute(&dir).context("cannot resolve the fork's workspace")?),
                None => None,
            };
            let body = json!({ "from_step": from_step, "task": task, "workspace": workspace });
            let fork: Value = client.post(&format!("/v1/executions/{}/fork", urlencode(&id)), &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&fork)?);
            } else {
                println!("Forked {id} at step {from_step} into {} on {}.", text(&fork["id"]), text(&fork["workspace"]));
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecCommand::Rollback { id, to_step, json } => {
            control(&client, &id, "rollback", &json!({ "to_step": to_step }), json).await
        }
        ExecCommand::Events { id, follow: keep_following, after, json } => {
            let mut renderer = Renderer::new(!json, &id);
            let mut print = |event: &Value| {
                if json {
                    println!("{event}");
                } else {
                    renderer.event(event);
                }
            };
            if keep_following {
                follow(&client, &id, after, &mut print).await?;
            } else {
                let mut after = after;
                loop {
                    let page: Value = client
                        .get(&format!("/v1/executions/{}/events?after={after}&limit=1000", urlencode(&id)))
                        .await?;
                    let events = page["events"].as_array().cloned().unwrap_or_default();
                    events.iter().for_each(&mut print);
                    match page["next_after"].as_i64() {
                        Some(next) if !events.is_empty() && next > after => after = next,
                        _ => break,
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks at the terminal whether to approve a call, and sends the answer.
/// Runs inside the event callback, so it blocks this task while it waits.
fn ask_approval(client: &Client, id: &str, event: &Value) {
    let seq = event["seq"].as_i64().unwrap_or(0);
    print!("    approve this call? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return;
    }
    let approve = matches!(answer.trim(), "y" | "Y" | "yes");
    let reason = if approve {
        None
    } else {
        print!("    reason for the agent (optional): ");
        let _ = std::io::stdout().flush();
        let mut reason = String::new();
        let _ = std::io::stdin().read_line(&mut reason);
        Some(reason.trim().to_owned()).filter(|reason| !reason.is_empty())
    };
    let path = format!("/v1/executions/{}/approvals/{seq}", urlencode(id));
    let body = json!({ "approve": approve, "reason": reason });
    let sent = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(client.post::<_, Value>(&path, &body))
    });
    if let Err(err) = sent {
        eprintln!("    cannot send the decision: {err:#}");
    }
}

/// `exec approve|deny`.
async fn decide(
    client: &Client,
    id: &str,
    step: i64,
    approve: bool,
    reason: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/executions/{}/approvals/{step}", urlencode(id));
    let execution: Value = client.post(&path, &json!({ "approve": approve, "reason": reason })).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&execution)?);
    } else {
        let verdict = if approve { "approved" } else { "denied" };
        println!("Execution {}: step {step} {verdict}; it carries on.", text(&execution["id"]));
    }
    Ok(ExitCode::SUCCESS)
}

/// `exec pause|resume|cancel`: the request, and what it did.
async fn control(client: &Client, id: &str, action: &str, body: &Value, json: bool) -> anyhow::Result<ExitCode> {
    let execution: Value = client.post(&format!("/v1/executions/{}/{action}", urlencode(id)), body).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&execution)?);
        return Ok(ExitCode::SUCCESS);
    }
    let status = text(&execution["status"]);
    let message = match (action, status.as_str()) {
        ("pause", "running") => "pause requested: it stops after its current step".to_owned(),
        ("cancel", "running") => "cancel requested: its worker stops it now".to_owned(),
        ("resume", "running") => "pause withdrawn: it carries on".to_owned(),
        ("resume", "queued") => "resumed: a worker carries on from its last recorded step".to_owned(),
        ("rollback", _) => "rollback queued: a worker puts the workspace back, then it waits, paused".to_owned(),
        (_, status) => format!("now {status}"),
    };
    println!("Execution {}: {message}.", text(&execution["id"]));
    Ok(ExitCode::SUCCESS)
}

/// Follows an execution's live stream until it ends, reconnecting after
/// the last event seen if the connection drops.
async fn follow(client: &Client, id: &str, after: i64, on_event: &mut dyn FnMut(&Value)) -> anyhow::Result<()> {
    let path = format!("/v1/executions/{}/stream", urlencode(id));
    let mut last_seen = after;
    let mut failures = 0;
    loop {
        let response = match client.event_stream(&path, last_seen).await {
            Ok(response) => response,
            // The server's answer (404, 403, ...) will not change on retry.
            Err(err) if failures >= 5 || !err.to_string().contains("cannot connect") => return Err(err),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut response = response;
        let mut parser = SseParser::default();
        let mut events: Vec<SseEvent> = Vec::new();
        let mut dropped = false;
        let mut ended = false;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => {
                    dropped = true;
                    break;
                }
            };
            if parser.feed(&chunk, &mut events).is_err() {
                dropped = true;
                break;
            }
            for message in events.drain(..) {
                let Ok(event) = serde_json::from_str::<Value>(&message.data) else { continue };
                if let Some(seq) = event["seq"].as_i64() {
                    last_seen = seq;
                }
                ended |= event["kind"] == "status" && is_final(&event["payload"]["status"]);
                failures = 0;
                on_event(&event);
            }
        }
        if ended {
            return Ok(());
        }
        if !dropped {
            // The server closed the stream before the final event (it could
            // not read the timeline): ask again from the last event seen.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        failures += 1;
        anyhow::ensure!(failures <= 5, "lost the connection to the server while following {id}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints timeline events as lines, with a spinner on a terminal while the
/// model thinks.
struct Renderer {
    text: bool,
    /// The execution's id, for the commands the renderer suggests.
    execution: String,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Renderer {
    fn new(text: bool, execution: &str) -> Self {
        Self { text, execution: execution.to_owned(), spinner: None }
    }

    fn event(&mut self, event: &Value) {
        if !self.text {
            return;
        }
        self.clear_spinner();
        let payload = &event["payload"];
        let step = shown(&payload["step"]);
        match event["kind"].as_str().unwrap_or("") {
            "status" => println!("● {}", printable(&status_line(payload))),
            "model_request" => self.start_spinner(format!("step {step}: the model is thinking")),
            "model_retry" => println!(
                "  ↻ model call retried (attempt {}): {} — next try in {} ms",
                shown(&payload["attempt"]),
                first_line(&shown(&payload["reason"]), 100),
                shown(&payload["delay_ms"])
            ),
            "model_reply" => {
                let content = payload["content"].as_str().unwrap_or("");
                let calls = payload["tool_calls"].as_array().map_or(0, Vec::len);
                if calls > 0 && !content.trim().is_empty() {
                    println!("  💬 {}", first_line(content, 120));
                }
                println!(
                    "  step {step}: model replied in {} ms ({} in / {} out tokens){}",
                    shown(&payload["duration_ms"]),
                    shown(&payload["usage"]["input_tokens"]),
                    shown(&payload["usage"]["output_tokens"]),
                    if calls > 0 {
                        format!(", {calls} tool call{}", if calls == 1 { "" } else { "s" })
                    } else {
                        String::new()
                    }
                );
            }
            "model_error" => println!("  ✘ model error: {}", first_line(&shown(&payload["error"]), 200)),
            "tool_call" => println!("  $ {}", describe_call(&shown(&payload["tool"]), &payload["arguments"])),
            "tool_denied" => println!("  ✘ denied {}: {}", shown(&payload["tool"]), shown(&payload["reason"])),
            "tool_result" => {
                let mark = if payload["is_error"].as_bool() == Some(true) { "✘" } else { "✔" };
                let exit = match payload["exit_code"].as_i64() {
                    Some(code) if payload["tool"] == "shell" => format!("exit {code}, "),
                    _ => String::new(),
                };
                let violations: Vec<String> = payload["violations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|violation| text(&violation["kind"]))
                    .collect();
                let violations = if violations.is_empty() {
                    String::new()
                } else {
                    format!(", violations: {}", violations.join(", "))
                };
                println!("    {mark} {exit}{} ms{violations}", shown(&payload["wall_ms"]));
                // The end of the output is where results and errors are.
                let lines: Vec<&str> = payload["output"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .filter(|line| {
                        !line.trim().is_empty() && !line.starts_with("exit code:") && !line.starts_with("--- ")
                    })
                    .collect();
                for line in &lines[lines.len().saturating_sub(3)..] {
                    println!("      {}", first_line(line, 110));
                }
            }
            "control" => println!("● {} by {}", shown(&payload["action"]).replace('_', " "), shown(&payload["by"])),
            "approval_requested" => println!(
                "  ⏸ approval needed for {} ({}): {}\n    approve: codexos exec approve {} {} · deny: codexos exec deny {} {} --reason ...",
                shown(&payload["tool"]),
                shown(&payload["reason"]),
                first_line(&text(&payload["arguments"]), 100),
                self.execution,
                shown(&event["seq"]),
                self.execution,
                shown(&event["seq"])
            ),
            "approval_decided" => println!(
                "  {} by {}{}",
                if payload["approved"] == true { "✔ approved" } else { "✘ denied" },
                shown(&payload["by"]),
                payload["reason"].as_str().map(|reason| format!(": {}", printable(reason))).unwrap_or_default()
            ),
            "rollback_requested" => {
                println!("● rollback to step {} requested by {}", shown(&payload["to_step"]), shown(&payload["by"]))
            }
            "rolled_back" => println!(
                "● rolled back to step {}: {} files written, {} removed",
                shown(&payload["to_step"]),
                shown(&payload["files_written"]),
                shown(&payload["removed"])
            ),
            "instruction" => {
                println!("● instruction from {}: {}", shown(&payload["by"]), first_line(&text(&payload["text"]), 100))
            }
            "workspace_restored" => {
                println!("  ↺ workspace restored to the checkpoint before {}", shown(&payload["call_id"]))
            }
            "limit_hit" => println!("  ⏹ limit hit ({}): {}", shown(&payload["limit"]), shown(&payload["detail"])),
            "compacted" => println!(
                "  … session compacted: {} earlier results elided ({} → {} tokens)",
                shown(&payload["elided_results"]),
                shown(&payload["estimated_tokens_before"]),
                shown(&payload["estimated_tokens_after"])
            ),
            other => println!("  {other}: {}", first_line(&payload.to_string(), 120)),
        }
    }

    fn start_spinner(&mut self, label: String) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        self.spinner = Some(tokio::spawn(async move {
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            for frame in frames.iter().cycle() {
                eprint!("\r  {frame} {label}");
                let _ = std::io::stderr().flush();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    fn clear_spinner(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.abort();
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

fn status_line(payload: &Value) -> String {
    let status = shown(&payload["status"]);
    match status.as_str() {
        "running" if payload["resumed"].as_bool() == Some(true) => "running (resumed by another worker)".to_owned(),
        "failed" | "cancelled" => match payload["error"].as_str() {
            Some(error) => format!("{status}: {error}"),
            None => status,
        },
        _ => status,
    }
}

/// A tool call in one line: the command for `shell`, the path for file tools.
fn describe_call(tool: &str, arguments: &Value) -> String {
    let detail = ["command", "path", "pattern", "url"]
        .iter()
        .find_map(|key| arguments[*key].as_str())
        .map(|value| first_line(value, 100));
    match detail {
        Some(detail) if tool == "shell" => detail,
        Some(detail) => format!("{tool} {detail}"),
        None => tool.to_owned(),
    }
}

fn print_summary(execution: &Value) {
    let totals = &execution["totals"];
    let outcome = &execution["outcome"];
    let status = text(&execution["status"]);
    let mark = match status.as_str() {
        "succeeded" => "✔",
        "failed" | "cancelled" => "✘",
        _ => "●",
    };
    println!();
    println!("{mark} {status}");
    if let Some(answer) = outcome["answer"].as_str().filter(|answer| !answer.trim().is_empty()) {
        println!();
        println!("{}", printable(answer.trim_end()));
        println!();
    }
    if let Some(error) = outcome["error"].as_str() {
        println!("  error     {}", printable(error));
    }
    let cost = totals["cost_microdollars"].as_i64().unwrap_or(0) as f64 / 1_000_000.0;
    println!(
        "  steps {} · tokens {} in / {} out · cost ${cost:.4} · tool cpu {} ms · peak memory {} · time {} ms",
        text(&totals["steps"]),
        text(&totals["input_tokens"]),
        text(&totals["output_tokens"]),
        text(&totals["cpu_ms"]),
        human_bytes(totals["peak_memory_bytes"].as_i64().unwrap_or(0)),
        text(&totals["wall_ms"]),
    );
}

fn exit_code_of(execution: &Value) -> ExitCode {
    if execution["status"].as_str() == Some("succeeded") { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A value of an event as safe, readable text.
fn shown(value: &Value) -> String {
    printable(&text(value))
}

fn is_final(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Text from the timeline (model output, tool output, errors) as it is safe
/// to print: control characters other than newline and tab, which could
/// drive the terminal (clear it, rewrite lines, set the clipboard), become `�`.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect()
}

fn first_line(text: &str, max_chars: usize) -> String {
    let text = &printable(text);
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max_chars || text.lines().nth(1).is_some() {
        format!("{}…", line.chars().take(max_chars).collect::<String>())
    } else {
        line.to_owned()
    }
}

fn human_bytes(bytes: i64) -> String {
    const KIB: f64 = 1024.0;
    match bytes {
        ..=0 => "-".to_owned(),
        1..1024 => format!("{bytes} B"),
        1024..1048576 => format!("{:.1} KiB", bytes as f64 / KIB),
        _ => format!("{:.1} MiB", bytes as f64 / (KIB * KIB)),
    }
}
