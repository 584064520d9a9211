//! The agent engine: what an agent is (its manifest), how it talks to a
//! model, which tools it may call and how each call runs in the sandbox,
//! and the loop that ties them together step by step.
//!
//! No SQL and no HTTP server here: the engine records its timeline through
//! the `Journal` trait that the worker implements over the store, so the
//! loop can be driven and measured on its own.

pub mod agent_loop;
pub mod conversation;
pub mod http_client;
pub mod manifest;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod policy;
pub mod redact;
pub mod replay;
pub mod signing;
pub mod timeline;
pub mod tools;

pub use agent_loop::{
    ExecutionOutcome, ExecutionSetup, Interrupted, KernelSandbox, Model, PauseSignal, ToolRunner, run_execution,
    run_with,
};
pub use conversation::{Message, ModelReply, TokenUsage, ToolCall, ToolSpec};
pub use manifest::{AgentManifest, ManifestError, Problem};
pub use memory::{Memory, NoMemory, RecalledNote};
pub use redact::{ExecutionSecrets, Redactor};
pub use replay::RecordedEvent;
pub use timeline::{Journal, JournalError, TimelineEvent, Totals};
