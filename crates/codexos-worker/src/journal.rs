//! The engine's journal over the store: events are appended under the
//! execution's lease, with the running totals, in one transaction.

use codexos_engine::{Journal, JournalError, TimelineEvent, Totals};
use codexos_store::{ExecutionTotals, Lease, NewEvent, Store, StoreError};

pub struct StoreJournal {
    pub store: Store,
    pub lease: Lease,
}

impl Journal for StoreJournal {
    async fn append(&mut self, events: &[TimelineEvent], totals: &Totals) -> Result<(), JournalError> {
        let events: Vec<NewEvent> =
            events.iter().map(|event| NewEvent { kind: event.kind().to_owned(), payload: event.payload() }).collect();
        let started = std::time::Instant::now();
        let res = self.store.append_events(&self.lease, &events, Some(&store_totals(totals))).await;
        metrics::histogram!("codexos_journal_append_seconds").record(started.elapsed().as_secs_f64());
        match res {
            Ok(_) => Ok(()),
            Err(StoreError::LeaseLost) => Err(JournalError::LeaseLost),
            Err(err) => Err(JournalError::Storage(err.to_string())),
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
