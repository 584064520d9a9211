//! Compiling a bundle, and deciding.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;

/// How long one decision may take. Real policies decide in microseconds
/// (BENCHMARKS.md); past this the evaluation stops and the answer is deny.
pub const EVALUATION_TIME_LIMIT: Duration = Duration::from_millis(100);
/// Units of evaluation work between two looks at the clock.
const CLOCK_CHECK_INTERVAL: u32 = 64;
/// Compiled policies kept for reuse, by bundle digest.
const CACHED_POLICIES: usize = 256;
/// The longest reason kept from an evaluation error.
const MAX_ERROR_CHARS: usize = 1000;

/// Builtins refused at upload: the size of what they build is set by a
/// number, and they build it in one go, before the time limit can stop
/// them (`numbers.range(1, 1e12)` would take the whole worker down).
const REFUSED_BUILTINS: &[&str] = &["numbers.range_step", "numbers.range", "bits.lsh"];

/// The three answers, from the most permissive; `max` of two is the
/// stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Ask,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Ask => "ask",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "allow" => Ok(Verdict::Allow),
            "ask" => Ok(Verdict::Ask),
            "deny" => Ok(Verdict::Deny),
            other => Err(format!("'{}' is not a verdict (allow, ask or deny)", other.chars().take(32).collect::<String>())),
        }
    }
}

/// A policy's answer: the verdict, and the reasons of the rules that gave
/// it (the `deny` reasons for a deny, the `ask` reasons for an ask; none
/// for an allow), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn allow() -> Decision {
        Decision { verdict: Verdict::Allow, reasons: Vec::new() }
    }

    /// Deny because the policy itself failed: evaluation error, time limit,
    /// malformed answer, or no policy to be had.
    pub fn failed(why: impl fmt::Display) -> Decision {
        Decision { verdict: Verdict::Deny, reasons: vec![format!("the policy could not decide: {why}")] }
    }

    /// The reasons as one line.
    pub fn reasons_text(&self) -> String {
        self.reasons.join("; ")
    }
}

/// One thing wrong with a bundle: where (module, line, column, as far as
/// known) and what, in the compiler's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileProblem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub message: String,
}

impl CompileProblem {
    fn general(message: impl Into<String>) -> Self {
        Self { module: None, line: None, column: None, message: message.into() }
    }

    fn in_module(module: &str, message: impl Into<String>) -> Self {
        Self { module: Some(module.to_owned()), line: None, column: None, message: message.into() }
    }

    /// Where: `main.rego:3:5`, `main.rego`, or `policy`.
    pub fn location(&self) -> String {
        match (&self.module, self.line, self.column) {
            (Some(module), Some(line), Some(column)) => format!("{module}:{line}:{column}"),
            (Some(module), Some(line), None) => format!("{module}:{line}"),
            (Some(module), _, _) => module.clone(),
            (None, _, _) => "policy".to_owned(),
        }
    }
}

impl fmt::Display for CompileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// A bundle that does not compile: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy does not compile: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct CompileError {
    pub problems: Vec<CompileProblem>,
}

impl From<CompileProblem> for CompileError {
    fn from(problem: CompileProblem) -> Self {
        Self { problems: vec![problem] }
    }
}

/// A compiled bundle, ready to decide. Cheap to share (`Arc`); deciding
/// takes `&self` and may run on many threads at once.
#[derive(Clone)]
pub struct Policy {
    /// Compiled and prepared; each decision works on a clone of it.
    engine: regorus::Engine,
    deny_declared: bool,
    ask_declared: bool,
    sha256: String,
    time_limit: Duration,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("sha256", &self.sha256)
            .field("deny", &self.deny_declared)
            .field("ask", &self.ask_declared)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Checks and compiles a bundle, reporting every problem found.
    pub fn compile(bundle: &Bundle) -> Result<Policy, CompileError> {
        Self::compile_with_limit(bundle, EVALUATION_TIME_LIMIT)
    }

    /// As [`Policy::compile`], with another evaluation time limit.
    pub fn compile_with_limit(bundle: &Bundle, time_limit: Duration) -> Result<Policy, CompileError> {
        bundle.check().map_err(|err| CompileProblem::general(err.to_string()))?;
        let mut problems = Vec::new();
        for (name, source) in &bundle.modules {
            problems.extend(refused_builtins(name, source));
        }
        let mut engine = regorus::Engine::new();
        // A builtin given the wrong kind of value fails the evaluation (and
        // so denies) rather than making its rule quietly undefined.
        engine.set_strict_builtin_errors(true);
        engine.set_gather_prints(true);
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: time_limit,
            check_interval: NonZeroU32::new(CLOCK_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        if let Err(err) = engine.add_data(regorus::Value::from(bundle.data.clone())) {
            problems.push(CompileProblem::general(format!("data: {}", condense(&err))));
        }
        let mut rule_modules = Vec::new();
        for (name, source) in &bundle.modules {
            match engine.add_policy(name.clone(), source.clone()) {
                Ok(package) if package == "data.codexos" => rule_modules.push(name.clone()),
                Ok(package) if package.starts_with("data.codexos.") => {}
                Ok(package) => {
                    let package = package.strip_prefix("data.").unwrap_or(&package);
                    let mut problem = CompileProblem::in_module(
                        name,
                        format!("the module is in package {package}; a policy's modules are in package codexos or below it (codexos.lib, ...)"),
                    );
                    problem.line = package_line(source);
                    problem.column = problem.line.map(|_| 1);
                    problems.push(problem);
                }
                Err(err) => problems.push(located(&err, Some(name))),
            }
        }
        if !problems.is_empty() {
            return Err(CompileError { problems });
        }
        let declares = |engine: &regorus::Engine, rule: &str| {
            rule_modules.iter().any(|module| engine.has_declared_rule_rooted_at(module, rule).unwrap_or(false))
        };
        let (deny_declared, ask_declared) = (declares(&engine, "deny"), declares(&engine, "ask"));
        if !deny_declared && !ask_declared {
            return Err(CompileProblem::general(
                "the policy defines neither `deny` nor `ask` in package codexos, so it would allow everything; \
                 define at least one (e.g. `deny contains reason if { ... }`)",
            )
            .into());
        }
        // The first evaluation analyses every module (unsafe variables,
        // recursion, unknown functions): with an empty input, what fails
        // now fails for every input.
        engine.set_input(regorus::Value::new_object());
        for (rule, declared) in [("data.codexos.deny", deny_declared), ("data.codexos.ask", ask_declared)] {
            if !declared {
                continue;
            }
            let evaluated = catch_unwind(AssertUnwindSafe(|| engine.eval_rule(rule.to_owned())));
            match evaluated {
                Ok(Ok(value)) => {
                    if let Err(why) = reasons_of(rule, &value) {
                        return Err(CompileProblem::general(why).into());
                    }
                }
                Ok(Err(err)) if err.downcast_ref::<regorus::utils::limits::LimitError>().is_some() => {
                    return Err(CompileProblem::general(format!(
                        "evaluating {rule} with an empty input ran past the time limit of {} ms",
                        time_limit.as_millis()
                    ))
                    .into());
                }
                Ok(Err(err)) => return Err(located(&err, None).into()),
                Err(_) => return Err(CompileProblem::general("the Rego compiler stopped unexpectedly").into()),
            }
        }
        let _ = engine.take_prints();
        Ok(Policy { engine, deny_declared, ask_declared, sha256: bundle.sha256(), time_limit })
    }

    /// The compiled policy of `bundle`, from a process-wide cache keyed by
    /// the bundle's digest: a tenant's policy is compiled once, not once
    /// per execution or request.
    pub fn cached(bundle: &Bundle) -> Result<Arc<Policy>, CompileError> {
        static CACHE: OnceLock<Mutex<HashMap<String, Arc<Policy>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let sha256 = bundle.sha256();
        if let Some(found) = cache.lock().ok().and_then(|cache| cache.get(&sha256).cloned()) {
            return Ok(found);
        }
        let compiled = Arc::new(Policy::compile(bundle)?);
        if let Ok(mut cache) = cache.lock() {
            if cache.len() >= CACHED_POLICIES {
                cache.clear();
            }
            cache.insert(sha256, Arc::clone(&compiled));
        }
        Ok(compiled)
    }

    /// The policy CodexOS ships (docs/policy.md), compiled once.
    pub fn builtin_default() -> Result<Arc<Policy>, CompileError> {
        Self::cached(&Bundle::builtin_default())
    }

    /// The digest of the bundle this was compiled from.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Decides one input document. Never fails: whatever goes wrong
    /// denies, with the reason.
    pub fn decide(&self, input: &serde_json::Value) -> Decision {
        self.evaluate(input).0
    }

    /// As [`Policy::decide`], with what the policy printed (`print(...)`),
    /// for `codexos policy test`.
    pub fn decide_with_prints(&self, input: &serde_json::Value) -> (Decision, Vec<String>) {
        self.evaluate(input)
    }

    fn evaluate(&self, input: &serde_json::Value) -> (Decision, Vec<String>) {
        let mut engine = self.engine.clone();
        let evaluated = catch_unwind(AssertUnwindSafe(|| -> Result<Decision, String> {
            engine.set_input(regorus::Value::from(input.clone()));
            let deny = self.rule(&mut engine, "data.codexos.deny", self.deny_declared)?;
            if !deny.is_empty() {
                return Ok(Decision { verdict: Verdict::Deny, reasons: deny });
            }
            let ask = self.rule(&mut engine, "data.codexos.ask", self.ask_declared)?;
            if !ask.is_empty() {
                return Ok(Decision { verdict: Verdict::Ask, reasons: ask });
            }
            Ok(Decision::allow())
        }));
        let prints = engine.take_prints().unwrap_or_default();
        let decision = match evaluated {
            Ok(Ok(decision)) => decision,
            Ok(Err(why)) => Decision::failed(why),
            Err(_) => Decision::failed("the evaluator stopped unexpectedly"),
        };
        (decision, prints)
    }

    /// The reasons of `deny` or `ask`, or why they cannot be had.
    fn rule(&self, engine: &mut regorus::Engine, rule: &str, declared: bool) -> Result<Vec<String>, String> {
        if !declared {
            return Ok(Vec::new());
        }
        match engine.eval_rule(rule.to_owned()) {
            Ok(value) => reasons_of(rule, &value),
            Err(err) if err.downcast_ref::<regorus::utils::limits::LimitError>().is_some() => Err(format!(
                "the evaluation ran past its time limit of {} ms",
                self.time_limit.as_millis()
            )),
            Err(err) => Err(format!("evaluation error: {}", condense(&err))),
        }
    }
}

/// A rule's value as reasons: a set (or array) of strings; anything else
/// but a string is kept as its JSON text. Undefined is no reasons.
fn reasons_of(rule: &str, value: &regorus::Value) -> Result<Vec<String>, String> {
    let items: Vec<regorus::Value> = match value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        regorus::Value::Set(set) => set.iter().cloned().collect(),
        regorus::Value::Array(array) => array.iter().cloned().collect(),
        other => {
            return Err(format!(
                "{rule} must be a set of reasons (`{} contains \"why\" if {{ ... }}`), not {}",
                rule.rsplit('.').next().unwrap_or(rule),
                type_name(other)
            ));
        }
    };
    let mut reasons: Vec<String> = items
        .into_iter()
        .map(|item| match item {
            regorus::Value::String(text) => text.to_string(),
            other => serde_json::to_string(&other).unwrap_or_else(|_| "(a reason that cannot be shown)".to_owned()),
        })
        .collect();
    reasons.sort();
    reasons.dedup();
    Ok(reasons)
}

fn type_name(value: &regorus::Value) -> &'static str {
    match value {
        regorus::Value::Null => "null",
        regorus::Value::Bool(_) => "a boolean",
        regorus::Value::Number(_) => "a number",
        regorus::Value::String(_) => "a string",
        regorus::Value::Array(_) => "an array",
        regorus::Value::Set(_) => "a set",
        regorus::Value::Object(_) => "an object",
        regorus::Value::Undefined => "undefined",
    }
}

/// The line of a module's `package` clause.
fn package_line(source: &str) -> Option<u32> {
    source.lines().position(|line| line.trim_start().starts_with("package")).and_then(|index| u32::try_from(index + 1).ok())
}

/// Calls of refused builtins, each with its position.
fn refused_builtins(module: &str, source: &str) -> Vec<CompileProblem> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = line.split('#').next().unwrap_or(line);
        let mut column = 0;
        while let Some(at) = code[column..].find(|c: char| c == 'n' || c == 'b').map(|at| column + at) {
            let rest = &code[at..];
            let boundary = code[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            if let Some(name) = REFUSED_BUILTINS.iter().find(|name| rest.starts_with(**name)).filter(|_| boundary) {
                let after = rest[name.len()..].chars().next();
                if after.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    found.push(CompileProblem {
                        module: Some(module.to_owned()),
                        line: u32::try_from(index + 1).ok(),
                        column: u32::try_from(code[..at].chars().count() + 1).ok(),
                        message: format!(
                            "{name} is not available in CodexOS policies: it builds its whole result at once, \
                             of a size its arguments choose, which no evaluation limit can stop"
                        ),
                    });
                }
                column = at + name.len();
            } else {
                column = at + 1;
            }
        }
    }
    found
}

/// A compiler error as a problem: regorus reports `--> file:line:col`, the
/// line quoted, and `error: message`.
fn located(err: &anyhow::Error, module: Option<&str>) -> CompileProblem {
    let text = format!("{err:#}");
    let mut problem = CompileProblem { module: module.map(str::to_owned), line: None, column: None, message: String::new() };
    for line in text.lines() {
        if let Some(location) = line.trim_start().strip_prefix("--> ") {
            let mut parts = location.rsplitn(3, ':');
            let column = parts.next().and_then(|part| part.parse().ok());
            let line_number = parts.next().and_then(|part| part.parse().ok());
            if let (Some(file), Some(line_number), Some(column)) = (parts.next(), line_number, column) {
                problem.module = Some(file.to_owned());
                problem.line = Some(line_number);
                problem.column = Some(column);
            }
        }
    }
    problem.message = match text.lines().rev().find_map(|line| line.strip_prefix("error: ")) {
        Some(message) => message.to_owned(),
        None => text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("unknown error").to_owned(),
    };
    problem.message = truncate(&problem.message);
    problem
}

/// An evaluation error on one line: `main.rego:4:19: message`.
fn condense(err: &anyhow::Error) -> String {
    located(err, None).to_string().trim_start_matches("policy: ").to_owned()
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
    cut.push_str(" ...");
    cut
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
#[cfg(test)]
mod scratch {
    use super::*;
    #[test]
    fn timing() {
        let policy = Policy::builtin_default().unwrap();
        let facts_input = serde_json::json!({"action":"tool_call","tool":"shell","workspace":"/srv/w","agent":{"name":"x"},"args":{"command":"cargo test"}});
        let mut input = facts_input.clone();
        crate::input::complete(&mut input);
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n { let e = policy.engine.clone(); std::hint::black_box(e); }
        println!("clone {:?}", t.elapsed() / n);
        let mut e = policy.engine.clone();
        let t = std::time::Instant::now();
        for _ in 0..n { e.set_input(regorus::Value::from(input.clone())); }
        println!("set_input {:?}", t.elapsed() / n);
        let t = std::time::Instant::now();
        for _ in 0..n { std::hint::black_box(e.eval_rule("data.codexos.deny".into()).unwrap()); }
        println!("eval deny reused {:?}", t.elapsed() / n);
        let t = std::time::Instant::now();
        for _ in 0..n { std::hint::black_box(e.eval_rule("data.codexos.ask".into()).unwrap()); }
        println!("eval ask reused {:?}", t.elapsed() / n);
        let t = std::time::Instant::now();
        for _ in 0..n { std::hint::black_box(e.eval_query("data.codexos.deny".into(), false).unwrap()); }
        println!("eval_query deny reused {:?}", t.elapsed() / n);
    }
}
