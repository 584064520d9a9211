//! `codexos audit`: the tenant's tamper-evident log. Verification and
//! export read the database directly, so they work with the server down
//! and trust nothing the server says; listing and proofs go through the API.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use codexos_audit::{Verdict, VerifierKey};
use codexos_store::{AuditProof, Store};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::cli::{AuditCommand, GlobalArgs};
use crate::client::Client;
use crate::commands::platform::{AUDIT_KEY_NAME, load_settings, open_auditor};
use crate::output::text;

pub async fn run(global: &GlobalArgs, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::List { after, limit, json } => list(global, after, limit, json).await,
        AuditCommand::Verify { tenant, key, checkpoints, database_url, json } => {
            verify(global, tenant.as_deref(), key.as_deref(), &checkpoints, database_url, json).await
        }
        AuditCommand::Proof { seq } => {
            let client = Client::from_args(global)?;
            let proof: Value = client.get(&format!("/v1/audit/entries/{seq}/proof")).await?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::CheckProof { file, key, tenant } => check_proof(global, &file, key.as_deref(), tenant.as_deref()),
        AuditCommand::Export { tenant, output, database_url } => export(global, &tenant, output, database_url).await,
    }
}

async fn list(global: &GlobalArgs, after: u64, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::from_args(global)?;
    let page: Value = client.get(&format!("/v1/audit?after={after}&limit={limit}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(ExitCode::SUCCESS);
    }
    for entry in page["entries"].as_array().into_iter().flatten() {
        println!(
            "{:>6}  {}  {:<26} {:<8} {}  by {}",
            entry["seq"],
            text(&entry["created_at"]),
            text(&entry["action"]),
            text(&entry["outcome"]),
            text(&entry["target"]),
            text(&entry["actor"])
        );
    }
    if let Some(next) = page["next_after"].as_u64() {
        println!("more: codexos audit list --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The key to trust: given on the command line, or derived from the
/// installation's signing key file (never read from the database, which
/// is what is being checked).
fn verifier_key(global: &GlobalArgs, given: Option<&str>) -> anyhow::Result<VerifierKey> {
    if let Some(text) = given {
        return VerifierKey::parse(text.trim()).context("--key is not a verifier key (name+id+key)");
    }
    let settings = load_settings(global, None, None)?;
    let path = settings.audit_signing_key_file();
    let contents = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read the audit signing key {} (or give the verifier key with --key)", path.display())
    })?;
    Ok(codexos_audit::SigningKey::from_text(&contents)
        .with_context(|| format!("{} is not an audit signing key", path.display()))?
        .verifier())
}

async fn open_store(global: &GlobalArgs, database_url: Option<String>) -> anyhow::Result<Store> {
    let settings = load_settings(global, None, database_url)?;
    Ok(Store::connect(settings.database_url().expose_secret()).await?)
}

async fn verify(
    global: &GlobalArgs,
    tenant: Option<&str>,
    key: Option<&str>,
    witness_files: &[std::path::PathBuf],
    database_url: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = verifier_key(global, key)?;
    // Checkpoints kept outside the database, each checked with the key now
    // so that a wrong file is named rather than reported as tampering.
    let mut witnesses = Vec::new();
    for file in witness_files {
        let note = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let checkpoint = codexos_audit::open_checkpoint(&note, &key)
            .with_context(|| format!("{} is not a checkpoint signed with this key", file.display()))?;
        witnesses.push((checkpoint.origin, codexos_audit::StoredCheckpoint { size: checkpoint.size, note }));
    }
    let store = open_store(global, database_url).await?;
    let mut tenants = store.list_tenants().await?;
    if let Some(slug) = tenant {
        tenants.retain(|tenant| tenant.slug.as_str() == slug);
        if tenants.is_empty() {
            bail!("no tenant '{slug}' in this installation");
        }
    }
    let mut intact = true;
    let mut reports = Vec::new();
    for tenant in &tenants {
        let origin = codexos_store::audit_origin(&tenant.id.to_string());
        let own: Vec<_> =
            witnesses.iter().filter(|(of, _)| *of == origin).map(|(_, checkpoint)| checkpoint.clone()).collect();
        let verdict = store.verify_audit_with_witnesses(tenant.id, key.clone(), &own).await?;
        intact &= matches!(verdict, Verdict::Intact { .. });
        if json {
            reports.push(serde_json::json!({ "tenant": tenant.slug.as_str(), "verdict": verdict }));
            continue;
        }
        match verdict {
            Verdict::Intact { size, root, checkpoints } => println!(
                "{}: intact: {size} entries, {checkpoints} signed checkpoints, root {}",
                tenant.slug,
                &root[..root.len().min(16)]
            ),
            Verdict::Tampered { seq, problem, detail } => {
                println!("{}: TAMPERED at entry {seq} ({problem:?}): {detail}", tenant.slug)
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "intact": intact, "tenants": reports }))?);
    }
    store.close().await;
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn check_proof(
    global: &GlobalArgs,
    file: &std::path::Path,
    key: Option<&str>,
    tenant: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let key = verifier_key(global, key)?;
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        ))
    };
    let text = std::io::read_to_string(reader).context("cannot read the proof")?;
    // One pretty-printed proof, or JSON lines of them (an export).
    let proofs: Vec<AuditProof> = match serde_json::from_str::<AuditProof>(&text) {
        Ok(proof) => vec![proof],
        Err(_) => text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(index, line)| {
                serde_json::from_str(line).with_context(|| format!("line {} is not an audit proof", index + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if proofs.is_empty() {
        bail!("{} holds no proof", file.display());
    }
    let mut valid = true;
    for proof in &proofs {
        if let Some(wanted) = tenant.filter(|wanted| *wanted != proof.tenant) {
            valid = false;
            println!("entry {}: INVALID: a proof of tenant {}, not {wanted}", proof.entry.seq, proof.tenant);
            continue;
        }
        match proof.check(&key) {
            Ok(checkpoint) => println!(
                "entry {} ({}) of tenant {}: included in the checkpoint of {} entries signed by {}",
                proof.entry.seq, proof.entry.action, proof.tenant, checkpoint.size, AUDIT_KEY_NAME
            ),
            Err(problem) => {
                valid = false;
                println!("entry {}: INVALID: {problem}", proof.entry.seq);
            }
        }
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn export(
    global: &GlobalArgs,
    slug: &str,
    output: Option<std::path::PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let settings = load_settings(global, None, database_url)?;
    let store = Store::connect(settings.database_url().expose_secret()).await?;
    let tenant = store
        .list_tenants()
        .await?
        .into_iter()
        .find(|tenant| tenant.slug.as_str() == slug)
        .with_context(|| format!("no tenant '{slug}' in this installation"))?;
    // Signing needs the installation's key: the export's proofs lead to a
    // checkpoint that covers every entry.
    let auditor = open_auditor(&settings, &store)?;
    auditor.checkpoint(tenant.id).await?;
    let Some(checkpoint) = store.audit_checkpoints(tenant.id).await?.pop() else {
        eprintln!("the log of '{slug}' is empty");
        return Ok(ExitCode::SUCCESS);
    };
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let leaves = store.audit_leaves(tenant.id, checkpoint.size).await?;
    let mut written = 0u64;
    let mut after = 0u64;
    while after < checkpoint.size {
        let page = store.audit_raw_entries(tenant.id, after, 1000).await?;
        if page.is_empty() {
            break;
        }
        for entry in page.into_iter().take_while(|entry| entry.seq <= checkpoint.size) {
            after = entry.seq;
            let proof = AuditProof::build(tenant.id, entry, &leaves, &checkpoint)?;
            serde_json::to_writer(&mut out, &proof)?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.flush()?;
    store.close().await;
    if let Some(path) = output {
        eprintln!("wrote {written} entries with their proofs to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
