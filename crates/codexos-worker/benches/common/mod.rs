//! What the engine benchmarks share: a tool that answers at once, and
//! percentiles of timings.

use std::time::Duration;

use codexos_engine::ToolRunner;
use codexos_engine::tools::{SandboxSettings, ToolError, ToolExecution, ToolInvocation};

/// Answers every call at once with the same file contents (about 2 KiB, a
/// small source file) and a plausible sandbox accounting.
pub struct CannedTool {
    output: String,
}

impl Default for CannedTool {
    fn default() -> Self {
        let line = "    let value = compute(input, &settings).map_err(|err| Error::from(err))?;\n";
        Self { output: line.repeat(2048 / line.len()) }
    }
}

impl ToolRunner for CannedTool {
    async fn run(&self, _invocation: &ToolInvocation, _settings: &SandboxSettings) -> Result<ToolExecution, ToolError> {
        Ok(ToolExecution {
            output: self.output.clone(),
            is_error: false,
            exit_code: Some(0),
            violations: Vec::new(),
            network: Vec::new(),
            usage: codexos_sandbox::Usage {
                cpu_time: Duration::from_millis(3),
                peak_memory_bytes: 8 << 20,
                wall_time: Duration::from_millis(5),
            },
            absent_protections: Vec::new(),
        })
    }
}

/// The `pct`th percentile of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], pct: usize) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len().saturating_sub(1) * pct / 100).copied().unwrap_or_default()
}
