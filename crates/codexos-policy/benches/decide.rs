//! One policy decision with the default policy, on a typical shell call
//! (compiled once, as a worker does per tenant and version), and compiling
//! the default bundle. BENCHMARKS.md compares these with the sandbox's
//! start time.

use std::hint::black_box;

use codexos_policy::{AgentFacts, Bundle, Facts, Policy, Signature, TenantFacts, UserFacts, Verdict};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

fn facts() -> Facts {
    Facts {
        tenant: TenantFacts { id: "0190f5a2-7c1e-7d3a-9b1e-2f4c6a8e0b12".into(), slug: "acme".into() },
        user: UserFacts { id: Some("0190f5a2-7c1e-7d3a-9b1e-2f4c6a8e0b13".into()), role: None },
        agent: AgentFacts {
            name: "fixer".into(),
            version: "1.4.2".into(),
            kind: "llm".into(),
            publisher: None,
            signature: Signature::unsigned(),
            tools: ["shell", "read_file", "write_file", "apply_patch", "list_dir", "search"].map(String::from).to_vec(),
            network: vec!["pypi.org:443".into()],
            mcp_hosts: Vec::new(),
            mcp_commands: Vec::new(),
        },
        workspace: Some("/srv/work/acme/repo".into()),
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::builtin_default().unwrap_or_else(|err| panic!("{err}"));
    let facts = facts();
    let command = "cargo test --workspace 2>&1 | tail -n 50 && git status --short";
    let input = facts.tool_call("shell", &json!({ "command": command }), 7);
    assert_eq!(policy.decide(&input).verdict, Verdict::Allow);
    let risky = facts.tool_call("shell", &json!({ "command": "rm -rf /tmp/build && git push --force" }), 7);
    assert_eq!(policy.decide(&risky).verdict, Verdict::Ask);

    c.bench_function("policy/decide_default_shell_call", |b| b.iter(|| policy.decide(black_box(&input))));
    c.bench_function("policy/decide_default_shell_call_asks", |b| b.iter(|| policy.decide(black_box(&risky))));
    // What the engine does per call: the input built and the command parsed, then the decision.
    c.bench_function("policy/input_and_decide", |b| {
        b.iter(|| {
            let input = facts.tool_call("shell", &json!({ "command": black_box(command) }), 7);
            policy.decide(&input)
        })
    });
    let bundle = Bundle::builtin_default();
    c.bench_function("policy/compile_default", |b| b.iter(|| Policy::compile(black_box(&bundle))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
