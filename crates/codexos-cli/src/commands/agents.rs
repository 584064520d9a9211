//! `codexos agent create|list|show|sign|diff`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use codexos_engine::AgentManifest;
use codexos_engine::signing::{self, PrivateKey};
use serde_json::{Value, json};

use crate::cli::{AgentCommand, GlobalArgs};
use crate::client::Client;
use crate::output::{text, urlencode};

/// Manifests are small; anything larger is a mistake (the server says the same).
const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

pub async fn run(global: &GlobalArgs, command: AgentCommand) -> anyhow::Result<ExitCode> {
    // Signing is the publisher's, on their machine: no server.
    if let AgentCommand::Sign { file, key, in_place } = &command {
        return sign(file, key, *in_place);
    }
    let client = Client::from_args(global)?;
    match command {
        AgentCommand::Create { file, json } => {
            let manifest = read_manifest(&file)?;
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
                let signature = &shown["signature"];
                match signature["status"].as_str() {
                    Some("unsigned") | None => println!("  signature unsigned"),
                    Some(status) => println!(
                        "  signature {status}: key {} ({})",
                        text(&signature["key_id"]),
                        text(&signature["publisher"])
                    ),
                }
                println!("  created   {}", text(&shown["created_at"]));
                let versions: Vec<String> =
                    agent["versions"].as_array().into_iter().flatten().map(|v| text(&v["version"])).collect();
                println!("  versions  {}", versions.join(", "));
                println!();
                print!("{}", text(&agent["manifest"]));
            }
        }
        AgentCommand::Diff { name, from, to } => {
            let older = manifest_of(&client, &name, &from).await?;
            let newer = manifest_of(&client, &name, &to).await?;
            if older == newer {
                eprintln!("{name} {from} and {to} have the same manifest.");
            } else {
                let diff = similar::TextDiff::from_lines(&older, &newer);
                let unified = diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("{name} {from}"), &format!("{name} {to}"))
                    .to_string();
                print!("{unified}");
            }
        }
        AgentCommand::Sign { .. } => {} // answered above, without a server
    }
    Ok(ExitCode::SUCCESS)
}

/// A manifest file's text, refused early if it is too large to register.
fn read_manifest(file: &Path) -> anyhow::Result<String> {
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    anyhow::ensure!(size <= MAX_MANIFEST_BYTES, "{} is {size} bytes; a manifest is at most 256 KiB", file.display());
    std::fs::read_to_string(file).with_context(|| format!("cannot read {} as text", file.display()))
}

/// One stored version's manifest text.
async fn manifest_of(client: &Client, name: &str, version: &str) -> anyhow::Result<String> {
    let path = format!("/v1/agents/{}?version={}", urlencode(name), urlencode(version));
    let agent: Value = client.get(&path).await?;
    agent["manifest"].as_str().map(str::to_owned).context("the server's answer has no manifest")
}

/// Signs a manifest file: the signed manifest on standard output, or the
/// file rewritten (through a temporary file, so it is never half-written).
fn sign(file: &Path, key_file: &Path, in_place: bool) -> anyhow::Result<ExitCode> {
    let manifest = read_manifest(file)?;
    let key = PrivateKey::load(key_file).with_context(|| "cannot load the publisher key")?;
    let signed = signing::sign_manifest(&manifest, &key).with_context(|| format!("cannot sign {}", file.display()))?;
    // A signature on a manifest the platform will refuse helps nobody.
    if let Err(err) = AgentManifest::parse(&signed) {
        let problems: Vec<String> = err.problems.iter().map(|p| format!("\n  {}: {}", p.key, p.reason)).collect();
        anyhow::bail!("{} is not a valid manifest; nothing was signed:{}", file.display(), problems.concat());
    }
    if in_place {
        let temporary = file.with_file_name(format!(
            ".{}.signing",
            file.file_name().map(|name| name.to_string_lossy()).unwrap_or_default()
        ));
        let written = std::fs::write(&temporary, &signed)
            .and_then(|()| std::fs::set_permissions(&temporary, std::fs::metadata(file)?.permissions()))
            .and_then(|()| std::fs::rename(&temporary, file));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(err).with_context(|| format!("cannot write {}", file.display()));
        }
        eprintln!("Signed {} with publisher key {} ({}).", file.display(), key.id(), key.name());
    } else {
        print!("{signed}");
    }
    Ok(ExitCode::SUCCESS)
}
