//! `codexos key create|list|revoke`; `key publisher ...` is `publishers.rs`.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::{GlobalArgs, KeyCommand};
use crate::client::Client;
use crate::output::{text, urlencode};

pub async fn run(global: &GlobalArgs, command: KeyCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    match command {
        KeyCommand::Create { name, role, expires_in, json } => {
            let created: Value =
                client.post("/v1/keys", &json!({ "name": name, "role": role, "expires_in": expires_in })).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let key = &created["key"];
                println!("Created key {} ({}, role {}).", text(&key["id"]), text(&key["name"]), text(&key["role"]));
                println!("Its secret, shown this once:");
                println!("  {}", text(&created["secret"]));
            }
        }
        KeyCommand::List(flag) => {
            let list: Value = client.get("/v1/keys").await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<12}  {:<9}  {:<16}  STATE", "ID", "PREFIX", "ROLE", "NAME");
                for key in list["keys"].as_array().into_iter().flatten() {
                    let state = if !key["revoked_at"].is_null() {
                        format!("revoked {}", text(&key["revoked_at"]))
                    } else if !key["expires_at"].is_null() {
                        format!("expires {}", text(&key["expires_at"]))
                    } else {
                        "active".to_owned()
                    };
                    println!(
                        "{:<36}  {:<12}  {:<9}  {:<16}  {state}",
                        text(&key["id"]),
                        text(&key["prefix"]),
                        text(&key["role"]),
                        text(&key["name"])
                    );
                }
            }
        }
        KeyCommand::Revoke { id, json } => {
            let key: Value = client.delete(&format!("/v1/keys/{}", urlencode(&id))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key)?);
            } else {
                println!("Revoked key {} ({}).", text(&key["id"]), text(&key["name"]));
            }
        }
        KeyCommand::Publisher(command) => return super::publishers::run(&client, command).await,
    }
    Ok(ExitCode::SUCCESS)
}
