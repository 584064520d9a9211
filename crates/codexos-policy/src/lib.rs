//! Tenant policies in Rego, evaluated in process with `regorus`.
//!
//! A tenant's **bundle** is one or more Rego modules and a data document.
//! [`Policy::compile`] checks and compiles it (every problem with its
//! module, line and column); [`Policy::decide`] answers one **input
//! document** (a tool call, an agent's install, an execution's start; see
//! [`input`]) with a [`Decision`]: `allow`, `ask` (a person approves) or
//! `deny`, with the reasons.
//!
//! The convention (docs/policy.md): modules are in package `codexos` (or
//! below it), and define `deny` and/or `ask` as sets of reasons:
//!
//! ```rego
//! package codexos
//!
//! deny contains "no pushing from here" if {
//!     some command in input.shell.commands
//!     command[0] == "git"; command[1] == "push"
//! }
//! ```
//!
//! Any reason in `deny` denies; otherwise any reason in `ask` asks;
//! otherwise the input is allowed. An evaluation that fails, runs past its
//! time limit, or yields something else than a set of strings denies, with
//! a reason saying why (fail closed).
//!
//! Pure and synchronous: no database, no HTTP, no runtime.

mod bundle;
pub mod cases;
pub mod input;
mod policy;
pub mod shell;

pub use bundle::{Bundle, BundleError, MAX_DATA_BYTES, MAX_MODULE_BYTES, MAX_MODULES};
pub use cases::{Case, CaseResult, CasesError, parse_cases, run_cases};
pub use input::{Action, AgentFacts, Facts, Signature, SignatureStatus, TenantFacts, UserFacts};
pub use policy::{CompileError, CompileProblem, Decision, EVALUATION_TIME_LIMIT, Policy, Verdict};
pub use shell::ShellCommand;

/// The policy CodexOS ships and applies to a tenant that has set none.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.rego");
/// The module name the default policy has in its bundle.
pub const DEFAULT_MODULE_NAME: &str = "default.rego";
