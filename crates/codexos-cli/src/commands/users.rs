//! `codexos user`: the members of your tenant, through the API.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::{GlobalArgs, UserCommand};
use crate::client::Client;
use crate::output::{text, urlencode};

pub async fn run(global: &GlobalArgs, command: UserCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    match command {
        UserCommand::Add { email, role, password_stdin } => {
            let mut body = json!({ "email": email, "role": role });
            if password_stdin {
                let lines = read_stdin_lines()?;
                let password = lines.first().context("no password on standard input")?;
                body["password"] = Value::String(password.to_string());
            }
            let member: Value = client.post("/v1/users", &body).await?;
            println!("Added {} as {} (user {}).", text(&member["email"]), text(&member["role"]), text(&member["id"]));
        }
        UserCommand::List { json } => {
            let list: Value = client.get("/v1/users").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<32}  {:<9}  PASSWORD", "ID", "EMAIL", "ROLE");
                for member in list["users"].as_array().into_iter().flatten() {
                    println!(
                        "{:<36}  {:<32}  {:<9}  {}",
                        text(&member["id"]),
                        text(&member["email"]),
                        text(&member["role"]),
                        if member["has_password"] == true { "set" } else { "none" }
                    );
                }
            }
        }
        UserCommand::Role { id, role } => {
            let path = format!("/v1/users/{}", urlencode(&id));
            let (_, member) =
                client.send_for_status(Method::PATCH, &path, Some(&json!({ "role": role })), &[StatusCode::OK]).await?;
            let member = member.unwrap_or_default();
            println!("{} is now {}.", text(&member["email"]), text(&member["role"]));
        }
        UserCommand::Remove { id } => {
            let member: Value = client.delete(&format!("/v1/users/{}", urlencode(&id))).await?;
            println!("Removed {} from the tenant; their keys here are revoked.", text(&member["email"]));
        }
        UserCommand::Password => {
            // One line: the new password; two: the current one, then the new one.
            let lines = read_stdin_lines()?;
            let body = match lines.as_slice() {
                [new] => json!({ "new_password": new.as_str() }),
                [current, new] => json!({ "current_password": current.as_str(), "new_password": new.as_str() }),
                _ => bail!("give the new password on standard input, after the current one if you have one"),
            };
            client.send_for_status(Method::PUT, "/v1/me/password", Some(&body), &[StatusCode::NO_CONTENT]).await?;
            println!("Password changed; every session of yours has ended.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard input's non-empty lines (passwords: kept out of arguments,
/// which other users of the machine can see).
fn read_stdin_lines() -> anyhow::Result<Vec<Zeroizing<String>>> {
    let mut input = Zeroizing::new(String::new());
    std::io::stdin().take(8 * 1024).read_to_string(&mut input).context("cannot read standard input")?;
    Ok(input.lines().filter(|line| !line.is_empty()).map(|line| Zeroizing::new(line.to_owned())).collect())
}
