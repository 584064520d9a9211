//! `codexos tenant quota`: an operator sets a tenant's quotas on the
//! database directly (a tenant's admins cannot, through the API); and
//! `codexos usage`: a tenant's usage against them, through the API.

use std::process::ExitCode;

use anyhow::{Context, bail};
use codexos_core::{QuotaOverrides, Quotas};
use codexos_store::Store;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, QuotaSetting, TenantQuotaArgs};
use crate::client::Client;
use crate::commands::platform::load_settings;
use crate::output::text;

pub async fn set_quota(global: &GlobalArgs, args: TenantQuotaArgs) -> anyhow::Result<ExitCode> {
    let settings = load_settings(global, None, args.database_url.clone())?;
    let defaults = settings.quotas;
    let store = Store::connect(settings.database_url().expose_secret()).await?;
    let tenant = store
        .list_tenants()
        .await?
        .into_iter()
        .find(|tenant| tenant.slug.as_str() == args.slug)
        .with_context(|| format!("no tenant '{}' in this installation (codexos tenant list)", args.slug))?;
    let current = store.tenant_quotas(tenant.id).await?;
    let wanted = changed(if args.reset { QuotaOverrides::default() } else { current }, &args)?;
    wanted.validate()?;
    let changed = wanted != current;
    if changed {
        store.set_tenant_quotas(tenant.id, &wanted).await?;
        let details = json!({ "before": current, "after": wanted });
        crate::commands::operator::record(
            &store,
            tenant.id,
            "tenant.set_quota",
            format!("tenant:{}", tenant.id),
            details,
        )
        .await?;
    }
    store.close().await;
    let effective = wanted.over(&defaults);
    if args.json {
        let report = json!({
            "tenant": tenant.slug.as_str(),
            "changed": changed,
            "quotas": effective,
            "set": wanted,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("tenant {}: quotas in effect{}", tenant.slug, if changed { " (changed)" } else { "" });
    for (name, value, own) in rows(&effective, &wanted) {
        let source = if own { "set for this tenant" } else { "installation default" };
        println!("  {name:<26} {value:<14} {source}");
    }
    if changed {
        println!("a running server applies the change within {} seconds", codexos_server::QUOTA_RELOAD_EVERY.as_secs());
    }
    Ok(ExitCode::SUCCESS)
}

/// `base` with the values given on the command line.
fn changed(base: QuotaOverrides, args: &TenantQuotaArgs) -> anyhow::Result<QuotaOverrides> {
    let small = |quota: &str, setting: QuotaSetting| -> anyhow::Result<Option<u32>> {
        match setting {
            QuotaSetting::Default => Ok(None),
            QuotaSetting::Value(value) => match u32::try_from(value) {
                Ok(value) => Ok(Some(value)),
                Err(_) => bail!("{quota} {value} is too large"),
            },
        }
    };
    let large = |setting: QuotaSetting| match setting {
        QuotaSetting::Default => None,
        QuotaSetting::Value(value) => Some(value),
    };
    let mut quotas = base;
    if let Some(setting) = args.requests_per_second {
        quotas.requests_per_second = small("requests_per_second", setting)?;
    }
    if let Some(setting) = args.burst {
        quotas.burst = small("burst", setting)?;
    }
    if let Some(setting) = args.max_concurrent_executions {
        quotas.max_concurrent_executions = small("max_concurrent_executions", setting)?;
    }
    if let Some(setting) = args.cpu_seconds_per_month {
        quotas.cpu_seconds_per_month = large(setting);
    }
    if let Some(setting) = args.storage {
        quotas.storage_bytes = large(setting);
    }
    Ok(quotas)
}

/// Each quota: its name, its value in effect, and whether the tenant has
/// its own.
fn rows(effective: &Quotas, own: &QuotaOverrides) -> [(&'static str, String, bool); 5] {
    [
        ("requests_per_second", effective.requests_per_second.to_string(), own.requests_per_second.is_some()),
        ("burst", effective.burst.to_string(), own.burst.is_some()),
        (
            "max_concurrent_executions",
            effective.max_concurrent_executions.to_string(),
            own.max_concurrent_executions.is_some(),
        ),
        ("cpu_seconds_per_month", effective.cpu_seconds_per_month.to_string(), own.cpu_seconds_per_month.is_some()),
        ("storage", human_bytes(effective.storage_bytes), own.storage_bytes.is_some()),
    ]
}

pub async fn usage(global: &GlobalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    let usage: Value = client.get("/v1/usage").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(ExitCode::SUCCESS);
    }
    let executions = &usage["executions"];
    let cpu = &usage["cpu_seconds"];
    let storage = &usage["storage_bytes"];
    println!(
        "tenant      {}, {} (the monthly quotas renew {})",
        text(&usage["tenant"]),
        text(&usage["period"]),
        text(&usage["resets_at"])
    );
    println!("requests    {} per second, bursts of {}", usage["requests"]["per_second"], usage["requests"]["burst"]);
    println!(
        "executions  {} running of {} at once{}; {} started this month",
        executions["active"],
        executions["limit"],
        at_limit(executions["active"].as_f64(), executions["limit"].as_f64()),
        executions["created_this_period"]
    );
    let (cpu_used, cpu_limit) = (cpu["used"].as_f64().unwrap_or(0.0), cpu["limit"].as_f64());
    println!(
        "cpu         {cpu_used:.1} of {} seconds{}{}",
        cpu["limit"],
        percent(cpu_used, cpu_limit),
        at_limit(Some(cpu_used), cpu_limit)
    );
    let (stored, storage_limit) = (storage["used"].as_u64().unwrap_or(0), storage["limit"].as_u64().unwrap_or(0));
    println!(
        "storage     {} of {}{}{}",
        human_bytes(stored),
        human_bytes(storage_limit),
        percent(stored as f64, Some(storage_limit as f64)),
        at_limit(Some(stored as f64), Some(storage_limit as f64))
    );
    Ok(ExitCode::SUCCESS)
}

fn percent(used: f64, limit: Option<f64>) -> String {
    match limit {
        Some(limit) if limit > 0.0 => format!(" ({:.1}%)", used / limit * 100.0),
        _ => String::new(),
    }
}

fn at_limit(used: Option<f64>, limit: Option<f64>) -> &'static str {
    match (used, limit) {
        (Some(used), Some(limit)) if used >= limit => ", the limit: new executions are refused",
        _ => "",
    }
}

/// Bytes as people read them, in binary units.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(50 << 30), "50.0 GiB");
    }
}
