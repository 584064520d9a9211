//! `codexos policy set|get|versions|test` (docs/policy.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use codexos_policy::{Bundle, CaseResult, Policy};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, PolicyCommand};
use crate::client::Client;
use crate::output::text;

/// The largest file read (a module's limit is 256 KiB, the data's 1 MiB,
/// a cases file's the server's request limit).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub async fn run(global: &GlobalArgs, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Set { files, data, json } => set(global, &files, data.as_deref(), json).await,
        PolicyCommand::Get { default: true, json, .. } => {
            let bundle = Bundle::builtin_default();
            let view =
                json!({ "default": true, "modules": bundle.modules, "data": bundle.data, "sha256": bundle.sha256() });
            print_policy(&view, json)
        }
        PolicyCommand::Get { version, json, .. } => {
            let client = Client::from_args(global)?;
            let path = match version {
                Some(version) => format!("/v1/policy?version={version}"),
                None => "/v1/policy".to_owned(),
            };
            let view: Value = client.get(&path).await?;
            print_policy(&view, json)
        }
        PolicyCommand::Versions(flag) => {
            let client = Client::from_args(global)?;
            let list: Value = client.get("/v1/policy/versions").await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            let versions = list["versions"].as_array().cloned().unwrap_or_default();
            if versions.is_empty() {
                println!("No policy set: the default policy applies (`codexos policy get --default`).");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:>7}  {:<24}  {:<36}  SHA256", "VERSION", "CREATED", "CREATED BY");
            for version in &versions {
                println!(
                    "{:>7}  {:<24}  {:<36}  {}",
                    text(&version["version"]),
                    text(&version["created_at"]),
                    text(&version["created_by"]),
                    text(&version["sha256"]).chars().take(16).collect::<String>()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { cases, policy, data, json } => test(global, &cases, &policy, data.as_deref(), json).await,
    }
}

async fn set(global: &GlobalArgs, files: &[PathBuf], data: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let bundle = read_bundle(files, data)?;
    let client = Client::from_args(global)?;
    let body = json!({ "modules": bundle.modules, "data": bundle.data });
    let (_, answer) = client
        .send_for_status(reqwest::Method::PUT, "/v1/policy", Some(&body), &[reqwest::StatusCode::OK])
        .await
        .context("the policy was not set")?;
    let answer = answer.unwrap_or(Value::Null);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "Policy version {} set ({} module{}, sha256 {}).",
            text(&answer["version"]),
            bundle.modules.len(),
            if bundle.modules.len() == 1 { "" } else { "s" },
            text(&answer["sha256"]).chars().take(16).collect::<String>()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Modules by file name, and the data document.
fn read_bundle(files: &[PathBuf], data: Option<&Path>) -> anyhow::Result<Bundle> {
    let mut modules = BTreeMap::new();
    for file in files {
        let name = file
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| format!("{} has no usable file name", file.display()))?
            .to_owned();
        if modules.contains_key(&name) {
            bail!("two modules are named {name}: module names are file names, and must differ");
        }
        modules.insert(name, read_text(file)?);
    }
    let data = match data {
        Some(path) => {
            serde_json::from_str(&read_text(path)?).with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        None => json!({}),
    };
    Ok(Bundle { modules, data })
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > MAX_FILE_BYTES {
        bail!("{} is {size} bytes; at most {MAX_FILE_BYTES} are read", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The policy as Rego text that can be set again: a comment saying which
/// one, each module under a comment naming it, the data as a comment.
fn print_policy(view: &Value, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
        return Ok(ExitCode::SUCCESS);
    }
    let which = if view["default"] == Value::Bool(true) {
        "the default policy (the tenant has set none)".to_owned()
    } else {
        format!("version {}, set {}", text(&view["version"]), text(&view["created_at"]))
    };
    println!("# codexos policy: {which}; sha256 {}", text(&view["sha256"]));
    let data = &view["data"];
    if data.as_object().is_some_and(|data| !data.is_empty()) {
        println!("# data: {data}");
    }
    for (name, source) in view["modules"].as_object().into_iter().flatten() {
        println!("# module {name}");
        print!("{}", source.as_str().unwrap_or_default());
        if !source.as_str().unwrap_or_default().ends_with('\n') {
            println!();
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn test(
    global: &GlobalArgs,
    cases_file: &Path,
    policy: &[PathBuf],
    data: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cases_text = read_text(cases_file)?;
    let (which, results) = if policy.is_empty() {
        // The tenant's policy, on the server.
        let cases: Value =
            serde_json::from_str(&cases_text).with_context(|| format!("{} is not valid JSON", cases_file.display()))?;
        let cases = cases.get("cases").cloned().unwrap_or(cases);
        let client = Client::from_args(global)?;
        let report: Value = client.post("/v1/policy/test", &json!({ "cases": cases })).await?;
        let results: Vec<CaseResult> = serde_json::from_value(report["results"].clone())
            .context("the server's report is not the expected JSON")?;
        (format!("the tenant's policy ({})", text(&report["policy"])), results)
    } else {
        // Local modules, here: no server.
        let cases = codexos_policy::parse_cases(&cases_text).with_context(|| cases_file.display().to_string())?;
        let bundle = read_bundle(policy, data)?;
        let compiled = Policy::compile(&bundle).map_err(|err| {
            let lines: Vec<String> = err.problems.iter().map(|problem| format!("  {problem}")).collect();
            anyhow::anyhow!("the policy does not compile:\n{}", lines.join("\n"))
        })?;
        let names: Vec<&str> = bundle.modules.keys().map(String::as_str).collect();
        (names.join(", "), codexos_policy::run_cases(&compiled, &cases))
    };
    let failed = results.iter().filter(|result| !result.passed).count();
    if json {
        let passed = results.len() - failed;
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "policy": which, "passed": passed, "failed": failed, "results": results })
            )?
        );
    } else {
        println!("Testing {which}:");
        for result in &results {
            let reasons = if result.decision.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", result.decision.reasons_text())
            };
            if result.passed {
                println!("PASS  {}: {}{reasons}", result.name, result.decision.verdict);
            } else {
                let why = result.problem.as_deref().map(|problem| format!(" ({problem})")).unwrap_or_default();
                println!(
                    "FAIL  {}: expected {}, got {}{reasons}{why}",
                    result.name, result.expected, result.decision.verdict
                );
            }
            for line in &result.prints {
                println!("      print: {line}");
            }
        }
        println!("{} passed, {failed} failed", results.len() - failed);
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
