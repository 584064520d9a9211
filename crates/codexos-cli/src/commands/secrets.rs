//! `codexos secret set|list|delete` (through the API) and
//! `codexos secret rotate-master-key` (on the database and the key file,
//! with the platform stopped), and how every process finds its master keys.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use codexos_core::{SecretName, Settings};
use codexos_secrets::{Keyring, MasterKey, WrappedKey, create_key_file, read_key_file, sync_dir};
use codexos_store::{Store, StoredDataKey};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::cli::{GlobalArgs, SecretCommand};
use crate::client::Client;
use crate::data_dir::{DataDir, Lock};
use crate::output::{text, urlencode};

/// The largest value `secret set` reads (the server's limit).
const MAX_VALUE_BYTES: usize = 64 * 1024;

pub async fn run(global: &GlobalArgs, command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set { name, json } => set(global, &name, json).await,
        SecretCommand::List(flag) => {
            let client = Client::from_args(global)?;
            let list: Value = client.get("/v1/secrets").await?;
            if flag.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<40}  {:<24}  UPDATED", "NAME", "CREATED");
                for secret in list["secrets"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40}  {:<24}  {}",
                        text(&secret["name"]),
                        text(&secret["created_at"]),
                        text(&secret["updated_at"])
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Delete { name } => {
            let client = Client::from_args(global)?;
            let path = format!("/v1/secrets/{}", urlencode(&name));
            client.send_for_status(Method::DELETE, &path, None, &[StatusCode::NO_CONTENT]).await?;
            println!("Deleted secret {name}.");
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::RotateMasterKey { database_url, force } => rotate(global, database_url, force).await,
    }
}

async fn set(global: &GlobalArgs, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    // Checked before the value is asked for: a typo should not cost a paste.
    let name = SecretName::parse(name)?;
    let client = Client::from_args(global)?;
    let value = read_value(&name)?;
    let body = json!({ "value": value.expose_secret() });
    let path = format!("/v1/secrets/{}", urlencode(name.as_str()));
    let (status, answer) =
        client.send_for_status(Method::PUT, &path, Some(&body), &[StatusCode::OK, StatusCode::CREATED]).await?;
    drop(body);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.unwrap_or(Value::Null))?);
    } else {
        let what = if status == StatusCode::CREATED { "created" } else { "replaced" };
        println!("Secret {name} {what}. Its value is never shown again.");
    }
    Ok(ExitCode::SUCCESS)
}

/// The value, from standard input: typed at a prompt without echo when it
/// is a terminal, otherwise read whole (one final line break dropped).
fn read_value(name: &SecretName) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    let mut raw = Zeroizing::new(Vec::new());
    if stdin.is_terminal() {
        eprint!("Value for {name} (not shown): ");
        std::io::stderr().flush().ok();
        let read = read_line_without_echo(&mut raw);
        eprintln!();
        read.context("cannot read the value from the terminal")?;
    } else {
        stdin
            .lock()
            .take(MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut raw)
            .context("cannot read the value from standard input")?;
    }
    let mut end = raw.len();
    if raw[..end].ends_with(b"\n") {
        end -= 1;
        if raw[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end > MAX_VALUE_BYTES {
        bail!("the value is longer than {MAX_VALUE_BYTES} bytes");
    }
    if end == 0 {
        bail!(
            "the value is empty; give it on standard input (e.g. `printf %s \"$TOKEN\" | codexos secret set {name}`)"
        );
    }
    let value = std::str::from_utf8(&raw[..end]).context("the value is not UTF-8 text")?;
    Ok(SecretString::from(value))
}

/// Reads one line from the terminal on standard input with echo off; echo
/// comes back however the read ends.
pub(crate) fn read_line_without_echo(line: &mut Vec<u8>) -> anyhow::Result<()> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Flush, &quiet).context("cannot turn the terminal's echo off")?;
    let mut byte = [0u8; 1];
    let res = (|| -> std::io::Result<()> {
        let mut handle = stdin.lock();
        while line.len() <= MAX_VALUE_BYTES + 2 {
            if handle.read(&mut byte)? == 0 || byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        Ok(())
    })();
    let restored = tcsetattr(&stdin, OptionalActions::Flush, &saved);
    res.context("cannot read the value")?;
    restored.context("cannot turn the terminal's echo back on")?;
    Ok(())
}

/// Where each of a process's master keys comes from.
pub enum KeyFileUse {
    /// `up` and `serve`: create the key file at first start.
    CreateIfAbsent,
    /// A worker: never create one (an API server does); without one, it
    /// runs executions that name no secret only.
    ReadIfPresent,
    /// Rotation: the key must exist.
    Require,
}

/// The file a rotation writes the next key to before it is in use;
/// every process reads it too, so a rotation stopped half-way loses
/// nothing (docs/operations.md).
pub fn next_key_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The master keys in effect: the configured key (or key file, created at
/// first start), the previous ones still accepted, and a rotation's next
/// key if one is under way. Refuses to go on when the database holds data
/// keys that none of them wraps: starting with the wrong key would make
/// every secret unreadable.
pub async fn load_keyring(
    settings: &Settings,
    store: &Store,
    key_file_use: KeyFileUse,
) -> anyhow::Result<Option<Keyring>> {
    let in_use = store.master_keys_in_use().await.context("cannot read which master keys the database uses")?;
    let key_file = settings.master_key_file();
    let mut extra_files: Vec<PathBuf> = settings.secrets.previous_master_key_files.clone();
    let current = match &settings.secrets.master_key {
        Some(text) => MasterKey::from_base64(text.expose_secret()).context("secrets.master_key")?,
        None => {
            extra_files.push(next_key_file(&key_file));
            match (key_file.exists(), key_file_use) {
                (true, _) => read_key_file(&key_file)?,
                (false, KeyFileUse::ReadIfPresent) => return Ok(None),
                (false, KeyFileUse::Require) => bail!(
                    "master key file {} does not exist (set secrets.master_key_file to the installation's key file)",
                    key_file.display()
                ),
                (false, KeyFileUse::CreateIfAbsent) => {
                    if !in_use.is_empty() {
                        bail!(
                            "master key file {} does not exist, and the database's secrets are under master key {}: \
                             restore that key file (or point secrets.master_key_file at it); a new key could not \
                             open them",
                            key_file.display(),
                            ids(&in_use)
                        );
                    }
                    let key = MasterKey::generate()?;
                    if create_key_file(&key_file, &key)? {
                        tracing::info!(path = %key_file.display(), id = key.id(), "master key created; back it up");
                        key
                    } else {
                        // Another process created it a moment ago.
                        read_key_file(&key_file)?
                    }
                }
            }
        }
    };
    let mut others = Vec::new();
    for (index, path) in extra_files.iter().enumerate() {
        let is_next = index == settings.secrets.previous_master_key_files.len();
        if is_next && !path.exists() {
            continue;
        }
        others.push(read_key_file(path)?);
    }
    let keyring = Keyring::new(current, others);
    let missing: Vec<(String, i64)> = in_use.into_iter().filter(|(id, _)| keyring.get(id).is_none()).collect();
    if !missing.is_empty() {
        bail!(
            "the database holds data keys wrapped by master key {}, which this process does not have (it has {}); \
             configure that key (secrets.master_key_file, secrets.master_key or secrets.previous_master_key_files)",
            ids(&missing),
            keyring.ids().join(", ")
        );
    }
    Ok(Some(keyring))
}

fn ids(in_use: &[(String, i64)]) -> String {
    in_use.iter().map(|(id, tenants)| format!("{id} ({tenants} tenants)")).collect::<Vec<_>>().join(", ")
}

/// Re-wraps every tenant's data key with a new master key. Crash-safe at
/// every point: the new key is written (`master.key.next`) before the
/// database uses it, every process reads that file too, the re-wrap is one
/// transaction, and the key file is replaced by an atomic rename; running
/// the command again finishes a rotation that stopped.
async fn rotate(global: &GlobalArgs, database_url: Option<String>, force: bool) -> anyhow::Result<ExitCode> {
    let settings = crate::commands::platform::load_settings(global, None, database_url)?;
    if settings.secrets.master_key.is_some() {
        bail!(
            "the master key comes from secrets.master_key, which this command cannot rewrite: put it in a key file \
             (secrets.master_key_file, mode 0600) and unset secrets.master_key, then rotate"
        );
    }
    // The embedded database's platform must be stopped: its lock says so.
    let _data_dir = if settings.database_url.is_none() {
        Some(DataDir::open(&settings.data_dir, Lock::Exclusive).context("stop `codexos up` before rotating")?)
    } else {
        None
    };
    let store = Store::connect(settings.database_url().expose_secret()).await?;
    let live = store.live_workers(settings.worker.lease_timeout).await?;
    if !live.is_empty() && !force {
        bail!(
            "{} worker(s) are running on this database ({}); stop every server and worker before rotating \
             (they hold the old key), or pass --force",
            live.len(),
            live.join(", ")
        );
    }
    let key_file = settings.master_key_file();
    let keyring = load_keyring(&settings, &store, KeyFileUse::Require)
        .await?
        .context("the installation has no master key to rotate")?;
    let old_id = keyring.current().id().to_owned();
    let next_file = next_key_file(&key_file);
    let new_key = if next_file.exists() {
        // A rotation that stopped half-way: finish it with its key.
        read_key_file(&next_file)?
    } else {
        let key = MasterKey::generate()?;
        if create_key_file(&next_file, &key)? { key } else { read_key_file(&next_file)? }
    };
    if new_key.id() == old_id {
        bail!("the next key {} is the current key; remove it and run the rotation again", next_file.display());
    }
    let mut rewrapped = 0;
    // A data key made meanwhile by a server left running would still be
    // under the old key: the re-wrap runs again until none is.
    for _ in 0..3 {
        rewrapped = rewrap_all(&store, &keyring, &new_key).await?;
        let in_use = store.master_keys_in_use().await?;
        if in_use.iter().all(|(id, _)| id == new_key.id()) {
            break;
        }
    }
    let left: Vec<(String, i64)> =
        store.master_keys_in_use().await?.into_iter().filter(|(id, _)| id != new_key.id()).collect();
    if !left.is_empty() {
        bail!(
            "data keys are still being made under master key {} (is a server running?); stop it and run the \
             rotation again: nothing is lost, the next key is kept in {}",
            ids(&left),
            next_file.display()
        );
    }
    // The database now uses the new key. The old key file is kept under
    // another name (backups of the database taken before now need it),
    // then the new key takes the file's name in one atomic rename.
    let retired = retired_key_file(&key_file, &old_id);
    match std::fs::hard_link(&key_file, &retired) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("cannot keep the old key as {}", retired.display())),
    }
    std::fs::rename(&next_file, &key_file)
        .with_context(|| format!("cannot move {} to {}", next_file.display(), key_file.display()))?;
    if let Some(dir) = key_file.parent() {
        sync_dir(dir).with_context(|| format!("cannot make {} durable", dir.display()))?;
    }
    for tenant in store.list_tenants().await? {
        let details = serde_json::json!({ "from": old_id.to_string(), "to": new_key.id().to_string() });
        crate::commands::operator::record(
            &store,
            tenant.id,
            "secrets.rotate_master_key",
            "master_key".to_owned(),
            details,
        )
        .await?;
    }
    println!("Master key rotated: {rewrapped} tenant data key(s) re-wrapped from {old_id} to {}.", new_key.id());
    println!("  current key  {}", key_file.display());
    println!("  old key      {} (database backups taken before now need it)", retired.display());
    println!("Back up the new key file; start the platform again (copy the key file to every host first).");
    Ok(ExitCode::SUCCESS)
}

/// Re-wraps every tenant's data key with `new_key`, in one transaction.
async fn rewrap_all(store: &Store, keyring: &Keyring, new_key: &MasterKey) -> anyhow::Result<u64> {
    store
        .rewrap_data_keys(|tenant, stored| {
            let wrapped = WrappedKey {
                master_key_id: stored.master_key_id.clone(),
                nonce: stored.nonce.clone(),
                ciphertext: stored.wrapped_key.clone(),
            };
            let new_wrapped = keyring.rewrap(tenant, &wrapped, new_key)?;
            Ok::<_, codexos_secrets::Error>(StoredDataKey {
                version: stored.version,
                master_key_id: new_wrapped.master_key_id,
                nonce: new_wrapped.nonce,
                wrapped_key: new_wrapped.ciphertext,
            })
        })
        .await?
        .context("cannot re-wrap a tenant's data key; nothing was changed")
}

fn retired_key_file(path: &Path, id: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".retired-{id}"));
    PathBuf::from(name)
}
