//! search: a regular expression over the workspace's text files, line by
//! line, respecting .gitignore.

use std::path::Path;

use super::ToolResult;
use super::args::{self, DEFAULT_SEARCH_RESULTS, SearchArgs};
use super::files::{BINARY_SNIFF_BYTES, io_message};
use super::output::shorten;

/// Characters of a matching line shown; the rest is summarised.
const MAX_LINE_CHARS: usize = 300;
/// Larger files are skipped (and counted in a note): generated data, not code.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

pub(crate) fn search(root: &Path, args: &SearchArgs) -> ToolResult {
    let regex = match args::search_regex(args) {
        Ok(regex) => regex,
        Err(err) => return ToolResult::error(format!("pattern is not a valid regular expression: {err}")),
    };
    let glob = match args.glob.as_deref().map(args::search_glob).transpose() {
        Ok(glob) => glob,
        Err(err) => return ToolResult::error(format!("glob is not a valid glob pattern: {err}")),
    };
    let relative = match args::workspace_path("path", args.path.as_deref().unwrap_or(".")) {
        Ok(relative) => relative,
        Err(err) => return ToolResult::error(err.to_string()),
    };
    let shown = if relative.as_os_str().is_empty() { ".".to_owned() } else { relative.display().to_string() };
    let target = root.join(&relative);
    if let Err(err) = std::fs::metadata(&target) {
        return ToolResult::error(io_message(&shown, &err));
    }
    let max_results = args.max_results.unwrap_or(DEFAULT_SEARCH_RESULTS) as usize;

    // The walk starts at the workspace root, so that every .gitignore from
    // the root down applies (and none above it), and only enters the
    // directories leading to the target.
    let mut walk = ignore::WalkBuilder::new(root);
    walk.hidden(false)
        .follow_links(false)
        .parents(false)
        .git_global(false)
        .require_git(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            let target = target.clone();
            move |entry| {
                let path = entry.path();
                entry.file_name() != ".git" && (path.starts_with(&target) || target.starts_with(path))
            }
        });
    let mut output = String::new();
    let mut matches = 0usize;
    let mut files_with_matches = 0usize;
    let mut skipped_large = 0usize;
    let mut problems = Vec::new();
    let mut stopped = false;
    'files: for entry in walk.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        };
        let path = entry.path();
        if !entry.file_type().is_some_and(|kind| kind.is_file()) || !path.starts_with(&target) {
            continue;
        }
        let name = path.strip_prefix(root).unwrap_or(path);
        if let Some((matcher, whole_path)) = &glob {
            let candidate = if *whole_path { name } else { Path::new(entry.file_name()) };
            if !matcher.is_match(candidate) {
                continue;
            }
        }
        let name = name.display().to_string();
        match entry.metadata() {
            Ok(metadata) if metadata.len() > MAX_FILE_BYTES => {
                skipped_large += 1;
                continue;
            }
            Ok(_) => {}
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                problems.push(io_message(&name, &err));
                continue;
            }
        };
        if bytes[..bytes.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut file_matched = false;
        for (index, line) in text.lines().enumerate() {
            if !regex.is_match(line) {
                continue;
            }
            if matches == max_results {
                stopped = true;
                break 'files;
            }
            matches += 1;
            file_matched = true;
            output.push_str(&format!("{name}:{}: {}\n", index + 1, shorten(line, MAX_LINE_CHARS)));
        }
        files_with_matches += usize::from(file_matched);
    }
    if matches == 0 {
        output.push_str(&format!("no matches for /{}/ in {shown}\n", args.pattern));
    } else if stopped {
        output.push_str(&format!(
            "[search stopped at {max_results} matching lines; narrow it with a more precise pattern, `path` or \
             `glob`]\n"
        ));
    } else {
        let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
        output.push_str(&format!("[{} in {}]\n", plural(matches, "matching line"), plural(files_with_matches, "file")));
    }
    if skipped_large > 0 {
        output.push_str(&format!("[{skipped_large} files larger than {MAX_FILE_BYTES} bytes were not searched]\n"));
    }
    for problem in problems.iter().take(20) {
        output.push_str(&format!("[cannot search: {problem}]\n"));
    }
    ToolResult::ok(output)
}
