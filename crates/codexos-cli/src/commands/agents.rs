//! `codexos agent create|list|show`.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{AgentCommand, GlobalArgs};
use crate::client::Client;
use crate::output::{text, urlencode};

/// Manifests are small; anything larger is a mistake (the server says the same).
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

pub async fn run(global: &GlobalArgs, command: AgentCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    match command {
        AgentCommand::Create { file, json } => {
            let size = std::fs::metadata(&file).with_context(|| format!("cannot read {}", file.display()))?.len();
            anyhow::ensure!(
                size <= MAX_MANIFEST_BYTES,
                "{} is {size} bytes; a manifest is at most 256 KiB",
                file.display()
            );
            let manifest =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {} as text", file.display()))?;
            let created: Value = client
                .post("/v1/agents", &json!({ "manifest": manifest }))
                .await
                .with_context(|| format!("cannot register {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!(
                    "Registered agent {} {} ({}).",
                    text(&created["name"]),
                    text(&created["version"]),
                    text(&created["kind"])
                );
            }
        }
        AgentCommand::List(flag) => {
            let list: Value = client.get("/v1/agents").await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24}  {:<12}  {:<8}  {:>8}  DESCRIPTION", "NAME", "VERSION", "KIND", "VERSIONS");
                for agent in list["agents"].as_array().into_iter().flatten() {
                    let latest = &agent["latest"];
                    println!(
                        "{:<24}  {:<12}  {:<8}  {:>8}  {}",
                        text(&agent["name"]),
                        text(&latest["version"]),
                        text(&latest["kind"]),
                        text(&agent["versions"]),
                        text(&latest["description"])
                    );
                }
            }
        }
        AgentCommand::Show { name, version, json } => {
            let mut path = format!("/v1/agents/{}", urlencode(&name));
            if let Some(version) = &version {
                path.push_str(&format!("?version={}", urlencode(version)));
            }
            let agent: Value = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agent)?);
            } else {
                let shown = &agent["version"];
                println!("{} {} ({})", text(&agent["name"]), text(&shown["version"]), text(&shown["kind"]));
                if !text(&shown["description"]).is_empty() {
                    println!("  {}", text(&shown["description"]));
                }
                let tools: Vec<String> = agent["tools"].as_array().into_iter().flatten().map(text).collect();
                println!("  tools     {}", if tools.is_empty() { "(none)".to_owned() } else { tools.join(", ") });
                println!("  sha256    {}", text(&shown["manifest_sha256"]));
                println!("  created   {}", text(&shown["created_at"]));
                let versions: Vec<String> =
                    agent["versions"].as_array().into_iter().flatten().map(|v| text(&v["version"])).collect();
                println!("  versions  {}", versions.join(", "));
                println!();
                print!("{}", text(&agent["manifest"]));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
