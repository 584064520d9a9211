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

/// How long one decision may take. The default policy decides in about a
/// tenth of a millisecond (BENCHMARKS.md); past this the evaluation stops
/// and the answer is deny.
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
/// `sprintf` is allowed with a literal format of modest widths only
/// (`%04000000000d` would be the same).
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
            other => {
                Err(format!("'{}' is not a verdict (allow, ask or deny)", other.chars().take(32).collect::<String>()))
            }
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
                        format!(
                            "the module is in package {package}; a policy's modules are in package codexos or below it (codexos.lib, ...)"
                        ),
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
        // `deny` and `ask` are read in one evaluation, so that what both
        // use (helper rules, the parsed input) is computed once.
        if let Err(err) = engine.add_policy(DECISION_MODULE.to_owned(), decision_module(deny_declared, ask_declared)) {
            return Err(CompileProblem::general(format!("the decision module: {}", condense(&err))).into());
        }
        // The first evaluation analyses every module (unsafe variables,
        // recursion, unknown functions): with an empty input, what fails
        // now fails for every input.
        engine.set_input(regorus::Value::new_object());
        let evaluated = catch_unwind(AssertUnwindSafe(|| engine.eval_rule(DECISION_RULE.to_owned())));
        match evaluated {
            Ok(Ok(value)) => {
                if let Err(why) = verdict_of(&value) {
                    return Err(CompileProblem::general(why).into());
                }
            }
            Ok(Err(err)) if err.downcast_ref::<regorus::utils::limits::LimitError>().is_some() => {
                return Err(CompileProblem::general(format!(
                    "evaluating the policy with an empty input ran past the time limit of {} ms",
                    time_limit.as_millis()
                ))
                .into());
            }
            Ok(Err(err)) => return Err(located(&err, None).into()),
            Err(_) => return Err(CompileProblem::general("the Rego compiler stopped unexpectedly").into()),
        }
        // The policy's own checks of its data (`problems`), once, here:
        // the data cannot change without a new upload.
        if declares(&engine, "problems") {
            let found = catch_unwind(AssertUnwindSafe(|| engine.eval_rule(PROBLEMS_RULE.to_owned())));
            let problems = match found {
                Ok(Ok(value)) => reasons_of(PROBLEMS_RULE, &value).map_err(CompileProblem::general)?,
                Ok(Err(err)) => return Err(located(&err, None).into()),
                Err(_) => return Err(CompileProblem::general("the Rego compiler stopped unexpectedly").into()),
            };
            if !problems.is_empty() {
                return Err(CompileError { problems: problems.into_iter().map(CompileProblem::general).collect() });
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
            match engine.eval_rule(DECISION_RULE.to_owned()) {
                Ok(value) => verdict_of(&value),
                Err(err) if err.downcast_ref::<regorus::utils::limits::LimitError>().is_some() => {
                    Err(format!("the evaluation ran past its time limit of {} ms", self.time_limit.as_millis()))
                }
                Err(err) => Err(format!("evaluation error: {}", condense(&err))),
            }
        }));
        let prints = engine.take_prints().unwrap_or_default();
        let decision = match evaluated {
            Ok(Ok(decision)) => decision,
            Ok(Err(why)) => Decision::failed(why),
            Err(_) => Decision::failed("the evaluator stopped unexpectedly"),
        };
        (decision, prints)
    }
}

/// The module, added to every policy, that reads `deny` and `ask` together.
const DECISION_MODULE: &str = "codexos-platform-decision.rego";
/// Its rule: `{"deny": <reasons>, "ask": <reasons>}`.
const DECISION_RULE: &str = "data.codexos_platform.decision";
/// What a policy finds wrong with its own data, checked at upload.
const PROBLEMS_RULE: &str = "data.codexos.problems";

fn decision_module(deny: bool, ask: bool) -> String {
    let mut module = String::from("package codexos_platform\n\n");
    let mut fields = Vec::new();
    for (rule, declared) in [("deny", deny), ("ask", ask)] {
        if declared {
            // An undefined rule (a complete one whose body failed) gives no reasons.
            module.push_str(&format!(
                "{rule}_reasons := reasons if {{\n\treasons := data.codexos.{rule}\n}} else := set()\n\n"
            ));
            fields.push(format!("\"{rule}\": {rule}_reasons"));
        }
    }
    module.push_str(&format!("decision := {{{}}}\n", fields.join(", ")));
    module
}

/// The decision module's answer as a decision: any `deny` reason denies,
/// then any `ask` reason asks.
fn verdict_of(value: &regorus::Value) -> Result<Decision, String> {
    let regorus::Value::Object(fields) = value else {
        return Err("the policy's answer could not be read".to_owned());
    };
    for (rule, verdict) in [("deny", Verdict::Deny), ("ask", Verdict::Ask)] {
        if let Some(reasons) = fields.get(&regorus::Value::from(rule)) {
            let reasons = reasons_of(&format!("data.codexos.{rule}"), reasons)?;
            if !reasons.is_empty() {
                return Ok(Decision { verdict, reasons });
            }
        }
    }
    Ok(Decision::allow())
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
    source
        .lines()
        .position(|line| line.trim_start().starts_with("package"))
        .and_then(|index| u32::try_from(index + 1).ok())
}

/// Every mention of a refused builtin, and `sprintf` wherever it could
/// build a string of any size, each with its position. The module is read with
/// regorus's own lexer, so comments and string contents are never mistaken
/// for calls; a module the lexer refuses is reported by the compiler.
fn refused_builtins(module: &str, source: &str) -> Vec<CompileProblem> {
    use regorus::unstable::{Lexer, Token, TokenKind};
    let Ok(source) = regorus::Source::from_contents(module.to_owned(), source.to_owned()) else { return Vec::new() };
    let mut lexer = Lexer::new(&source);
    let mut tokens = Vec::new();
    while let Ok(token) = lexer.next_token() {
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push(token);
    }
    let symbol = |index: usize, text: &str| {
        tokens.get(index).is_some_and(|Token(kind, span)| *kind == TokenKind::Symbol && span.text() == text)
    };
    let mut found = Vec::new();
    for (start, Token(kind, span)) in tokens.iter().enumerate() {
        // A dotted name starts at an identifier not preceded by a dot.
        if *kind != TokenKind::Ident || (start > 0 && symbol(start - 1, ".")) {
            continue;
        }
        let mut name = span.text().to_owned();
        let mut next = start + 1;
        while symbol(next, ".") && tokens.get(next + 1).is_some_and(|Token(kind, _)| *kind == TokenKind::Ident) {
            name.push('.');
            name.push_str(tokens[next + 1].1.text());
            next += 2;
        }
        // Named anywhere, not only called: `with f as numbers.range` would
        // call it under another name.
        let why = if REFUSED_BUILTINS.contains(&name.as_str()) {
            format!(
                "{name} is not available in CodexOS policies: it builds its whole result at once, \
                 of a size its arguments choose, which no evaluation limit can stop"
            )
        } else if name == "sprintf" {
            // The format as evaluated: a quoted string's escapes decoded
            // (JSON's, as Rego's), so `\u0030` cannot hide a digit.
            let format = Some(next + 1).filter(|_| symbol(next, "(")).and_then(|first| tokens.get(first)).and_then(
                |Token(kind, span)| match kind {
                    TokenKind::RawString => Some(span.text().to_owned()),
                    // Undecodable: judged as written, which the compiler refuses anyway.
                    TokenKind::String => Some(
                        serde_json::from_str::<String>(&format!("\"{}\"", span.text()))
                            .unwrap_or_else(|_| span.text().to_owned()),
                    ),
                    _ => None,
                },
            );
            match format {
                Some(format) if !wide_format(&format) => continue,
                Some(_) => {
                    format!("sprintf widths are limited to {MAX_FORMAT_WIDTH_DIGITS} digits in CodexOS policies")
                }
                None => "sprintf's format must be a string written in the policy: a width taken from \
                         elsewhere could build a string of any size at once"
                    .to_owned(),
            }
        } else {
            continue;
        };
        found.push(CompileProblem {
            module: Some(module.to_owned()),
            line: Some(span.line),
            column: Some(span.col),
            message: why,
        });
    }
    found
}

/// The most digits a `sprintf` width or precision may have (up to 999).
const MAX_FORMAT_WIDTH_DIGITS: usize = 3;

/// Whether a format pads or cuts to more than [`MAX_FORMAT_WIDTH_DIGITS`] digits.
fn wide_format(format: &str) -> bool {
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        rest = &rest[at + 1..];
        let spec = rest.trim_start_matches('.');
        let digits = spec.chars().take_while(char::is_ascii_digit).count();
        if digits > MAX_FORMAT_WIDTH_DIGITS
            || spec.chars().next().is_some_and(|c| c.is_numeric() && !c.is_ascii_digit())
        {
            return true;
        }
        rest = spec.strip_prefix('%').unwrap_or(spec);
    }
    false
}

/// A compiler error as a problem: regorus reports `--> file:line:col`, the
/// line quoted, and `error: message`.
fn located(err: &anyhow::Error, module: Option<&str>) -> CompileProblem {
    let text = format!("{err:#}");
    let mut problem =
        CompileProblem { module: module.map(str::to_owned), line: None, column: None, message: String::new() };
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
