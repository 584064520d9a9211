//! The audit log: per tenant, an append-only list of entries that is both a
//! hash chain (each entry holds the previous one's hash) and a Merkle tree
//! (the entry hashes are its leaves), with signed checkpoints of the tree.
//! The cryptography is `codexos_audit`'s; this module keeps it in the
//! database.
//!
//! Appends are serialized per tenant by the row of `audit_heads` (locked
//! with `FOR UPDATE` on PostgreSQL; SQLite's write transactions are serial),
//! which holds the size, the last hash and the tree's frontier, so an append
//! costs the same at the millionth entry as at the first. Nothing here ever
//! updates or deletes an entry or a checkpoint; the database refuses to as
//! well (triggers, and on PostgreSQL the application role's grants).

use std::sync::Arc;

use codexos_audit::{Checkpoint, Frontier, GENESIS, Hash, Record, SigningKey, StoredCheckpoint, StoredEntry};
use codexos_core::{TenantId, now_millis};
use sqlx::Row;

use crate::error::parse_id;
use crate::{Backend, Intent, Result, Store, StoreError};

/// What an audited action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Success,
    /// Refused for want of a permission, a quota or a valid credential.
    Denied,
    /// Attempted and failed (bad input, a conflict, an error).
    Failure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failure => "failure",
        }
    }
}

/// An entry to append: who did what to which object, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// `key:<id>`, `user:<id>` or `system`.
    pub actor: String,
    /// E.g. `execution.create`.
    pub action: String,
    /// The object acted on, e.g. `execution:<id>` or a request path.
    pub target: String,
    pub outcome: AuditOutcome,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

/// One recorded entry, as listed and exported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
    pub created_at: i64,
    /// Hex SHA-256 of the previous entry (zeros for the first).
    pub prev_hash: String,
    /// Hex: the chain link and the Merkle leaf hash.
    pub entry_hash: String,
}

/// The log's state after an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    pub size: u64,
    pub root: Hash,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditCheckpoint {
    pub size: u64,
    pub note: String,
    pub created_at: i64,
}

/// An inclusion proof of one entry in a signed checkpoint: everything
/// needed to check it without the database, given the verifier key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditProof {
    pub tenant: String,
    pub entry: AuditProofEntry,
    /// The entry's index in the tree (its seq minus one).
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Hex hashes of the audit path, leaf to root.
    pub proof: Vec<String>,
    /// The signed note of the checkpoint the proof leads to.
    pub checkpoint: String,
}

/// The fields an entry's hash covers, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditProofEntry {
    pub seq: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    /// The details as the JSON text that was hashed.
    pub details: String,
    pub created_at: i64,
    pub prev_hash: String,
}

impl AuditProof {
    /// The proof of `entry` in the tree of `leaves` (the log's first
    /// `checkpoint.size` leaf hashes).
    pub fn build(
        tenant: TenantId,
        entry: AuditProofEntry,
        leaves: &[Hash],
        checkpoint: &AuditCheckpoint,
    ) -> Result<AuditProof> {
        let index = entry.seq.checked_sub(1).ok_or(StoreError::NotFound(crate::Entity::AuditEntry))?;
        let proof = codexos_audit::inclusion_proof(leaves, index)
            .map_err(|err| StoreError::Corrupt(format!("cannot prove audit entry {}: {err}", entry.seq)))?;
        Ok(AuditProof {
            tenant: tenant.to_string(),
            entry,
            leaf_index: index,
            tree_size: checkpoint.size,
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: checkpoint.note.clone(),
        })
    }

    /// Checks the proof: the checkpoint's signature and origin, then the
    /// entry's path to the checkpoint's root. Returns the checkpoint.
    pub fn check(&self, key: &codexos_audit::VerifierKey) -> Result<Checkpoint, String> {
        let checkpoint = codexos_audit::open_checkpoint(&self.checkpoint, key).map_err(|err| err.to_string())?;
        let expected_origin = audit_origin(&self.tenant);
        if checkpoint.origin != expected_origin {
            return Err(format!("the checkpoint is of log '{}', not '{expected_origin}'", checkpoint.origin));
        }
        if checkpoint.size != self.tree_size {
            return Err(format!("the checkpoint is of size {}, the proof of size {}", checkpoint.size, self.tree_size));
        }
        if self.leaf_index.checked_add(1) != Some(self.entry.seq) {
            return Err(format!("entry {} cannot be leaf {}", self.entry.seq, self.leaf_index));
        }
        let record = Record {
            tenant: self.tenant.clone(),
            seq: self.entry.seq,
            actor: self.entry.actor.clone(),
            action: self.entry.action.clone(),
            target: self.entry.target.clone(),
            outcome: self.entry.outcome.clone(),
            request_id: self.entry.request_id.clone(),
            details: self.entry.details.clone(),
            created_at: self.entry.created_at,
            prev_hash: parse_hash(&self.entry.prev_hash).map_err(|err| err.to_string())?,
        };
        let proof = self
            .proof
            .iter()
            .map(|hash| parse_hash(hash).map_err(|err| err.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        codexos_audit::verify_inclusion(
            &record.entry_hash(),
            self.leaf_index,
            self.tree_size,
            &proof,
            &checkpoint.root,
        )
        .map_err(|err| format!("the entry is not in the checkpoint's tree: {err}"))?;
        Ok(checkpoint)
    }
}

/// The log's name in its checkpoints: one log per tenant.
pub fn audit_origin(tenant: &str) -> String {
    format!("codexos/audit/{tenant}")
}

fn parse_hash(text: &str) -> Result<Hash> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).map_err(|err| {
        StoreError::Corrupt(format!("audit hash '{}': {err}", text.chars().take(70).collect::<String>()))
    })?;
    Ok(hash)
}

/// An entry as stored, for the verifier.
#[allow(clippy::too_many_arguments)]
fn stored_entry(
    tenant: &str,
    seq: i64,
    [actor, action, target, outcome]: [String; 4],
    request_id: Option<String>,
    details: String,
    created_at: i64,
    prev_hash: &str,
    entry_hash: &str,
) -> StoredEntry {
    StoredEntry {
        record: Record {
            tenant: tenant.to_owned(),
            seq: u64::try_from(seq).unwrap_or(0),
            actor,
            action,
            target,
            outcome,
            request_id,
            details,
            created_at,
            // An unreadable hash cannot match anything: the verifier
            // reports the entry as edited.
            prev_hash: parse_hash(prev_hash).unwrap_or([0xff; 32]),
        },
        stored_hash: parse_hash(entry_hash).unwrap_or([0xff; 32]),
    }
}

/// Entries are read in pages of this many, each in its own transaction.
const PAGE: i64 = 10_000;

const ENTRY_COLUMNS: &str =
    "seq, actor, action, target, outcome, request_id, details, created_at, prev_hash, entry_hash";

impl Store {
    /// Appends an entry to the tenant's log; returns the log's new size and root.
    pub async fn append_audit(&self, tenant: TenantId, entry: &NewAuditEntry) -> Result<AuditHead> {
        let details = entry.details.to_string();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let select_head = format!("SELECT size, last_hash, frontier FROM audit_heads WHERE tenant_id = $1{lock}");
        let mut head = sqlx::query(&select_head).bind(tenant.to_string()).fetch_optional(&mut *tx).await?;
        if head.is_none() {
            // The tenant's first entry: create its head (racing appenders
            // on PostgreSQL all insert-or-ignore, then lock the one row).
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, size, last_hash, frontier, updated_at) VALUES ($1, 0, $2, $3, $4) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant.to_string())
            .bind(hex::encode(GENESIS))
            .bind(Frontier::new().to_text())
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            head = sqlx::query(&select_head).bind(tenant.to_string()).fetch_optional(&mut *tx).await?;
        }
        let head = head.ok_or_else(|| StoreError::Corrupt("the audit head vanished while locked".to_owned()))?;
        let size: i64 = head.try_get("size")?;
        let last_hash: String = head.try_get("last_hash")?;
        let frontier: String = head.try_get("frontier")?;
        let mut frontier = Frontier::from_text(&frontier).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let size = u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("audit size {size}")))?;
        if frontier.size() != size {
            return Err(StoreError::Corrupt(format!(
                "the audit head says {size} entries but its tree holds {}",
                frontier.size()
            )));
        }
        let record = Record {
            tenant: tenant.to_string(),
            seq: size + 1,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            outcome: entry.outcome.as_str().to_owned(),
            request_id: entry.request_id.clone(),
            details,
            created_at: now_millis(),
            prev_hash: parse_hash(&last_hash)?,
        };
        let entry_hash = record.entry_hash();
        frontier.push(entry_hash);
        sqlx::query(
            "INSERT INTO audit_entries (tenant_id, seq, actor, action, target, outcome, request_id, details, \
             created_at, prev_hash, entry_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(tenant.to_string())
        .bind(record.seq as i64)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.target)
        .bind(&record.outcome)
        .bind(&record.request_id)
        .bind(&record.details)
        .bind(record.created_at)
        .bind(hex::encode(record.prev_hash))
        .bind(hex::encode(entry_hash))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE audit_heads SET size = $1, last_hash = $2, frontier = $3, updated_at = $4 WHERE tenant_id = $5",
        )
        .bind(record.seq as i64)
        .bind(hex::encode(entry_hash))
        .bind(frontier.to_text())
        .bind(record.created_at)
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AuditHead { size: record.seq, root: frontier.root() })
    }

    /// The tenant's log size and root now; size 0 for an empty log.
    pub async fn audit_head(&self, tenant: TenantId) -> Result<AuditHead> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let frontier: Option<String> = sqlx::query_scalar("SELECT frontier FROM audit_heads WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let frontier = match frontier {
            Some(text) => Frontier::from_text(&text).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            None => Frontier::new(),
        };
        Ok(AuditHead { size: frontier.size(), root: frontier.root() })
    }

    /// Stores a signed checkpoint; one already stored at that size is kept.
    pub async fn add_audit_checkpoint(&self, tenant: TenantId, size: u64, note: &str) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (tenant_id, size, note, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, size) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(size as i64)
        .bind(note)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's checkpoints, smallest first.
    pub async fn audit_checkpoints(&self, tenant: TenantId) -> Result<Vec<AuditCheckpoint>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows =
            sqlx::query("SELECT size, note, created_at FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY size")
                .bind(tenant.to_string())
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(AuditCheckpoint {
                    size: read_u64(row, "size")?,
                    note: row.try_get("note")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Up to `limit` entries after `after`, in order.
    pub async fn audit_entries(&self, tenant: TenantId, after: u64, limit: i64) -> Result<Vec<AuditEntry>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant.to_string())
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let details: String = row.try_get("details")?;
                Ok(AuditEntry {
                    seq: read_u64(row, "seq")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    outcome: row.try_get("outcome")?,
                    request_id: row.try_get("request_id")?,
                    // Tampered text still lists; `verify` is what judges it.
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
                    created_at: row.try_get("created_at")?,
                    prev_hash: row.try_get("prev_hash")?,
                    entry_hash: row.try_get("entry_hash")?,
                })
            })
            .collect()
    }

    /// Feeds every entry of the tenant's log, in seq order and exactly as
    /// stored, to `visit`; read a page at a time.
    pub async fn scan_audit(&self, tenant: TenantId, mut visit: impl FnMut(StoredEntry)) -> Result<()> {
        let mut after = i64::MIN;
        loop {
            let (page, next) = self.audit_page(tenant, after).await?;
            page.into_iter().for_each(&mut visit);
            match next {
                Some(next) => after = next,
                None => return Ok(()),
            }
        }
    }

    /// One page of the tenant's log after the stored seq `after`, exactly
    /// as stored, and the seq to read on from (`None` after the last page).
    async fn audit_page(&self, tenant: TenantId, after: i64) -> Result<(Vec<StoredEntry>, Option<i64>)> {
        if self.backend == Backend::Sqlite
            && let Some(page) = self.audit_page_as_json(tenant, after).await?
        {
            return Ok(page);
        }
        self.audit_page_by_rows(tenant, after).await
    }

    /// SQLite: the page as one JSON text SQLite builds, so that it crosses
    /// from the database in one value rather than row by row (the rows'
    /// trip through the driver was most of a whole-log verification's
    /// time). `None` when a row does not fit the shape (a column of another
    /// type, text that is not UTF-8: only tampering makes them), and the
    /// page is then read row by row, as exactly as ever.
    async fn audit_page_as_json(
        &self,
        tenant: TenantId,
        after: i64,
    ) -> Result<Option<(Vec<StoredEntry>, Option<i64>)>> {
        type Row = (i64, String, String, String, String, Option<String>, String, i64, String, String);
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        // The second column counts values of another storage class than
        // the entry's shape: SQLite's JSON functions would turn a BLOB that
        // looks like JSONB into text, hiding what is really stored.
        let built = sqlx::query(&format!(
            "SELECT json_group_array(json_array({ENTRY_COLUMNS}) ORDER BY seq), \
                    SUM(typeof(seq) <> 'integer' OR typeof(created_at) <> 'integer' \
                        OR typeof(actor) <> 'text' OR typeof(action) <> 'text' OR typeof(target) <> 'text' \
                        OR typeof(outcome) <> 'text' OR typeof(details) <> 'text' \
                        OR typeof(prev_hash) <> 'text' OR typeof(entry_hash) <> 'text' \
                        OR typeof(request_id) NOT IN ('text', 'null')) \
             FROM (SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3)"
        ))
        .bind(tenant.to_string())
        .bind(after)
        .bind(PAGE)
        .fetch_one(&mut *tx)
        .await;
        tx.commit().await?;
        // A page SQLite cannot build (too large a text) is read row by row.
        let Ok(row) = built else { return Ok(None) };
        if row.try_get::<Option<i64>, _>(1).ok().flatten().unwrap_or(0) != 0 {
            return Ok(None);
        }
        let Ok(text) = row.try_get::<String, _>(0) else { return Ok(None) };
        let Ok(rows) = serde_json::from_str::<Vec<Row>>(&text) else { return Ok(None) };
        let full = rows.len() as i64 == PAGE;
        let tenant_text = tenant.to_string();
        let last = rows.last().map_or(after, |row| row.0);
        let page = rows
            .into_iter()
            .map(|(seq, actor, action, target, outcome, request_id, details, created_at, prev_hash, entry_hash)| {
                stored_entry(
                    &tenant_text,
                    seq,
                    [actor, action, target, outcome],
                    request_id,
                    details,
                    created_at,
                    &prev_hash,
                    &entry_hash,
                )
            })
            .collect();
        Ok(Some((page, full.then_some(last))))
    }

    async fn audit_page_by_rows(&self, tenant: TenantId, after: i64) -> Result<(Vec<StoredEntry>, Option<i64>)> {
        let tenant_text = tenant.to_string();
        // Keyset paging on the stored seq; a tampered seq column is the
        // verifier's to notice, the ORDER BY only has to be stable.
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(&tenant_text)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let full = rows.len() as i64 == PAGE;
        let mut last = after;
        let mut page = Vec::with_capacity(rows.len());
        // Columns by position (ENTRY_COLUMNS' order): this is the hot loop
        // of a whole-log verification.
        for row in &rows {
            let seq: i64 = row.try_get(0)?;
            last = seq;
            let prev_hash: &str = row.try_get(8)?;
            let entry_hash: &str = row.try_get(9)?;
            page.push(stored_entry(
                &tenant_text,
                seq,
                [row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?],
                row.try_get(5)?,
                row.try_get(6)?,
                row.try_get(7)?,
                prev_hash,
                entry_hash,
            ));
        }
        Ok((page, full.then_some(last)))
    }

    /// The leaf hashes of the first `size` entries, for proofs.
    pub async fn audit_leaves(&self, tenant: TenantId, size: u64) -> Result<Vec<Hash>> {
        let mut leaves = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut after = 0i64;
        while (leaves.len() as u64) < size {
            let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, entry_hash FROM audit_entries WHERE tenant_id = $1 AND seq > $2 AND seq <= $3 \
                 ORDER BY seq LIMIT $4",
            )
            .bind(tenant.to_string())
            .bind(after)
            .bind(size as i64)
            .bind(PAGE)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            if rows.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "the audit log holds {} entries, not the {size} its checkpoint covers",
                    leaves.len()
                )));
            }
            for (seq, hash) in rows {
                after = seq;
                leaves.push(parse_hash(&hash)?);
            }
        }
        Ok(leaves)
    }

    /// Tenants whose log has entries after its last checkpoint (every
    /// tenant's: for the checkpoint written at shutdown).
    pub async fn audit_heads_unsigned(&self) -> Result<Vec<TenantId>> {
        let mut tx = self.system_tx(Intent::Read).await?;
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT h.tenant_id FROM audit_heads h WHERE h.size > \
             COALESCE((SELECT MAX(c.size) FROM audit_checkpoints c WHERE c.tenant_id = h.tenant_id), 0)",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|id| parse_id(id, TenantId::parse)).collect()
    }
}

fn read_u64(row: &sqlx::any::AnyRow, column: &str) -> Result<u64> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {column} {value} in the audit log")))
}

/// Appends audit entries and signs checkpoints: every `every` entries, on
/// demand (for a proof of a recent entry) and at shutdown. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    store: Store,
    key: Arc<SigningKey>,
    every: u64,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("every", &self.every).finish_non_exhaustive()
    }
}

impl Auditor {
    pub fn new(store: Store, key: Arc<SigningKey>, every: u64) -> Self {
        Self { store, key, every: every.max(1) }
    }

    pub fn verifier(&self) -> codexos_audit::VerifierKey {
        self.key.verifier()
    }

    /// Appends an entry; signs a checkpoint when the log reaches a multiple
    /// of the interval. Returns the entry's seq.
    pub async fn record(&self, tenant: TenantId, entry: &NewAuditEntry) -> Result<u64> {
        let head = self.store.append_audit(tenant, entry).await?;
        if head.size % self.every == 0 {
            self.sign(tenant, head).await?;
        }
        Ok(head.size)
    }

    /// Signs the log's current head unless a checkpoint already covers it;
    /// returns the size signed, or `None` for an empty log.
    pub async fn checkpoint(&self, tenant: TenantId) -> Result<Option<u64>> {
        let head = self.store.audit_head(tenant).await?;
        if head.size == 0 {
            return Ok(None);
        }
        self.sign(tenant, head).await?;
        Ok(Some(head.size))
    }

    /// Signs every log with entries after its last checkpoint (at
    /// shutdown, and every `audit.checkpoint_interval`). A tenant that
    /// fails does not keep the others unsigned: all are tried, then the
    /// first failure is returned.
    pub async fn checkpoint_all(&self) -> Result<usize> {
        let tenants = self.store.audit_heads_unsigned().await?;
        let mut first_failure = None;
        for tenant in &tenants {
            if let Err(err) = self.checkpoint(*tenant).await {
                tracing::warn!(%tenant, error = %err, "cannot sign the tenant's audit checkpoint");
                first_failure.get_or_insert(err);
            }
        }
        match first_failure {
            Some(err) => Err(err),
            None => Ok(tenants.len()),
        }
    }

    async fn sign(&self, tenant: TenantId, head: AuditHead) -> Result<()> {
        let checkpoint = Checkpoint {
            origin: audit_origin(&tenant.to_string()),
            size: head.size,
            root: head.root,
            time_ms: now_millis(),
        };
        self.store.add_audit_checkpoint(tenant, head.size, &self.key.sign(&checkpoint)).await
    }

    /// Checks the tenant's whole log against its checkpoints.
    pub async fn verify(&self, tenant: TenantId) -> Result<codexos_audit::Verdict> {
        self.store.verify_audit(tenant, self.verifier()).await
    }

    /// An inclusion proof of entry `seq` in the smallest checkpoint that
    /// covers it, signing one of the current head if none does yet.
    pub async fn proof(&self, tenant: TenantId, seq: u64) -> Result<AuditProof> {
        let mut checkpoints = self.store.audit_checkpoints(tenant).await?;
        if !checkpoints.iter().any(|checkpoint| checkpoint.size >= seq) {
            self.checkpoint(tenant).await?;
            checkpoints = self.store.audit_checkpoints(tenant).await?;
        }
        let checkpoint = checkpoints
            .into_iter()
            .find(|checkpoint| checkpoint.size >= seq)
            .ok_or(StoreError::NotFound(crate::Entity::AuditEntry))?;
        self.store.audit_proof(tenant, seq, checkpoint).await
    }
}

impl Store {
    /// Checks the tenant's whole log, streamed from the database, against
    /// its checkpoints and the given key (the one trusted, not one read from
    /// the database).
    pub async fn verify_audit(
        &self,
        tenant: TenantId,
        key: codexos_audit::VerifierKey,
    ) -> Result<codexos_audit::Verdict> {
        self.verify_audit_with_witnesses(tenant, key, &[]).await
    }

    /// `verify_audit`, also against checkpoints kept outside the database
    /// (signed notes from an earlier export or verification): the database
    /// cannot drop or rewrite what they cover unseen, even with its own
    /// checkpoints deleted. Each is checked like a stored one.
    pub async fn verify_audit_with_witnesses(
        &self,
        tenant: TenantId,
        key: codexos_audit::VerifierKey,
        witnesses: &[StoredCheckpoint],
    ) -> Result<codexos_audit::Verdict> {
        let mut checkpoints: Vec<StoredCheckpoint> = self
            .audit_checkpoints(tenant)
            .await?
            .into_iter()
            .map(|checkpoint| StoredCheckpoint { size: checkpoint.size, note: checkpoint.note })
            .collect();
        for witness in witnesses {
            if !checkpoints.iter().any(|stored| stored.note == witness.note) {
                checkpoints.push(witness.clone());
            }
        }
        checkpoints.sort_by_key(|checkpoint| checkpoint.size);
        let mut verifier = codexos_audit::Verifier::new(&audit_origin(&tenant.to_string()), key, checkpoints);
        // Reading and hashing overlap: the next page is read while the
        // verifier hashes this one on a thread of its own.
        let (pages, mut received) = tokio::sync::mpsc::channel::<Vec<StoredEntry>>(2);
        let verifying = tokio::task::spawn_blocking(move || {
            while let Some(page) = received.blocking_recv() {
                page.into_iter().for_each(|entry| verifier.push(entry));
            }
            verifier.finish()
        });
        let mut after = i64::MIN;
        let read = loop {
            match self.audit_page(tenant, after).await {
                Ok((page, next)) => {
                    if pages.send(page).await.is_err() {
                        break Ok(());
                    }
                    match next {
                        Some(next) => after = next,
                        None => break Ok(()),
                    }
                }
                Err(err) => break Err(err),
            }
        };
        drop(pages);
        let verdict = verifying
            .await
            .map_err(|err| StoreError::Corrupt(format!("the audit verifier stopped unexpectedly: {err}")))?;
        read?;
        Ok(verdict)
    }

    /// The inclusion proof of entry `seq` in `checkpoint`.
    pub async fn audit_proof(&self, tenant: TenantId, seq: u64, checkpoint: AuditCheckpoint) -> Result<AuditProof> {
        let entry = self
            .audit_raw_entries(tenant, seq.saturating_sub(1), 1)
            .await?
            .into_iter()
            .find(|entry| entry.seq == seq)
            .ok_or(StoreError::NotFound(crate::Entity::AuditEntry))?;
        let leaves = self.audit_leaves(tenant, checkpoint.size).await?;
        AuditProof::build(tenant, entry, &leaves, &checkpoint)
    }

    /// Up to `limit` entries after `after` exactly as hashed (the details
    /// as stored text), for proofs and exports.
    pub async fn audit_raw_entries(&self, tenant: TenantId, after: u64, limit: i64) -> Result<Vec<AuditProofEntry>> {
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(tenant.to_string())
        .bind(after as i64)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(AuditProofEntry {
                    seq: read_u64(row, "seq")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    outcome: row.try_get("outcome")?,
                    request_id: row.try_get("request_id")?,
                    details: row.try_get("details")?,
                    created_at: row.try_get("created_at")?,
                    prev_hash: row.try_get("prev_hash")?,
                })
            })
            .collect()
    }
}
