//! apply_patch: unified diffs, as `diff -u` and `git diff` write them and as
//! models produce them most reliably, applied all or nothing.
//!
//! Parsing is deliberately forgiving where models slip and strict where it
//! matters: a hunk's extent is read from its line prefixes rather than
//! from the counts in its header (models miscount), a blank line inside a
//! hunk is an empty context line (editors strip the lone space), and a
//! hunk may match at another line than its header says (the nearest match
//! wins, as with `patch`). The content itself is never fuzzed: every
//! context and removed line must equal the file's line exactly (a CR
//! before the line feed aside, so CRLF files can be patched with LF diffs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ToolResult;
use super::args::workspace_path;
use super::files::io_message;
use super::output::shorten;

/// A parsed patch: changes to one or more files, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patch {
    pub files: Vec<FilePatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilePatch {
    /// `None`: `/dev/null`, the file is created.
    pub old_path: Option<PathBuf>,
    /// `None`: `/dev/null`, the file is deleted.
    pub new_path: Option<PathBuf>,
    pub hunks: Vec<Hunk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hunk {
    /// The `@@` line, for messages.
    header: String,
    /// The old side's start line; `None` for a bare `@@` header.
    old_start: Option<usize>,
    lines: Vec<HunkLine>,
    /// `\ No newline at end of file` after the old side's last line.
    old_missing_newline: bool,
    new_missing_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HunkLine {
    Context(String),
    Remove(String),
    Add(String),
}

impl Hunk {
    /// The lines the file must have where the hunk applies.
    fn old_lines(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| match line {
                HunkLine::Context(text) | HunkLine::Remove(text) => Some(text.as_str()),
                HunkLine::Add(_) => None,
            })
            .collect()
    }
}

/// Parses a unified diff. Errors name the line of the patch at fault.
pub(crate) fn parse(text: &str) -> Result<Patch, String> {
    let lines: Vec<&str> = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).collect();
    let mut files = Vec::new();
    let mut git: Option<GitHeader> = None;
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if let Some(header) = git.take() {
                files.extend(header.into_file_patch()?);
            }
            git = Some(GitHeader::parse(rest));
            index += 1;
            continue;
        }
        if line.starts_with("Binary files ") || line == "GIT binary patch" {
            return Err(format!("line {}: binary patches are not supported; use write_file", index + 1));
        }
        if let Some(header) = git.as_mut()
            && header.read_extended_line(line)
        {
            index += 1;
            continue;
        }
        if is_file_header(&lines, index) {
            let header_line = index + 1;
            let git_header = git.take();
            let prefixed = git_header.as_ref().is_none_or(|header| header.prefixed);
            let old = header_path(&lines[index][4..]);
            let new = header_path(&lines[index + 1][4..]);
            index += 2;
            let mut hunks = Vec::new();
            while index < lines.len() && lines[index].starts_with("@@") {
                let (hunk, next) = parse_hunk(&lines, index)?;
                hunks.push(hunk);
                index = next;
            }
            files.push(file_patch(old, new, prefixed, hunks, header_line, git_header.is_some())?);
            continue;
        }
        if line.starts_with("@@") {
            return Err(format!(
                "line {}: a hunk must follow a file header (`--- a/PATH` then `+++ b/PATH`)",
                index + 1
            ));
        }
        // Anything else (a commit message, `index` lines, a preamble) is
        // not part of a change, as for `patch`.
        index += 1;
    }
    if let Some(header) = git.take() {
        files.extend(header.into_file_patch()?);
    }
    if files.is_empty() {
        return Err("no file changes found: expected `--- a/PATH`, `+++ b/PATH` and `@@ ... @@` hunks".to_owned());
    }
    Ok(Patch { files })
}

fn is_file_header(lines: &[&str], index: usize) -> bool {
    lines[index].starts_with("--- ") && lines.get(index + 1).is_some_and(|next| next.starts_with("+++ "))
}

/// The path in a `---`/`+++` line, without a timestamp; `None` for /dev/null.
fn header_path(text: &str) -> Option<String> {
    let text = text.split('\t').next().unwrap_or("").trim_end();
    let text = unquote(text);
    (text != "/dev/null").then_some(text)
}

/// Git quotes unusual paths in C style: `"a/sp\303\244ce"`.
fn unquote(text: &str) -> String {
    let Some(inner) = text.strip_prefix('"').and_then(|text| text.strip_suffix('"')) else {
        return text.to_owned();
    };
    let mut bytes = Vec::new();
    let mut chars = inner.bytes().peekable();
    while let Some(byte) = chars.next() {
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        match chars.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b't') => bytes.push(b'\t'),
            Some(digit @ b'0'..=b'7') => {
                let mut value = u32::from(digit - b'0');
                for _ in 0..2 {
                    if let Some(next @ b'0'..=b'7') = chars.peek().copied() {
                        value = value * 8 + u32::from(next - b'0');
                        chars.next();
                    }
                }
                bytes.push(u8::try_from(value).unwrap_or(b'?'));
            }
            Some(other) => bytes.push(other),
            None => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn strip_prefix_dir<'a>(path: &'a str, prefix: &str) -> &'a str {
    path.strip_prefix(prefix).unwrap_or(path)
}

fn file_patch(
    old: Option<String>,
    new: Option<String>,
    git_prefixed: bool,
    hunks: Vec<Hunk>,
    header_line: usize,
    from_git: bool,
) -> Result<FilePatch, String> {
    // `a/` and `b/` are git's prefixes, stripped when the header uses them
    // on both sides (or on the side that is not /dev/null).
    let prefixed = if from_git {
        git_prefixed
    } else {
        old.as_deref().is_none_or(|old| old.starts_with("a/")) && new.as_deref().is_none_or(|new| new.starts_with("b/"))
    };
    let clean = |path: Option<String>, prefix: &str| -> Result<Option<PathBuf>, String> {
        let Some(path) = path else { return Ok(None) };
        let path = if prefixed { strip_prefix_dir(&path, prefix) } else { &path };
        let normalised =
            workspace_path("the patch's path", path).map_err(|err| format!("line {header_line}: {err}"))?;
        if normalised.as_os_str().is_empty() {
            return Err(format!("line {header_line}: the file header names no file"));
        }
        Ok(Some(normalised))
    };
    let old_path = clean(old, "a/")?;
    let new_path = clean(new, "b/")?;
    if old_path.is_none() && new_path.is_none() {
        return Err(format!("line {header_line}: both sides of the file header are /dev/null"));
    }
    if hunks.is_empty() && old_path.is_some() && new_path.is_some() && old_path == new_path {
        return Err(format!("line {header_line}: the file header has no hunks (`@@ -START,COUNT +START,COUNT @@`)"));
    }
    if old_path.is_none() && hunks.iter().any(|hunk| !hunk.old_lines().is_empty()) {
        return Err(format!(
            "line {header_line}: the patch creates a file (`--- /dev/null`) but its hunks have context or removed lines"
        ));
    }
    Ok(FilePatch { old_path, new_path, hunks })
}

/// `diff --git a/x b/y` and its extended header lines, for changes that
/// have no `---`/`+++` lines (renames, empty new or deleted files).
#[derive(Debug)]
struct GitHeader {
    /// The paths of the `diff --git` line, without git's `a/`, `b/`.
    old: Option<String>,
    new: Option<String>,
    prefixed: bool,
    rename_from: Option<String>,
    rename_to: Option<String>,
    new_file: bool,
    deleted_file: bool,
}

impl GitHeader {
    fn parse(rest: &str) -> Self {
        let (old, new, prefixed) = match rest.strip_prefix("a/").and_then(|rest| rest.split_once(" b/")) {
            Some((old, new)) => (Some(old.to_owned()), Some(new.to_owned()), true),
            None => match rest.split_once(' ') {
                Some((old, new)) => (Some(unquote(old)), Some(unquote(new)), false),
                None => (None, None, false),
            },
        };
        Self { old, new, prefixed, rename_from: None, rename_to: None, new_file: false, deleted_file: false }
    }

    /// Takes an extended header line; false when `line` is not one.
    fn read_extended_line(&mut self, line: &str) -> bool {
        if let Some(path) = line.strip_prefix("rename from ") {
            self.rename_from = Some(unquote(path));
        } else if let Some(path) = line.strip_prefix("rename to ") {
            self.rename_to = Some(unquote(path));
        } else if line.starts_with("new file mode ") {
            self.new_file = true;
        } else if line.starts_with("deleted file mode ") {
            self.deleted_file = true;
        } else if ![
            "index ",
            "old mode ",
            "new mode ",
            "similarity index ",
            "dissimilarity index ",
            "copy from ",
            "copy to ",
        ]
        .iter()
        .any(|prefix| line.starts_with(prefix))
        {
            return false;
        }
        true
    }

    /// The change a git header alone describes, if any (a mode change alone
    /// is none: modes are not applied).
    fn into_file_patch(self) -> Result<Option<FilePatch>, String> {
        let clean = |path: &str| -> Result<PathBuf, String> {
            let normalised = workspace_path("the patch's path", path).map_err(|err| err.to_string())?;
            if normalised.as_os_str().is_empty() {
                return Err("a `diff --git` header names no file".to_owned());
            }
            Ok(normalised)
        };
        if let (Some(from), Some(to)) = (&self.rename_from, &self.rename_to) {
            return Ok(Some(FilePatch { old_path: Some(clean(from)?), new_path: Some(clean(to)?), hunks: Vec::new() }));
        }
        if self.new_file {
            let Some(new) = &self.new else { return Err("a new file's `diff --git` header names no file".into()) };
            return Ok(Some(FilePatch { old_path: None, new_path: Some(clean(new)?), hunks: Vec::new() }));
        }
        if self.deleted_file {
            let Some(old) = &self.old else { return Err("a deleted file's `diff --git` header names no file".into()) };
            return Ok(Some(FilePatch { old_path: Some(clean(old)?), new_path: None, hunks: Vec::new() }));
        }
        Ok(None)
    }
}

/// Parses the hunk whose `@@` header is at `start`; returns it and the
/// index of the first line after it.
fn parse_hunk(lines: &[&str], start: usize) -> Result<(Hunk, usize), String> {
    let header = lines[start];
    let old_start = parse_hunk_header(header).ok_or_else(|| {
        format!(
            "line {}: `{}` is not a hunk header; expected `@@ -START,COUNT +START,COUNT @@`",
            start + 1,
            shorten(header, 80)
        )
    })?;
    let mut hunk = Hunk {
        header: header.to_owned(),
        old_start,
        lines: Vec::new(),
        old_missing_newline: false,
        new_missing_newline: false,
    };
    let mut blank_lines = 0;
    let mut index = start + 1;
    while index < lines.len() {
        let line = lines[index];
        if line.starts_with("@@") || line.starts_with("diff --git ") || is_file_header(lines, index) {
            break;
        }
        let parsed = match line.as_bytes().first() {
            None => {
                // Blank: an empty context line if the hunk goes on.
                blank_lines += 1;
                index += 1;
                continue;
            }
            Some(b' ') => HunkLine::Context(line[1..].to_owned()),
            Some(b'-') => HunkLine::Remove(line[1..].to_owned()),
            Some(b'+') => HunkLine::Add(line[1..].to_owned()),
            Some(b'\\') => {
                match hunk.lines.last() {
                    Some(HunkLine::Context(_)) => {
                        hunk.old_missing_newline = true;
                        hunk.new_missing_newline = true;
                    }
                    Some(HunkLine::Remove(_)) => hunk.old_missing_newline = true,
                    Some(HunkLine::Add(_)) => hunk.new_missing_newline = true,
                    None => {}
                }
                index += 1;
                continue;
            }
            Some(_) => break,
        };
        for _ in 0..blank_lines {
            hunk.lines.push(HunkLine::Context(String::new()));
        }
        blank_lines = 0;
        hunk.lines.push(parsed);
        index += 1;
    }
    if hunk.lines.is_empty() {
        return Err(format!("line {}: the hunk `{}` has no lines", start + 1, shorten(header, 80)));
    }
    if !hunk.lines.iter().any(|line| !matches!(line, HunkLine::Context(_))) {
        return Err(format!("line {}: the hunk `{}` changes nothing", start + 1, shorten(header, 80)));
    }
    Ok((hunk, index))
}

/// The old side's start line of `@@ -12,7 +12,8 @@ ...`: `Some(Some(12))`;
/// a bare `@@` (or `@@ @@`): `Some(None)`; anything else: `None`.
fn parse_hunk_header(header: &str) -> Option<Option<usize>> {
    let rest = header.strip_prefix("@@")?.trim();
    if rest.is_empty() || rest == "@@" {
        return Some(None);
    }
    let mut parts = rest.split_whitespace();
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    if parts.next()? != "@@" {
        return None;
    }
    let number = |range: &str| -> Option<usize> {
        let (start, count) = range.split_once(',').unwrap_or((range, "1"));
        count.parse::<usize>().ok()?;
        start.parse().ok()
    };
    number(new)?;
    Some(Some(number(old)?))
}

/// What happened to one file, for the summary.
struct Change {
    description: String,
}

/// Applies `patch` under `root`: every hunk of every file applies, or
/// nothing is written.
pub(crate) fn apply(root: &Path, patch: &Patch) -> ToolResult {
    let mut tree = Tree { root, files: BTreeMap::new() };
    let mut changes = Vec::new();
    for file in &patch.files {
        match apply_file(&mut tree, file) {
            Ok(change) => changes.push(change),
            Err(message) => {
                return ToolResult::error(format!("{message}\nThe patch was not applied: no file was changed."));
            }
        }
    }
    if let Err(message) = tree.commit() {
        return ToolResult::error(message);
    }
    let mut output = String::from("applied the patch:\n");
    for change in changes {
        output.push_str(&format!("  {}\n", change.description));
    }
    ToolResult::ok(output)
}

fn apply_file(tree: &mut Tree<'_>, file: &FilePatch) -> Result<Change, String> {
    let shown = |path: &Path| path.display().to_string();
    let original = match &file.old_path {
        Some(old) => match tree.content(old)? {
            Some(content) => content,
            None => {
                return Err(format!(
                    "{}: the patch changes this file, but it does not exist in the workspace",
                    shown(old)
                ));
            }
        },
        None => {
            let new = file.new_path.as_deref().unwrap_or(Path::new(""));
            if tree.content(new)?.is_some() {
                return Err(format!(
                    "{}: the patch creates this file (`--- /dev/null`), but it already exists",
                    shown(new)
                ));
            }
            Vec::new()
        }
    };
    let name = shown(file.old_path.as_deref().or(file.new_path.as_deref()).unwrap_or(Path::new("")));
    let applied = apply_hunks(&name, &original, &file.hunks)?;
    let counts = format!("+{} -{}", applied.added, applied.removed);
    let hunks = match file.hunks.len() {
        1 => "1 hunk".to_owned(),
        n => format!("{n} hunks"),
    };
    let description = match (&file.old_path, &file.new_path) {
        (None, Some(new)) => {
            tree.set(new, Some(applied.content));
            format!("created {} ({counts})", shown(new))
        }
        (Some(old), None) => {
            if !applied.content.is_empty() && !file.hunks.is_empty() {
                return Err(format!(
                    "{}: the patch deletes this file (`+++ /dev/null`), but its hunks leave {} bytes of it; a \
                     deletion must remove every line",
                    shown(old),
                    applied.content.len()
                ));
            }
            tree.set(old, None);
            format!("deleted {}", shown(old))
        }
        (Some(old), Some(new)) if old != new => {
            if tree.content(new)?.is_some() {
                return Err(format!(
                    "{}: the patch renames {} to this path, but it already exists",
                    shown(new),
                    shown(old)
                ));
            }
            tree.set(old, None);
            tree.set(new, Some(applied.content));
            if file.hunks.is_empty() {
                format!("renamed {} to {}", shown(old), shown(new))
            } else {
                format!("renamed {} to {} ({hunks}, {counts})", shown(old), shown(new))
            }
        }
        (Some(path), Some(_)) => {
            tree.set(path, Some(applied.content));
            format!("modified {} ({hunks}, {counts})", shown(path))
        }
        (None, None) => return Err("a file change names no file".to_owned()),
    };
    Ok(Change { description })
}

struct Applied {
    content: Vec<u8>,
    added: usize,
    removed: usize,
}

/// Applies the hunks of one file to its content, in order.
fn apply_hunks(name: &str, original: &[u8], hunks: &[Hunk]) -> Result<Applied, String> {
    let (lines, ends_with_newline) = split_lines(original);
    let crlf = lines.first().is_some_and(|line| line.ends_with(b"\r"));
    let mut output: Vec<Vec<u8>> = Vec::with_capacity(lines.len());
    let mut final_newline = ends_with_newline;
    // The next line of the original not yet copied or matched.
    let mut cursor = 0usize;
    // How far the previous hunk sat from where its header put it.
    let mut drift: isize = 0;
    let (mut added, mut removed) = (0, 0);
    for (number, hunk) in hunks.iter().enumerate() {
        let old_lines = hunk.old_lines();
        let expected = match hunk.old_start {
            // A hunk that only adds names the line it adds after.
            Some(start) if old_lines.is_empty() => start,
            Some(start) => start.saturating_sub(1),
            None => cursor,
        };
        let expected = expected.saturating_add_signed(drift).clamp(cursor, lines.len());
        let position = if old_lines.is_empty() {
            Some(expected)
        } else {
            find(&lines, &old_lines, cursor, expected, hunk.old_missing_newline)
        };
        let Some(position) = position else {
            return Err(format!(
                "{name}: hunk {} of {} (`{}`) does not apply: {}",
                number + 1,
                hunks.len(),
                shorten(&hunk.header, 80),
                diagnose(&lines, &old_lines, cursor, expected)
            ));
        };
        if let Some(start) = hunk.old_start {
            let claimed = if old_lines.is_empty() { start } else { start.saturating_sub(1) };
            drift = position as isize - claimed as isize;
        }
        output.extend(lines[cursor..position].iter().map(|line| line.to_vec()));
        let mut old_index = position;
        for line in &hunk.lines {
            match line {
                HunkLine::Context(_) => {
                    output.push(lines[old_index].to_vec());
                    old_index += 1;
                }
                HunkLine::Remove(_) => {
                    old_index += 1;
                    removed += 1;
                }
                HunkLine::Add(text) => {
                    let mut line = text.as_bytes().to_vec();
                    if crlf && !line.ends_with(b"\r") {
                        line.push(b'\r');
                    }
                    output.push(line);
                    added += 1;
                }
            }
        }
        cursor = old_index;
        if cursor == lines.len() {
            if hunk.new_missing_newline {
                final_newline = false;
            } else if hunk.old_missing_newline {
                final_newline = true;
            }
        }
    }
    output.extend(lines[cursor..].iter().map(|line| line.to_vec()));
    let mut content = output.join(&b'\n');
    if final_newline && !output.is_empty() {
        content.push(b'\n');
    }
    Ok(Applied { content, added, removed })
}

/// The lines of `content` without their line feeds, and whether the last
/// one had one (an empty file counts as ending with one).
fn split_lines(content: &[u8]) -> (Vec<&[u8]>, bool) {
    if content.is_empty() {
        return (Vec::new(), true);
    }
    let mut lines: Vec<&[u8]> = content.split(|byte| *byte == b'\n').collect();
    let ends_with_newline = content.ends_with(b"\n");
    if ends_with_newline {
        lines.pop();
    }
    (lines, ends_with_newline)
}

/// A file line equals a patch line, up to a CR the file has before its LF.
fn same_line(file_line: &[u8], patch_line: &str) -> bool {
    let patch_line = patch_line.as_bytes();
    file_line == patch_line || file_line.strip_suffix(b"\r") == Some(patch_line)
}

fn matches_at(lines: &[&[u8]], old_lines: &[&str], position: usize) -> bool {
    position + old_lines.len() <= lines.len()
        && old_lines.iter().enumerate().all(|(offset, line)| same_line(lines[position + offset], line))
}

/// Where `old_lines` occur at or after `cursor`, nearest `expected` first.
fn find(lines: &[&[u8]], old_lines: &[&str], cursor: usize, expected: usize, at_end: bool) -> Option<usize> {
    let last = lines.len().checked_sub(old_lines.len())?;
    if cursor > last {
        return None;
    }
    if at_end {
        return matches_at(lines, old_lines, last).then_some(last);
    }
    let expected = expected.clamp(cursor, last);
    let (mut below, mut above) = (Some(expected), Some(expected + 1));
    while below.is_some() || above.is_some() {
        if let Some(position) = below {
            if matches_at(lines, old_lines, position) {
                return Some(position);
            }
            below = position.checked_sub(1).filter(|position| *position >= cursor);
        }
        if let Some(position) = above {
            if position <= last && matches_at(lines, old_lines, position) {
                return Some(position);
            }
            above = (position < last).then_some(position + 1);
        }
    }
    None
}

/// Says why a hunk's lines were not found: the closest place in the file
/// and its first differing line, so the model can fix its patch.
fn diagnose(lines: &[&[u8]], old_lines: &[&str], cursor: usize, expected: usize) -> String {
    if (0..cursor).any(|position| matches_at(lines, old_lines, position)) {
        return "its lines occur only before the previous hunk; hunks of a file must be in file order".to_owned();
    }
    if old_lines.len() > lines.len() {
        return format!(
            "it expects {} context and removed lines, but the file has only {} lines",
            old_lines.len(),
            lines.len()
        );
    }
    let mut best: Option<(usize, usize)> = None;
    // A bound on the work: beyond it, only the expected place is shown.
    let exhaustive = lines.len().saturating_mul(old_lines.len()) <= 20_000_000;
    let candidates: Box<dyn Iterator<Item = usize>> = if exhaustive {
        Box::new(0..=lines.len() - old_lines.len())
    } else {
        Box::new(std::iter::once(expected.min(lines.len() - old_lines.len())))
    };
    for position in candidates {
        let same =
            old_lines.iter().enumerate().filter(|(offset, line)| same_line(lines[position + offset], line)).count();
        let better = match best {
            None => true,
            Some((best_position, best_same)) => {
                same > best_same
                    || (same == best_same && position.abs_diff(expected) < best_position.abs_diff(expected))
            }
        };
        if better {
            best = Some((position, same));
        }
    }
    match best {
        Some((position, same)) if same > 0 => {
            let offset = (0..old_lines.len()).find(|offset| !same_line(lines[position + offset], old_lines[*offset]));
            let difference = offset.map_or_else(String::new, |offset| {
                format!(
                    "; line {} of the file is `{}` where the hunk expects `{}`",
                    position + offset + 1,
                    shorten(&String::from_utf8_lossy(lines[position + offset]), 120),
                    shorten(old_lines[offset], 120)
                )
            });
            format!(
                "its {} context and removed lines are not in the file as written; the closest place is line {} ({} of \
                 {} lines match){difference}",
                old_lines.len(),
                position + 1,
                same,
                old_lines.len()
            )
        }
        _ => format!("none of its {} context and removed lines occurs in the file", old_lines.len()),
    }
}

/// The files a patch touches: read once, changed in memory, then written
/// together.
struct Tree<'a> {
    root: &'a Path,
    files: BTreeMap<PathBuf, TrackedFile>,
}

/// A file's content (`None`: absent) as the patch left it so far, and as
/// it is on disk.
struct TrackedFile {
    current: Option<Vec<u8>>,
    on_disk: Option<Vec<u8>>,
}

impl Tree<'_> {
    fn content(&mut self, path: &Path) -> Result<Option<Vec<u8>>, String> {
        if let Some(tracked) = self.files.get(path) {
            return Ok(tracked.current.clone());
        }
        let full = self.root.join(path);
        let on_disk = match std::fs::metadata(&full) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(format!("{}: is a directory, not a file", path.display()));
            }
            Ok(_) => Some(std::fs::read(&full).map_err(|err| io_message(&path.display().to_string(), &err))?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(io_message(&path.display().to_string(), &err)),
        };
        self.files.insert(path.to_owned(), TrackedFile { current: on_disk.clone(), on_disk: on_disk.clone() });
        Ok(on_disk)
    }

    fn set(&mut self, path: &Path, content: Option<Vec<u8>>) {
        if let Some(tracked) = self.files.get_mut(path) {
            tracked.current = content;
        }
    }

    /// Writes every changed file: first each new content to a temporary
    /// file beside its target (so a failure, say a read-only path, leaves
    /// everything as it was), then renames them into place and deletes the
    /// files the patch deletes.
    fn commit(&self) -> Result<(), String> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut created_dirs: Vec<PathBuf> = Vec::new();
        let mut deletions = Vec::new();
        let result = (|| -> Result<(), String> {
            for (relative, TrackedFile { current, on_disk }) in &self.files {
                if current == on_disk {
                    continue;
                }
                let target = self.root.join(relative);
                let Some(content) = current else {
                    deletions.push(relative.clone());
                    continue;
                };
                let shown = relative.display().to_string();
                let parent = target.parent().unwrap_or(self.root);
                create_dirs(parent, &mut created_dirs).map_err(|err| io_message(&shown, &err))?;
                // Write through a symbolic link to the file it names.
                let target = match std::fs::symlink_metadata(&target) {
                    Ok(metadata) if metadata.file_type().is_symlink() => {
                        std::fs::canonicalize(&target).map_err(|err| io_message(&shown, &err))?
                    }
                    _ => target,
                };
                let file_name = target.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
                let temporary = target.with_file_name(format!(".{file_name}.codexos-patch-{}", std::process::id()));
                if target.exists() {
                    // A read-only file (or mount) fails here, before anything changed.
                    std::fs::OpenOptions::new().write(true).open(&target).map_err(|err| io_message(&shown, &err))?;
                }
                std::fs::write(&temporary, content).map_err(|err| io_message(&shown, &err))?;
                staged.push((temporary.clone(), target.clone()));
                if let Ok(metadata) = std::fs::metadata(&target) {
                    std::fs::set_permissions(&temporary, metadata.permissions())
                        .map_err(|err| io_message(&shown, &err))?;
                }
            }
            Ok(())
        })();
        if let Err(message) = result {
            for (temporary, _) in &staged {
                let _ = std::fs::remove_file(temporary);
            }
            for dir in created_dirs.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(format!("{message}\nThe patch was not applied: no file was changed."));
        }
        for (index, (temporary, target)) in staged.iter().enumerate() {
            if let Err(err) = std::fs::rename(temporary, target) {
                for (temporary, _) in &staged[index..] {
                    let _ = std::fs::remove_file(temporary);
                }
                let shown = target.strip_prefix(self.root).unwrap_or(target).display().to_string();
                return Err(format!(
                    "{}\nThe patch was applied only in part: the files before this one were changed, this one and \
                     the rest were not.",
                    io_message(&shown, &err)
                ));
            }
        }
        for relative in deletions {
            let target = self.root.join(&relative);
            if let Err(err) = std::fs::remove_file(&target) {
                return Err(format!(
                    "{}\nThe patch was applied except for this deletion.",
                    io_message(&relative.display().to_string(), &err)
                ));
            }
            // Like git: directories left empty by a deletion go too.
            let mut parent = target.parent();
            while let Some(dir) = parent.filter(|dir| dir.starts_with(self.root) && *dir != self.root) {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
                parent = dir.parent();
            }
        }
        Ok(())
    }
}

/// Creates `dir` and its missing ancestors, recording the ones it created.
fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, created)?;
    }
    std::fs::create_dir(dir)?;
    created.push(dir.to_owned());
    Ok(())
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn apply_text(original: &str, patch: &str) -> Result<String, String> {
        let patch = parse(patch)?;
        let applied = apply_hunks("f", original.as_bytes(), &patch.files[0].hunks)?;
        Ok(String::from_utf8(applied.content).unwrap())
    }

    proptest::proptest! {
        /// Parsing model output never panics, whatever it is.
        #[test]
        fn parsing_never_panics(
            text in concat!(
                "(--- a/f\n\\+\\+\\+ b/f\n|@@ -1,2 \\+1 @@\n|[ +\\\\-]?[a-c]{0,3}\n|\n",
                "|diff --git a/f b/g\n|rename (from|to) [a-z]\n){0,12}",
            )
        ) {
            let _ = parse(&text);
        }

        /// A hunk made from the file itself applies exactly where it was
        /// made, whatever line its header claims.
        #[test]
        fn a_hunk_applies_at_its_context_despite_drift(
            lines in 1usize..60,
            start_fraction in 0.0f64..1.0,
            removed in 0usize..4,
            added in proptest::collection::vec("[a-z ]{0,8}", 0..4),
            context in 0usize..4,
            drift in -30isize..30,
        ) {
            let original: Vec<String> = (1..=lines).map(|n| format!("line {n}")).collect();
            let start = ((lines as f64) * start_fraction) as usize;
            let removed = removed.min(lines - start);
            // A hunk must change something.
            let added = if removed == 0 && added.is_empty() { vec!["x".to_owned()] } else { added };
            let before = start.saturating_sub(context);
            let after = (start + removed + context).min(lines);
            let mut hunk = String::new();
            for line in &original[before..start] {
                hunk.push_str(&format!(" {line}\n"));
            }
            for line in &original[start..start + removed] {
                hunk.push_str(&format!("-{line}\n"));
            }
            for line in &added {
                hunk.push_str(&format!("+{line}\n"));
            }
            for line in &original[start + removed..after] {
                hunk.push_str(&format!(" {line}\n"));
            }
            // The old side's first line, or for a hunk that only adds, the line it adds after.
            let claimed = if before < after { before + 1 } else { start };
            // A hunk without context or removed lines has nothing to find: only its header places it.
            let drift = if before < after { drift } else { 0 };
            let claimed = claimed.saturating_add_signed(drift);
            let (old_count, new_count) = (after - before, after - before - removed + added.len());
            let patch = format!("--- a/f\n+++ b/f\n@@ -{claimed},{old_count} +{claimed},{new_count} @@\n{hunk}");
            let mut expected = original.clone();
            expected.splice(start..start + removed, added.iter().cloned());
            let expected: String = expected.iter().map(|line| format!("{line}\n")).collect();
            let text: String = original.iter().map(|line| format!("{line}\n")).collect();
            proptest::prop_assert_eq!(apply_text(&text, &patch), Ok(expected));
        }
    }

    #[test]
    fn a_simple_hunk_applies() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n";
        assert_eq!(apply_text("a\nb\nc\n", patch).unwrap(), "a\nB\nc\n");
    }

    #[test]
    fn hunks_apply_where_their_context_is_nearest_to_the_header() {
        let original = "x\nctx\nold\nctx\nfill\nfill\nctx\nold\nctx\n";
        // The header says line 6; the second occurrence (line 7) is nearer than the first (line 2).
        let patch = "--- a/f\n+++ b/f\n@@ -6,3 +6,3 @@\n ctx\n-old\n+new\n ctx\n";
        assert_eq!(apply_text(original, patch).unwrap(), "x\nctx\nold\nctx\nfill\nfill\nctx\nnew\nctx\n");
        // Drift of the first hunk carries to the next.
        let original = "pad\npad\na\nb\nc\nd\ne\nf\n";
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n@@ -4,2 +4,2 @@\n d\n-e\n+E\n";
        assert_eq!(apply_text(original, patch).unwrap(), "pad\npad\na\nB\nc\nd\nE\nf\n");
    }

    #[test]
    fn wrong_counts_and_stripped_blank_context_lines_are_tolerated() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,9 +1,1 @@\n a\n\n-b\n+B\n";
        assert_eq!(apply_text("a\n\nb\n", patch).unwrap(), "a\n\nB\n");
    }

    #[test]
    fn content_is_never_fuzzed() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b \n+B\n c\n";
        let err = apply_text("a\nb\nc\n", patch).unwrap_err();
        assert_eq!(
            err,
            "f: hunk 1 of 1 (`@@ -1,3 +1,3 @@`) does not apply: its 3 context and removed lines are not in the file \
             as written; the closest place is line 1 (2 of 3 lines match); line 2 of the file is `b` where the hunk \
             expects `b `"
        );
    }

    #[test]
    fn missing_newlines_at_the_end_are_kept_or_added_as_the_patch_says() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n";
        assert_eq!(apply_text("a\nb", patch).unwrap(), "a\nc\n");
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n";
        assert_eq!(apply_text("a\nb\n", patch).unwrap(), "a\nc");
        let patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+A\n";
        assert_eq!(apply_text("a\nb", patch).unwrap(), "A\nb");
    }

    #[test]
    fn crlf_files_keep_their_line_endings() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n a\n+new\n b\n";
        assert_eq!(apply_text("a\r\nb\r\n", patch).unwrap(), "a\r\nnew\r\nb\r\n");
    }

    #[test]
    fn additions_only_hunks_insert_after_the_named_line() {
        let patch = "--- a/f\n+++ b/f\n@@ -2,0 +3,1 @@\n+inserted\n";
        assert_eq!(apply_text("a\nb\nc\n", patch).unwrap(), "a\nb\ninserted\nc\n");
        let patch = "--- a/f\n+++ b/f\n@@ -0,0 +1,1 @@\n+first\n";
        assert_eq!(apply_text("a\n", patch).unwrap(), "first\na\n");
    }

    #[test]
    fn headers_are_parsed_with_and_without_git_prefixes() {
        let patch = parse(
            "diff --git a/src/x.rs b/src/x.rs\nindex 1..2 100644\n--- a/src/x.rs\t2024-01-01\n+++ b/src/x.rs\n\
             @@ -1 +1 @@\n-a\n+b\n",
        )
        .unwrap();
        assert_eq!(patch.files[0].old_path, Some(PathBuf::from("src/x.rs")));
        let patch = parse("--- src/x.rs\n+++ src/x.rs\n@@ -1 +1 @@\n-a\n+b\n").unwrap();
        assert_eq!(patch.files[0].new_path, Some(PathBuf::from("src/x.rs")));
        let patch = parse("--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+x\n").unwrap();
        assert_eq!((patch.files[0].old_path.clone(), patch.files[0].new_path.clone()), (None, Some("new.txt".into())));
        let patch = parse("diff --git a/old b/new\nsimilarity index 100%\nrename from old\nrename to new\n").unwrap();
        assert_eq!(
            patch.files,
            vec![FilePatch { old_path: Some("old".into()), new_path: Some("new".into()), hunks: Vec::new() }]
        );
        let patch = parse("diff --git a/e b/e\nnew file mode 100644\nindex 0000000..e69de29\n").unwrap();
        assert_eq!(patch.files, vec![FilePatch { old_path: None, new_path: Some("e".into()), hunks: Vec::new() }]);
        assert_eq!(unquote("\"a/sp\\303\\244ce\""), "a/späce");
    }

    #[test]
    fn malformed_patches_are_refused_with_the_line() {
        assert_eq!(
            parse("hello").unwrap_err(),
            "no file changes found: expected `--- a/PATH`, `+++ b/PATH` and `@@ ... @@` hunks"
        );
        assert_eq!(
            parse("--- a/f\n+++ b/f\n@@ -x +1 @@\n-a\n").unwrap_err(),
            "line 3: `@@ -x +1 @@` is not a hunk header; expected `@@ -START,COUNT +START,COUNT @@`"
        );
        assert_eq!(
            parse("@@ -1 +1 @@\n-a\n+b\n").unwrap_err(),
            "line 1: a hunk must follow a file header (`--- a/PATH` then `+++ b/PATH`)"
        );
        assert_eq!(
            parse("--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n").unwrap_err(),
            "line 1: the patch's path must stay inside the workspace: ../x leads out of it"
        );
        assert_eq!(
            parse("--- a/f\n+++ b/f\n@@ -1 +1 @@\n a\n").unwrap_err(),
            "line 3: the hunk `@@ -1 +1 @@` changes nothing"
        );
    }
}
