//! `codexos tenant sso set|show|delete`: your tenant's single sign-on,
//! through the API (unlike `tenant create`, which is the operator's and
//! works on the database): a tenant's own admins configure it.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::{GlobalArgs, SsoCommand};
use crate::client::Client;
use crate::output::text;

const PATH: &str = "/v1/tenant/sso";
/// The longest client secret read (the server's limit).
const MAX_SECRET_BYTES: usize = 4096;

pub async fn run(global: &GlobalArgs, command: SsoCommand) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    match command {
        SsoCommand::Set {
            issuer,
            client_id,
            client_secret_stdin,
            client_secret_secret,
            default_role,
            allowed_domains,
            json,
        } => {
            let mut body = json!({
                "issuer": issuer,
                "client_id": client_id,
                "default_role": default_role,
                "allowed_domains": allowed_domains,
            });
            if let Some(name) = client_secret_secret {
                body["client_secret_secret"] = Value::String(name);
            }
            if client_secret_stdin {
                body["client_secret"] = Value::String(read_secret()?.to_string());
            }
            let (status, answer) =
                client.send_for_status(Method::PUT, PATH, Some(&body), &[StatusCode::OK, StatusCode::CREATED]).await?;
            drop(body);
            let answer = answer.unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let what = if status == StatusCode::CREATED { "configured" } else { "replaced" };
                println!("Single sign-on {what}: {}.", text(&answer["issuer"]));
                print_urls(&answer);
            }
        }
        SsoCommand::Show { json } => {
            let config: Value = client.get(PATH).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&config)?);
            } else {
                let secret = match config["client_authentication"].as_str() {
                    Some("stored") => "stored encrypted".to_owned(),
                    Some("tenant_secret") => format!("tenant secret {}", text(&config["client_secret_secret"])),
                    _ => "none (public client, PKCE)".to_owned(),
                };
                let domains = config["allowed_domains"].as_array().filter(|domains| !domains.is_empty()).map_or_else(
                    || "any".to_owned(),
                    |domains| domains.iter().map(text).collect::<Vec<_>>().join(", "),
                );
                println!("issuer          {}", text(&config["issuer"]));
                println!("client id       {}", text(&config["client_id"]));
                println!("client secret   {secret}");
                println!("default role    {}", text(&config["default_role"]));
                println!("allowed domains {domains}");
                print_urls(&config);
            }
        }
        SsoCommand::Delete => {
            client.send_for_status(Method::DELETE, PATH, None, &[StatusCode::NO_CONTENT]).await?;
            println!("Single sign-on removed; sessions already open last until they expire.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_urls(config: &Value) {
    println!("callback URL    {} (register it at the provider)", text(&config["callback_url"]));
    println!("login URL       {}", text(&config["login_url"]));
}

/// The client secret from standard input: typed without echo at a
/// terminal, otherwise read whole (one final line break dropped).
fn read_secret() -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut raw = Zeroizing::new(Vec::new());
    if stdin.is_terminal() {
        eprint!("Client secret (not shown): ");
        std::io::stderr().flush().ok();
        let read = crate::commands::secrets::read_line_without_echo(&mut raw);
        eprintln!();
        read.context("cannot read the client secret from the terminal")?;
    } else {
        stdin
            .lock()
            .take(MAX_SECRET_BYTES as u64 + 3)
            .read_to_end(&mut raw)
            .context("cannot read the client secret from standard input")?;
    }
    let mut end = raw.len();
    if raw[..end].ends_with(b"\n") {
        end -= 1;
        if raw[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end > MAX_SECRET_BYTES {
        bail!("the client secret is longer than {MAX_SECRET_BYTES} bytes");
    }
    if end == 0 {
        bail!("no client secret on standard input");
    }
    let secret = std::str::from_utf8(&raw[..end]).context("the client secret is not UTF-8 text")?;
    Ok(Zeroizing::new(secret.to_owned()))
}
