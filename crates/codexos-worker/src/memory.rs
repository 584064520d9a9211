//! The agent's semantic memory over the store, scoped to the execution's
//! tenant and agent, with the manifest's retention period.

use std::time::Duration;

use codexos_core::{ExecutionId, TenantId, format_millis, now_millis};
use codexos_engine::{Memory, RecalledNote};
use codexos_store::{NewMemory, Store};

pub struct StoreMemory {
    pub store: Store,
    pub tenant: TenantId,
    pub agent_name: String,
    pub execution_id: ExecutionId,
    pub retention: Duration,
}

impl Memory for StoreMemory {
    async fn remember(&self, note: &str, tags: &[String]) -> Result<(), String> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let memory = NewMemory {
            agent_name: self.agent_name.clone(),
            execution_id: Some(self.execution_id),
            content: note.to_owned(),
            tags: tags.to_vec(),
            expires_at: Some(now_millis().saturating_add(retention_ms)),
        };
        self.store.remember(self.tenant, &memory).await.map(|_| ()).map_err(|err| err.to_string())
    }

    async fn recall(&self, query: &str, limit: u32) -> Result<Vec<RecalledNote>, String> {
        let found = self
            .store
            .recall(self.tenant, &self.agent_name, query, i64::from(limit))
            .await
            .map_err(|err| err.to_string())?;
        Ok(found
            .into_iter()
            .map(|memory| RecalledNote {
                note: memory.content,
                tags: memory.tags,
                written_at: format_millis(memory.created_at),
            })
            .collect())
    }
}
