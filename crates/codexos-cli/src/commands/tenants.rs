//! `codexos tenant`: the installation's tenants. These are the operator's
//! commands, run on the database itself (like `audit verify`): a tenant's
//! own keys must not be able to create tenants or change their limits.

use std::process::ExitCode;

use anyhow::Context;
use codexos_core::TenantSlug;
use codexos_store::Store;
use secrecy::ExposeSecret;

use crate::cli::{GlobalArgs, TenantCommand};
use crate::commands::platform::load_settings;

pub async fn run(global: &GlobalArgs, command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create { slug, owner_email, name, database_url, json } => {
            let slug = TenantSlug::parse(&slug)?;
            let email = owner_email.trim();
            if email.split('@').count() != 2
                || email.split('@').any(str::is_empty)
                || email.contains(char::is_whitespace)
            {
                anyhow::bail!("--owner-email '{email}' is not an email address");
            }
            let store = open_store(global, database_url).await?;
            let name = name.unwrap_or_else(|| slug.to_string());
            let created = store.create_tenant_with_owner(&slug, &name, email).await.map_err(|err| match err {
                codexos_store::StoreError::Conflict(_) => anyhow::anyhow!("a tenant '{slug}' exists already"),
                other => other.into(),
            })?;
            let details = serde_json::json!({ "slug": created.tenant.slug, "owner_email": created.owner_email });
            crate::commands::operator::record(
                &store,
                created.tenant.id,
                "tenant.create",
                format!("tenant:{}", created.tenant.id),
                details,
            )
            .await?;
            store.close().await;
            if json {
                let body = serde_json::json!({
                    "tenant": created.tenant,
                    "owner_email": created.owner_email,
                    "owner_key": created.owner_key.expose(),
                });
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!(
                    "Created tenant '{}' ({}) with owner {}.",
                    created.tenant.slug, created.tenant.id, created.owner_email
                );
                println!("Owner API key (shown once):");
                println!("  {}", created.owner_key.expose());
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::List { database_url, json } => {
            let store = open_store(global, database_url).await?;
            let tenants = store.list_tenants().await?;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                println!("{:<24}  {:<36}  NAME", "SLUG", "ID");
                for tenant in tenants {
                    println!("{:<24}  {:<36}  {}", tenant.slug, tenant.id, tenant.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Quota(args) => crate::commands::quotas::set_quota(global, args).await,
        TenantCommand::Sso(command) => crate::commands::sso::run(global, command).await,
    }
}

/// The installation's database, as configured (or as given).
pub async fn open_store(global: &GlobalArgs, database_url: Option<String>) -> anyhow::Result<Store> {
    let settings = load_settings(global, None, database_url)?;
    Store::connect(settings.database_url().expose_secret()).await.context("cannot open the installation's database")
}
