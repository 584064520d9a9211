use pretty_assertions::assert_eq;

use super::*;

const LLM: &str = r#"
name = "fixer"
version = "0.1.0"
kind = "llm"
description = "Fixes failing tests"
instructions = "You are a careful engineer."

[model]
provider = "openai"
name = "gpt-4.1-mini"
base_url = "http://127.0.0.1:8080/v1"
api_key_env = "OPENAI_API_KEY"

[tools]
allow = ["shell", "read_file", "write_file", "apply_patch", "list_dir", "search"]

[limits]
max_steps = 30
timeout = "15m"
cpu_seconds = 300
memory = "1GiB"
network = { allow = ["pypi.org:443"] }
"#;

const WORKFLOW: &str = r#"
name = "tester"
version = "1.2.0-beta.1"
kind = "workflow"

[tools]
allow = ["shell"]

[[steps]]
tool = "shell"
args = { command = "cargo test" }

[[steps]]
name = "report"
tool = "shell"
args = { command = "git status --short" }
continue_on_error = true
"#;

fn problems(text: &str) -> Vec<(String, String)> {
    AgentManifest::parse(text).unwrap_err().problems.into_iter().map(|p| (p.key, p.reason)).collect()
}

#[test]
fn an_llm_manifest_parses_with_its_values() {
    let manifest = AgentManifest::parse(LLM).unwrap();
    assert_eq!(manifest.name.as_str(), "fixer");
    assert_eq!(manifest.version, semver::Version::new(0, 1, 0));
    assert_eq!(manifest.kind_name(), "llm");
    let AgentKind::Llm(llm) = &manifest.kind else { panic!("not llm") };
    assert_eq!(llm.instructions, "You are a careful engineer.");
    assert_eq!(llm.model.provider, Provider::OpenAi);
    assert_eq!(llm.model.name, "gpt-4.1-mini");
    assert_eq!(llm.model.base_url, "http://127.0.0.1:8080/v1");
    assert_eq!(llm.model.api_key, Some(ApiKeySource::Env("OPENAI_API_KEY".into())));
    assert!(llm.model.stream);
    assert_eq!(manifest.tools.len(), 6);
    assert!(manifest.allows("apply_patch"));
    assert!(!manifest.allows("http_fetch"));
    assert_eq!(manifest.limits.max_steps, 30);
    assert_eq!(manifest.limits.timeout, Duration::from_secs(900));
    assert_eq!(manifest.limits.memory_bytes, 1 << 30);
    assert_eq!(manifest.limits.network, NetworkPolicy::Allow(vec![Destination { host: "pypi.org".into(), port: 443 }]));
}

#[test]
fn a_workflow_manifest_parses_its_steps() {
    let manifest = AgentManifest::parse(WORKFLOW).unwrap();
    let AgentKind::Workflow(workflow) = &manifest.kind else { panic!("not a workflow") };
    assert_eq!(
        workflow.steps,
        vec![
            WorkflowStep {
                name: "shell".into(),
                tool: "shell".into(),
                arguments: serde_json::json!({"command": "cargo test"}),
                continue_on_error: false,
            },
            WorkflowStep {
                name: "report".into(),
                tool: "shell".into(),
                arguments: serde_json::json!({"command": "git status --short"}),
                continue_on_error: true,
            },
        ]
    );
    // Defaults apply where the manifest is silent.
    assert_eq!(manifest.limits, ManifestLimits::default());
}

#[test]
fn every_problem_is_named_with_its_key() {
    let text = r#"
name = "Bad Name"
version = "one"
kind = "llm"
colour = "blue"

[model]
provider = "acme"
base_url = "ftp://x"

[tools]
allow = ["shell", "rm_rf", "shell"]

[limits]
max_steps = 0
timeout = "soon"
memory = "lots"
network = { allow = ["nohost"] }
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "name",
            "version",
            "tools.allow[1]",
            "tools.allow[2]",
            "limits.max_steps",
            "limits.timeout",
            "limits.memory",
            "limits.network.allow[0]",
            "model.provider",
            "model.name",
            "model.base_url",
            "colour",
        ]
    );
    assert!(found[2].1.contains("unknown tool 'rm_rf'"), "{found:?}");
    assert_eq!(found[3].1, "'shell' is listed twice");
    assert_eq!(found[11].1, "unknown key");
}

#[test]
fn kinds_require_their_own_keys() {
    let llm_without_model = "name = \"a\"\nversion = \"1.0.0\"\nkind = \"llm\"\n";
    assert_eq!(problems(llm_without_model), vec![("model".into(), "an llm agent needs a [model] table".into())]);

    let workflow_with_model = "name = \"a\"\nversion = \"1.0.0\"\nkind = \"workflow\"\ninstructions = \"x\"\n\
                               [model]\nprovider = \"openai\"\nname = \"m\"\n";
    let keys: Vec<String> = problems(workflow_with_model).into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, vec!["model", "instructions", "steps"]);

    let robot = "name = \"a\"\nversion = \"1.0.0\"\nkind = \"robot\"\n";
    assert_eq!(
        problems(robot),
        vec![("kind".into(), "'robot' is not a kind of agent (expected \"llm\" or \"workflow\")".into())]
    );
}

#[test]
fn workflow_steps_are_checked_against_the_allow_list_and_schemas() {
    let text = r#"
name = "w"
version = "1.0.0"
kind = "workflow"
[tools]
allow = ["shell"]
[[steps]]
tool = "read_file"
args = { path = "README.md" }
[[steps]]
tool = "shell"
args = { cmd = "ls" }
[[steps]]
tool = "teleport"
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, vec!["steps[0].tool", "steps[1].args", "steps[2].tool"]);
    assert_eq!(found[0].1, "'read_file' is not in tools.allow");
    assert!(found[1].1.contains("cmd"), "{found:?}");
}

#[test]
fn syntax_errors_say_where() {
    let found = problems("name = \"a\"\nversion = \n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "(syntax)");
    assert!(found[0].1.starts_with("line 2, column"), "{found:?}");
}

#[test]
fn huge_manifests_are_refused_before_parsing() {
    let text = format!("description = \"{}\"", "x".repeat(MAX_MANIFEST_BYTES));
    assert_eq!(problems(&text)[0].0, "(manifest)");
}

#[test]
fn both_key_sources_at_once_are_refused() {
    let text = "name = \"a\"\nversion = \"1.0.0\"\nkind = \"llm\"\n[model]\nprovider = \"anthropic\"\nname = \"c\"\n\
                api_key_env = \"A\"\napi_key_secret = \"B\"\n";
    assert_eq!(
        problems(text),
        vec![("model.api_key_env".into(), "give api_key_env or api_key_secret, not both".into())]
    );
}

#[test]
fn anthropic_gets_its_default_endpoint() {
    let text = "name = \"a\"\nversion = \"1.0.0\"\nkind = \"llm\"\n[model]\nprovider = \"anthropic\"\nname = \"c\"\n";
    let AgentKind::Llm(llm) = AgentManifest::parse(text).unwrap().kind else { panic!("not llm") };
    assert_eq!(llm.model.base_url, "https://api.anthropic.com");
    assert_eq!(llm.model.api_key, None);
}

mod properties {
    use proptest::prelude::*;

    use super::super::*;

    proptest! {
        /// Whatever the text, parsing answers Ok or a list of problems.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,400}") {
            let _ = AgentManifest::parse(&text);
        }

        /// Arbitrary values under the known keys are read or reported, never a panic.
        #[test]
        fn known_keys_with_any_values(name in "\\PC{0,20}", version in "\\PC{0,12}", steps in 0u32..3, memory in "\\PC{0,8}") {
            let mut text = format!("name = {name:?}\nversion = {version:?}\nkind = \"workflow\"\n[tools]\nallow = [\"shell\"]\n[limits]\nmemory = {memory:?}\n");
            for _ in 0..steps {
                text.push_str("[[steps]]\ntool = \"shell\"\nargs = { command = \"true\" }\n");
            }
            if let Err(err) = AgentManifest::parse(&text) {
                prop_assert!(!err.problems.is_empty());
            }
        }

        /// The stored sort key orders versions exactly as semver precedence does.
        #[test]
        fn version_keys_sort_like_semver(a in (0u64..50, 0u64..50, 0u64..50, proptest::option::of("[a-z0-9-]{1,4}(\\.[a-z0-9-]{1,4}){0,2}")),
                                         b in (0u64..50, 0u64..50, 0u64..50, proptest::option::of("[a-z0-9-]{1,4}(\\.[a-z0-9-]{1,4}){0,2}"))) {
            let make = |(major, minor, patch, pre): (u64, u64, u64, Option<String>)| {
                let mut version = semver::Version::new(major, minor, patch);
                if let Some(pre) = pre {
                    // Numeric identifiers with leading zeros are not semver.
                    let Ok(parsed) = semver::Prerelease::new(&pre) else { return None };
                    version.pre = parsed;
                }
                Some(version)
            };
            if let (Some(a), Some(b)) = (make(a), make(b)) {
                prop_assert_eq!(a.cmp(&b), version_key(&a).cmp(&version_key(&b)), "{} vs {}", a, b);
            }
        }
    }
}

#[test]
fn the_example_manifests_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(err) = AgentManifest::parse(&text) {
                panic!("{}: {err}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} example manifests in {}", dir.display());
}

#[test]
fn numeric_pre_releases_sort_by_number() {
    let key = |text: &str| version_key(&semver::Version::parse(text).unwrap());
    assert!(key("2.0.0-rc.9") < key("2.0.0-rc.10"));
    assert!(key("2.0.0-rc.10") < key("2.0.0"));
    assert!(key("1.0.0-alpha") < key("1.0.0-alpha.1"));
    assert!(key("1.0.0-1") < key("1.0.0-alpha"));
}

#[test]
fn models_must_be_on_an_endpoint_the_operator_allows() {
    use codexos_core::ModelEndpoint;
    let endpoints = vec![
        ModelEndpoint { host: "api.openai.com".into(), key_env: Some("OPENAI_API_KEY".into()) },
        ModelEndpoint { host: "127.0.0.1:11434".into(), key_env: None },
    ];
    let manifest = |base_url: &str, key: &str| {
        let mut text = format!(
            "name = \"a\"\nversion = \"1.0.0\"\nkind = \"llm\"\n[model]\nprovider = \"openai\"\nname = \"m\"\nbase_url = \"{base_url}\"\n"
        );
        if !key.is_empty() {
            text.push_str(&format!("api_key_env = \"{key}\"\n"));
        }
        AgentManifest::parse(&text).unwrap()
    };
    assert_eq!(manifest("https://api.openai.com/v1", "OPENAI_API_KEY").check_model_endpoint(&endpoints), Ok(()));
    assert_eq!(manifest("http://127.0.0.1:11434/v1", "").check_model_endpoint(&endpoints), Ok(()));
    let err = manifest("https://evil.example/v1", "OPENAI_API_KEY").check_model_endpoint(&endpoints).unwrap_err();
    assert_eq!(err.key, "model.base_url");
    let err = manifest("https://api.openai.com/v1", "DATABASE_URL").check_model_endpoint(&endpoints).unwrap_err();
    assert_eq!(err.key, "model.api_key_env");
    assert_eq!(err.reason, "the key for api.openai.com is OPENAI_API_KEY, not DATABASE_URL");
    let err = manifest("http://127.0.0.1:11434/v1", "OPENAI_API_KEY").check_model_endpoint(&endpoints).unwrap_err();
    assert_eq!(err.reason, "no key variable is configured for 127.0.0.1:11434");
    let err = manifest("http://127.0.0.1:9999/v1", "").check_model_endpoint(&endpoints).unwrap_err();
    assert_eq!(err.key, "model.base_url");
    assert_eq!(AgentManifest::parse(WORKFLOW).unwrap().check_model_endpoint(&[]), Ok(()));
}

#[test]
fn a_workflow_longer_than_its_step_limit_is_refused() {
    let text = WORKFLOW.replace("[tools]", "[limits]\nmax_steps = 1\n\n[tools]");
    assert_eq!(problems(&text), vec![("limits.max_steps".into(), "is 1, fewer than the workflow's 2 steps".into())]);
}

#[test]
fn approval_rules_pick_the_calls_that_wait_for_a_person() {
    let text = LLM
        .replace("[limits]", "[approval]\ntools = [\"write_file\"]\nshell = [\"git push*\", \"rm -rf *\"]\n\n[limits]");
    let manifest = AgentManifest::parse(&text).unwrap();
    let rules = &manifest.approval;
    assert!(rules.needs_approval("write_file", &serde_json::json!({"path": "a"})).is_some());
    let push = rules.needs_approval("shell", &serde_json::json!({"command": "git push origin main"}));
    assert_eq!(push.as_deref(), Some("the command matches the approval pattern 'git push*'"));
    let mcp = ApprovalRules { tools: vec!["fs.*".into()], ..ApprovalRules::default() };
    assert!(mcp.needs_approval("fs.write", &serde_json::json!({})).is_some());
    assert!(mcp.needs_approval("git.log", &serde_json::json!({})).is_none());
    assert!(rules.needs_approval("shell", &serde_json::json!({"command": "rm -rf /tmp/x/y"})).is_some());
    assert!(rules.needs_approval("shell", &serde_json::json!({"command": "cargo test"})).is_none());
    assert!(rules.needs_approval("read_file", &serde_json::json!({"path": "a"})).is_none());

    let bad = LLM.replace("[limits]", "[approval]\ntools = [\"http_fetch\"]\nshell = [\"[\"]\n\n[limits]");
    let keys: Vec<String> = problems(&bad).into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, vec!["approval.tools[0]", "approval.shell[0]"]);
}

#[test]
fn secrets_bind_variables_to_tenant_secrets() {
    let text = format!("{WORKFLOW}\n[secrets]\nGITHUB_TOKEN = \"GH_TOKEN\"\nnpm_token = \"NPM\"\n");
    let manifest = AgentManifest::parse(&text).unwrap();
    let bound: Vec<(&str, &str)> =
        manifest.secrets.iter().map(|binding| (binding.variable.as_str(), binding.secret.as_str())).collect();
    assert_eq!(bound, vec![("GITHUB_TOKEN", "GH_TOKEN"), ("npm_token", "NPM")]);
    assert!(AgentManifest::parse(WORKFLOW).unwrap().secrets.is_empty());
    let llm = LLM.replace("api_key_env = \"OPENAI_API_KEY\"", "api_key_secret = \"OPENAI_KEY\"");
    let AgentKind::Llm(llm) = AgentManifest::parse(&llm).unwrap().kind else { panic!("not llm") };
    assert_eq!(llm.model.api_key, Some(ApiKeySource::Secret("OPENAI_KEY".to_owned())));
}

#[test]
fn bad_secret_bindings_are_named_with_their_keys() {
    let text = format!(
        "{WORKFLOW}\n[secrets]\n\"1X\" = \"A\"\nPATH = \"A\"\nLD_PRELOAD = \"A\"\nTOKEN = \"not-a-name\"\nNUM = 3\n"
    );
    assert_eq!(
        problems(&text),
        vec![
            ("secrets.1X".into(), "is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most 128)".into()),
            ("secrets.LD_PRELOAD".into(), "is set by the sandbox itself and cannot hold a secret".into()),
            ("secrets.NUM".into(), "must be a secret's name (a string), not integer".into()),
            ("secrets.PATH".into(), "is set by the sandbox itself and cannot hold a secret".into()),
            (
                "secrets.TOKEN".into(),
                "'not-a-name' is not a valid secret name (1-128 characters of A-Z, a-z, 0-9 and '_', not starting with a digit)"
                    .into()
            ),
        ]
    );
    let many: String = (0..65).map(|n| format!("V{n} = \"S\"\n")).collect();
    assert_eq!(problems(&format!("{WORKFLOW}\n[secrets]\n{many}"))[0].0, "secrets");
    assert_eq!(problems(&format!("secrets = \"GH\"\n{WORKFLOW}"))[0].0, "secrets");
    let llm = LLM.replace("api_key_env = \"OPENAI_API_KEY\"", "api_key_secret = \"a-b\"");
    assert_eq!(problems(&llm)[0].0, "model.api_key_secret");
}
