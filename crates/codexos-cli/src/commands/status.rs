//! `codexos status`: the server's detailed health.

use std::process::ExitCode;

use reqwest::StatusCode;
use serde_json::Value;

use crate::cli::GlobalArgs;
use crate::client::Client;
use crate::output::text;

pub async fn run(global: &GlobalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    // 503 still carries the report: the database is down, say so.
    let health: Value =
        client.get_accepting("/health/detailed", &[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]).await?;
    if let Some(error) = health.get("error") {
        // 503 before the report: the key could not even be checked.
        anyhow::bail!("the server is unavailable: {}", error["message"].as_str().unwrap_or("no message"));
    }
    let status = health["status"].as_str().unwrap_or("unknown");
    if json {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        let database = &health["database"];
        let worker = &health["worker"];
        let sandbox = &health["sandbox"];
        println!(
            "server    {} (CodexOS {}, up {}s)",
            client.base_url(),
            text(&health["version"]),
            health["uptime_seconds"]
        );
        println!("status    {status}");
        match database["round_trip_ms"].as_f64() {
            Some(millis) => println!("database  {}, round trip {millis:.2} ms", text(&database["backend"])),
            None => println!("database  {}, unreachable: {}", text(&database["backend"]), text(&database["error"])),
        }
        println!(
            "workers   {} alive; queue {} waiting, {} running, lag {}s",
            worker["workers_alive"], worker["queue_depth"], worker["running"], worker["lag_seconds"]
        );
        let missing = sandbox["missing"].as_array().map(Vec::len).unwrap_or_default();
        println!(
            "sandbox   {} (Landlock ABI {}, cgroups {})",
            if missing == 0 {
                "all protections available".to_owned()
            } else {
                format!("{missing} protections missing")
            },
            sandbox["landlock"]["abi"],
            text(&sandbox["cgroups"]["version"])
        );
        for problem in health["problems"].as_array().into_iter().flatten() {
            println!("problem   {}", text(problem));
        }
    }
    Ok(if status == "unavailable" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
