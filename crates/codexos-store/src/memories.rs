//! Semantic memory: an agent's notes across executions, per tenant and
//! agent, found again by full-text relevance (SQLite FTS5 with BM25, or
//! PostgreSQL's text search with `ts_rank`), with an expiry each.

use codexos_core::{ExecutionId, TenantId, now_millis};
use sqlx::Row;

use crate::{Backend, Intent, Result, Store, StoreError};

/// The longest note accepted, in bytes.
pub const MAX_MEMORY_BYTES: usize = 16 * 1024;
/// The most words of a query that count.
const MAX_QUERY_TERMS: usize = 16;

/// A note to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMemory {
    pub agent_name: String,
    pub execution_id: Option<ExecutionId>,
    pub content: String,
    pub tags: Vec<String>,
    /// When the note stops existing (milliseconds); `None` keeps it.
    pub expires_at: Option<i64>,
}

/// A note found by `recall`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Memory {
    pub id: String,
    pub content: String,
    pub tags: Vec<String>,
    pub created_at: i64,
    /// Relevance: higher is better. Comparable within one answer only.
    pub score: f64,
}

impl Store {
    /// Stores a note for the tenant's agent; `NotFound(Agent)` if the tenant
    /// has no such agent.
    pub async fn remember(&self, tenant: TenantId, memory: &NewMemory) -> Result<String> {
        if memory.content.len() > MAX_MEMORY_BYTES {
            return Err(StoreError::PayloadTooLarge {
                kind: "memory".to_owned(),
                bytes: memory.content.len(),
                limit: MAX_MEMORY_BYTES,
            });
        }
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.tenant_tx(tenant, Intent::Write).await?;
        let res = sqlx::query(
            "INSERT INTO memories (id, tenant_id, agent_name, execution_id, content, tags, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(tenant.to_string())
        .bind(&memory.agent_name)
        .bind(memory.execution_id.map(|id| id.to_string()))
        .bind(&memory.content)
        .bind(serde_json::to_string(&memory.tags).unwrap_or_else(|_| "[]".to_owned()))
        .bind(now_millis())
        .bind(memory.expires_at)
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound(crate::Entity::Agent));
            }
            Err(err) => return Err(err.into()),
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The tenant's agent's unexpired notes that share words with `query`,
    /// most relevant first. A query without words finds nothing.
    pub async fn recall(&self, tenant: TenantId, agent_name: &str, query: &str, limit: i64) -> Result<Vec<Memory>> {
        let terms = query_terms(query);
        if terms.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        // The terms are letters and digits only, so they cannot change the
        // query's syntax; any of them may match, relevance ranks.
        let (sql, match_text) = match self.backend {
            Backend::Sqlite => (
                "SELECT m.id, m.content, m.tags, m.created_at, -bm25(memories_fts) AS score \
                 FROM memories_fts JOIN memories m ON m.rowid = memories_fts.rowid \
                 WHERE memories_fts MATCH $1 AND m.tenant_id = $2 AND m.agent_name = $3 \
                   AND (m.expires_at IS NULL OR m.expires_at > $4) \
                 ORDER BY score DESC, m.created_at DESC LIMIT $5",
                terms.iter().map(|term| format!("\"{term}\"")).collect::<Vec<_>>().join(" OR "),
            ),
            Backend::Postgres => (
                "SELECT m.id, m.content, m.tags, m.created_at, \
                        CAST(ts_rank(m.search, to_tsquery('english', $1)) AS DOUBLE PRECISION) AS score \
                 FROM memories m \
                 WHERE m.search @@ to_tsquery('english', $1) AND m.tenant_id = $2 AND m.agent_name = $3 \
                   AND (m.expires_at IS NULL OR m.expires_at > $4) \
                 ORDER BY score DESC, m.created_at DESC LIMIT $5",
                terms.join(" | "),
            ),
        };
        let mut tx = self.tenant_tx(tenant, Intent::Read).await?;
        let rows = sqlx::query(sql)
            .bind(match_text)
            .bind(tenant.to_string())
            .bind(agent_name)
            .bind(now_millis())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let tags: String = row.try_get("tags")?;
                let tags = serde_json::from_str(&tags)
                    .map_err(|err| StoreError::Corrupt(format!("tags of a memory note: {err}")))?;
                Ok(Memory {
                    id: row.try_get("id")?,
                    content: row.try_get("content")?,
                    tags,
                    created_at: row.try_get("created_at")?,
                    score: row.try_get("score")?,
                })
            })
            .collect()
    }

    /// Deletes every tenant's notes whose expiry has passed; returns how
    /// many. Runs on the workers' schedule.
    pub async fn purge_expired_memories(&self) -> Result<u64> {
        let mut tx = self.system_tx(Intent::Write).await?;
        let res = sqlx::query("DELETE FROM memories WHERE expires_at IS NOT NULL AND expires_at <= $1")
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected())
    }
}

/// Words too common to say anything about relevance. PostgreSQL's English
/// configuration drops them itself; SQLite's index does not, so the query
/// leaves them out on both backends alike.
const STOP_WORDS: [&str; 48] = [
    "a", "about", "an", "and", "are", "as", "at", "be", "but", "by", "can", "did", "do", "does", "for", "from", "had",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "so",
    "that", "the", "their", "there", "this", "to", "was", "we", "what", "when", "where", "why", "with",
];

/// The words of a query, lowercased, without stop words: runs of letters
/// and digits.
fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .filter(|word| !STOP_WORDS.contains(&word.as_str()))
        .collect();
    terms.sort();
    terms.dedup();
    terms.truncate(MAX_QUERY_TERMS);
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_plain_words() {
        assert_eq!(query_terms("Why did `cargo test` fail? fail"), vec!["cargo", "fail", "test"]);
        assert_eq!(query_terms("\" OR * NEAR( ) -- ;"), vec!["near"]);
        assert!(query_terms("*** ()").is_empty());
    }
}
