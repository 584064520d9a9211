//! `codexos key publisher create|add|list|trust|distrust|revoke`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use codexos_engine::signing::PrivateKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::PublisherCommand;
use crate::client::Client;
use crate::output::{text, urlencode};

pub async fn run(client: &Client, command: PublisherCommand) -> anyhow::Result<ExitCode> {
    match command {
        PublisherCommand::Create { name, out, json } => {
            let key = PrivateKey::generate(&name)?;
            let path = out.unwrap_or_else(|| PathBuf::from(format!("{name}.publisher.key")));
            // The file first, so that a key the tenant trusts always has its
            // private half somewhere; it goes again if registration fails.
            key.create_file(&path).with_context(|| "cannot write the private key; nothing was registered")?;
            let body = json!({ "name": name, "public_key": key.public_key().to_string(), "trusted": true });
            let created: Value = match client.post("/v1/publishers", &body).await {
                Ok(created) => created,
                Err(err) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(err.context("cannot register the publisher key; no key file was kept"));
                }
            };
            if json {
                let mut answer = created;
                answer["private_key_file"] = json!(path.display().to_string());
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("Created publisher key {} ({}), trusted by this tenant.", text(&created["id"]), name);
                println!("  private key  {} (keep it secret; it never leaves this machine)", path.display());
                println!("  public key   {}", text(&created["public_key"]));
                println!("Sign a manifest with: codexos agent sign FILE --key {}", path.display());
            }
        }
        PublisherCommand::Add { name, public_key, untrusted, json } => {
            let body = json!({ "name": name, "public_key": public_key, "trusted": !untrusted });
            let created: Value = client.post("/v1/publishers", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let trust = if created["trusted"] == true { "trusted" } else { "not trusted yet" };
                println!("Registered publisher key {} ({}), {trust}.", text(&created["id"]), text(&created["name"]));
            }
        }
        PublisherCommand::List(flag) => {
            let list: Value = client.get("/v1/publishers").await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<16}  {:<20}  {:<28}  PUBLIC KEY", "ID", "NAME", "STATE");
                for key in list["publishers"].as_array().into_iter().flatten() {
                    let state = if !key["revoked_at"].is_null() {
                        format!("revoked {}", text(&key["revoked_at"]))
                    } else if key["trusted"] == true {
                        "trusted".to_owned()
                    } else {
                        "not trusted".to_owned()
                    };
                    println!(
                        "{:<16}  {:<20}  {:<28}  {}",
                        text(&key["id"]),
                        text(&key["name"]),
                        state,
                        text(&key["public_key"])
                    );
                }
            }
        }
        PublisherCommand::Trust { id, json } => set_trust(client, &id, true, json).await?,
        PublisherCommand::Distrust { id, json } => set_trust(client, &id, false, json).await?,
        PublisherCommand::Revoke { id, json } => {
            let key: Value = client.delete(&format!("/v1/publishers/{}", urlencode(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!(
                    "Revoked publisher key {} ({}); versions it signed no longer run.",
                    text(&key["id"]),
                    text(&key["name"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn set_trust(client: &Client, id: &str, trusted: bool, json: bool) -> anyhow::Result<()> {
    let body = json!({ "trusted": trusted });
    let path = format!("/v1/publishers/{}", urlencode(id));
    let (_, key) = client.send_for_status(Method::PUT, &path, Some(&body), &[StatusCode::OK]).await?;
    let key = key.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&key)?);
    } else if trusted {
        println!("Publisher key {} ({}) is trusted.", text(&key["id"]), text(&key["name"]));
    } else {
        println!(
            "Publisher key {} ({}) is no longer trusted; versions it signed stop running.",
            text(&key["id"]),
            text(&key["name"])
        );
    }
    Ok(())
}
