//! Test cases for a policy (`codexos policy test`): inputs with the
//! decision each should get.
//!
//! ```json
//! {"cases": [
//!   {"name": "CI may push", "expect": "allow",
//!    "input": {"action": "tool_call", "agent": {"name": "ci-release"}, "tool": "shell",
//!              "args": {"command": "git push origin main"}}},
//!   {"name": "others may not", "expect": "deny", "reason": "git push",
//!    "input": {"action": "tool_call", "agent": {"name": "fixer"}, "tool": "shell",
//!              "args": {"command": "git push origin main"}}}
//! ]}
//! ```
//!
//! A bare list of cases is accepted too. Inputs are completed as the
//! platform completes them (a `shell` call's command is parsed), so a case
//! gives only what its rules read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Decision, Policy, Verdict};

/// The most cases one file may hold.
pub const MAX_CASES: usize = 1000;

/// One test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub input: Value,
    pub expect: Verdict,
    /// Text one of the decision's reasons must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub expected: Verdict,
    pub decision: Decision,
    /// What the policy printed (`print(...)`) while deciding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prints: Vec<String>,
    /// Why a case whose verdict matched still failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CasesError {
    #[error("the cases are not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("there are no cases")]
    Empty,
    #[error("there are {0} cases; at most {MAX_CASES}")]
    TooMany(usize),
    #[error("case {index}: {reason}")]
    Case { index: usize, reason: String },
}

/// Reads a cases file: `{"cases": [...]}` or a bare list.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, CasesError> {
    // Parsed as a value first: an untagged enum's own errors say nothing.
    let value: Value = serde_json::from_str(text).map_err(|err| CasesError::Shape(err.to_string()))?;
    let list = match &value {
        Value::Object(object) => object
            .get("cases")
            .cloned()
            .ok_or_else(|| CasesError::Shape("expected a list of cases, or an object with `cases`".to_owned()))?,
        Value::Array(_) => value.clone(),
        _ => return Err(CasesError::Shape("expected a list of cases, or an object with `cases`".to_owned())),
    };
    let Value::Array(items) = list else {
        return Err(CasesError::Shape("`cases` must be a list".to_owned()));
    };
    if items.is_empty() {
        return Err(CasesError::Empty);
    }
    if items.len() > MAX_CASES {
        return Err(CasesError::TooMany(items.len()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let case: Case = serde_json::from_value(item)
                .map_err(|err| CasesError::Case { index: index + 1, reason: err.to_string() })?;
            if case.name.trim().is_empty() || case.name.len() > 200 {
                return Err(CasesError::Case { index: index + 1, reason: "name must be 1 to 200 bytes".to_owned() });
            }
            if !case.input.is_object() {
                return Err(CasesError::Case {
                    index: index + 1,
                    reason: format!("{}: input must be a JSON object", case.name),
                });
            }
            Ok(case)
        })
        .collect()
}

/// Runs every case against `policy`.
pub fn run_cases(policy: &Policy, cases: &[Case]) -> Vec<CaseResult> {
    let deadline = std::time::Instant::now() + TEST_RUN_TIME_BUDGET;
    cases
        .iter()
        .map(|case| {
            // A run of slow cases stops at its budget: a thousand cases at
            // the evaluation limit each would hold a thread for minutes.
            if std::time::Instant::now() > deadline {
                return CaseResult {
                    name: case.name.clone(),
                    passed: false,
                    expected: case.expect,
                    decision: Decision::failed("not run"),
                    prints: Vec::new(),
                    problem: Some(format!(
                        "not run: the test run spent its time budget of {} s",
                        TEST_RUN_TIME_BUDGET.as_secs()
                    )),
                };
            }
            let mut input = case.input.clone();
            crate::input::complete(&mut input);
            let (decision, prints) = policy.decide_with_prints(&input);
            let problem = match &case.reason {
                _ if decision.verdict != case.expect => None,
                Some(wanted) if !decision.reasons.iter().any(|reason| reason.contains(wanted.as_str())) => {
                    Some(format!("no reason contains \"{wanted}\""))
                }
                _ => None,
            };
            CaseResult {
                name: case.name.clone(),
                passed: decision.verdict == case.expect && problem.is_none(),
                expected: case.expect,
                decision,
                prints,
                problem,
            }
        })
        .collect()
}

/// How long one test run (`codexos policy test`) may evaluate in all.
pub const TEST_RUN_TIME_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;

    fn policy() -> Policy {
        let source = r#"package codexos

deny contains "no pushing" if {
	some command in input.shell.commands
	command[0] == "git"
	command[1] == "push"
}

ask contains "a person looks at deletes" if {
	some command in input.shell.commands
	command[0] == "rm"
}
"#;
        let bundle = Bundle {
            modules: [("main.rego".to_owned(), source.to_owned())].into_iter().collect(),
            data: serde_json::json!({}),
        };
        Policy::compile(&bundle).unwrap()
    }

    #[test]
    fn cases_pass_and_fail_on_verdict_and_reason() {
        let cases = parse_cases(
            r#"{"cases": [
                {"name": "push", "expect": "deny", "reason": "pushing",
                 "input": {"tool": "shell", "args": {"command": "git push"}}},
                {"name": "rm", "expect": "ask", "input": {"tool": "shell", "args": {"command": "rm x"}}},
                {"name": "wrong verdict", "expect": "allow", "input": {"tool": "shell", "args": {"command": "rm x"}}},
                {"name": "wrong reason", "expect": "deny", "reason": "nope",
                 "input": {"tool": "shell", "args": {"command": "git push"}}}
            ]}"#,
        )
        .unwrap();
        let results = run_cases(&policy(), &cases);
        let passed: Vec<bool> = results.iter().map(|result| result.passed).collect();
        assert_eq!(passed, [true, true, false, false]);
        assert_eq!(results[2].decision.verdict, Verdict::Ask);
        assert_eq!(results[3].problem.as_deref(), Some("no reason contains \"nope\""));
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        assert!(matches!(parse_cases("nope"), Err(CasesError::Shape(_))));
        assert!(matches!(parse_cases("{}"), Err(CasesError::Shape(_))));
        assert_eq!(parse_cases("[]"), Err(CasesError::Empty));
        let bad = parse_cases(r#"[{"name": "x", "input": {}, "expect": "maybe"}]"#).unwrap_err();
        assert!(bad.to_string().starts_with("case 1: "), "{bad}");
        let bad = parse_cases(r#"[{"name": "x", "input": 3, "expect": "deny"}]"#).unwrap_err();
        assert!(bad.to_string().contains("input must be a JSON object"), "{bad}");
        let bare = parse_cases(r#"[{"name": "x", "input": {}, "expect": "allow"}]"#).unwrap();
        assert_eq!(bare.len(), 1);
    }
}
