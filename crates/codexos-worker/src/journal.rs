//! The engine's journal over the store: events are appended under the
//! execution's lease, with the running totals, in one transaction.

use codexos_engine::timeline::CheckpointTaken;
use codexos_engine::{Journal, JournalError, Redactor, TimelineEvent, Totals};
use codexos_store::{ExecutionTotals, Lease, NewEvent, Store, StoreError};

/// Retries of an append that failed in the database, and the first wait
/// (then four times longer each time: 0.2 s, 0.8 s, 3.2 s).
const APPEND_RETRIES: u32 = 3;
const APPEND_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);

pub struct StoreJournal {
    pub store: Store,
    pub lease: Lease,
    /// The last guard: no secret the execution opened is ever recorded,
    /// whichever event would carry it.
    pub redactor: Redactor,
}

impl Journal for StoreJournal {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        let events_in = events;
        let events: Vec<NewEvent> = events
            .iter()
            .map(|event| {
                let mut payload = event.payload();
                self.redactor.redact_json(&mut payload);
                NewEvent { kind: event.kind().to_owned(), payload }
            })
            .collect();
        let totals = store_totals(totals);
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let res = self.store.append_events(&self.lease, &events, Some(&totals)).await;
            metrics::histogram!("codexos_journal_append_seconds").record(started.elapsed().as_secs_f64());
            match res {
                Ok(_) => {
                    self.index_checkpoints(events_in).await;
                    return Ok(());
                }
                Err(StoreError::LeaseLost) => return Err(JournalError::LeaseLost),
                // A database that is briefly busy or unreachable: the events
                // are written in one transaction, so trying again is safe.
                Err(StoreError::Database(err)) if attempt < APPEND_RETRIES => {
                    attempt += 1;
                    tracing::warn!(execution = %self.lease.execution_id, attempt, error = %err, "journal append failed; retrying");
                    tokio::time::sleep(APPEND_BACKOFF * 4u32.pow(attempt - 1)).await;
                }
                Err(err) => return Err(JournalError::Storage(err.to_string())),
            }
        }
    }
}

impl StoreJournal {
    /// Adds the checkpoints the events name to the index retention works
    /// from. An index entry that fails to be written only means a
    /// checkpoint that retention will prune early: logged, not fatal.
    async fn index_checkpoints(&self, events: &[TimelineEvent]) {
        for event in events {
            let TimelineEvent::ToolCall {
                step,
                checkpoint: Some(CheckpointTaken { id: Some(id), added_bytes, .. }),
                ..
            } = event
            else {
                continue;
            };
            let added = i64::try_from(*added_bytes).unwrap_or(i64::MAX);
            let recorded =
                self.store.record_checkpoint(self.lease.tenant, self.lease.execution_id, i64::from(*step), id, added);
            if let Err(err) = recorded.await {
                tracing::warn!(execution = %self.lease.execution_id, error = %err, "cannot index a checkpoint");
            }
        }
    }
}

pub fn store_totals(totals: &Totals) -> ExecutionTotals {
    let signed = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    ExecutionTotals {
        steps: signed(totals.steps),
        input_tokens: signed(totals.input_tokens),
        output_tokens: signed(totals.output_tokens),
        cost_microdollars: totals.cost_microdollars,
        cpu_ms: signed(totals.cpu_ms),
        peak_memory_bytes: signed(totals.peak_memory_bytes),
        wall_ms: signed(totals.wall_ms),
    }
}

pub fn engine_totals(totals: &ExecutionTotals) -> Totals {
    let unsigned = |value: i64| u64::try_from(value).unwrap_or(0);
    Totals {
        steps: unsigned(totals.steps),
        input_tokens: unsigned(totals.input_tokens),
        output_tokens: unsigned(totals.output_tokens),
        cost_microdollars: totals.cost_microdollars,
        cpu_ms: unsigned(totals.cpu_ms),
        peak_memory_bytes: unsigned(totals.peak_memory_bytes),
        wall_ms: unsigned(totals.wall_ms),
    }
}
