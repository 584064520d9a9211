//! The tenant's policy as the loop asks it before every tool call
//! (docs/policy.md). The worker compiles the policy once per execution (a
//! process-wide cache keyed by the bundle's digest makes that once per
//! tenant and version) and gathers the facts that stay the same; each call
//! adds its tool, arguments and step.
//!
//! The strictest answer of the manifest's own rules and the policy wins:
//! a tool outside `tools.allow` is denied whatever the policy says; a call
//! the policy denies is denied even if the manifest would only ask; a call
//! either one asks about waits for a person.

use std::sync::Arc;

use codexos_policy::{AgentFacts, Decision, Facts, Policy, Signature};

use crate::manifest::{AgentKind, AgentManifest};
use crate::mcp::McpTransport;

/// Which policy decides: the tenant's (by version) or the one CodexOS ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    Default,
    Tenant { version: i64 },
}

impl PolicySource {
    /// How reasons name it: "the default policy", "the tenant's policy (version 3)".
    pub fn describe(self) -> String {
        match self {
            PolicySource::Default => "the default policy".to_owned(),
            PolicySource::Tenant { version } => format!("the tenant's policy (version {version})"),
        }
    }
}

/// A compiled policy and the facts of one execution.
#[derive(Debug, Clone)]
pub struct PolicyGate {
    pub policy: Arc<Policy>,
    pub source: PolicySource,
    pub facts: Facts,
}

impl PolicyGate {
    /// The decision on a call of `tool` (as the allow-list names it) with
    /// `arguments`, at `step`. Evaluated on the blocking pool: a hostile
    /// policy may use its whole time limit, which must not stall the
    /// runtime's threads.
    pub async fn tool_call(&self, tool: &str, arguments: &serde_json::Value, step: u32) -> Decision {
        let input = self.facts.tool_call(tool, arguments, step);
        let policy = Arc::clone(&self.policy);
        tokio::task::spawn_blocking(move || policy.decide(&input))
            .await
            .unwrap_or_else(|_| Decision::failed("the policy thread stopped unexpectedly"))
    }
}

/// A version's signature as a policy sees it, from what registration found.
pub fn signature_facts(
    status: codexos_core::SignatureStatus,
    key_id: Option<&codexos_core::PublisherKeyId>,
) -> Signature {
    let status = match status {
        codexos_core::SignatureStatus::Unsigned => codexos_policy::SignatureStatus::Unsigned,
        codexos_core::SignatureStatus::Verified => codexos_policy::SignatureStatus::Verified,
        codexos_core::SignatureStatus::Untrusted => codexos_policy::SignatureStatus::Untrusted,
    };
    Signature { status, key_id: key_id.map(ToString::to_string) }
}

/// What a policy knows of an agent version from its manifest, and from
/// what registration found of its signature.
pub fn agent_facts(manifest: &AgentManifest, publisher: Option<String>, signature: Signature) -> AgentFacts {
    let network = match &manifest.limits.network {
        codexos_sandbox::NetworkPolicy::None => Vec::new(),
        codexos_sandbox::NetworkPolicy::Allow(destinations) => {
            destinations.iter().map(|destination| destination.to_string().to_ascii_lowercase()).collect()
        }
    };
    let mcp_commands = manifest
        .mcp
        .iter()
        .filter_map(|server| match &server.transport {
            McpTransport::Stdio { command, .. } => Some(command.clone()),
            McpTransport::Http { .. } => None,
        })
        .collect();
    let mcp_hosts = manifest
        .mcp
        .iter()
        .filter_map(|server| match &server.transport {
            McpTransport::Http { url } => codexos_policy::input::destination(url),
            McpTransport::Stdio { .. } => None,
        })
        .collect();
    AgentFacts {
        name: manifest.name.to_string(),
        version: manifest.version.to_string(),
        kind: match manifest.kind {
            AgentKind::Llm(_) => "llm",
            AgentKind::Workflow(_) => "workflow",
        }
        .to_owned(),
        publisher,
        signature,
        tools: manifest.tools.clone(),
        network,
        mcp_hosts,
        mcp_commands,
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn facts_come_from_the_manifest() {
        let manifest = AgentManifest::parse(
            r#"
name = "fixer"
version = "1.2.0"
kind = "llm"
instructions = "x"

[model]
provider = "openai"
name = "m"
base_url = "http://127.0.0.1:9/v1"

[tools]
allow = ["shell", "docs.*"]

[limits]
network = { allow = ["PyPI.org:443", "[::1]:8080"] }

[[mcp]]
name = "docs"
url = "https://Docs.Example.com/mcp"

[[mcp]]
name = "fs"
command = ["npx", "-y", "fs-server"]
"#,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let facts = agent_facts(&manifest, None, Signature::unsigned());
        assert_eq!(facts.name, "fixer");
        assert_eq!(facts.kind, "llm");
        assert_eq!(facts.tools, ["shell", "docs.*"]);
        assert_eq!(facts.network, ["pypi.org:443", "[::1]:8080"]);
        assert_eq!(facts.mcp_hosts, ["docs.example.com:443"]);
        assert_eq!(facts.mcp_commands, [["npx", "-y", "fs-server"]]);
    }
}
