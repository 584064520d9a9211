//! read_file, write_file and list_dir.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::ToolResult;
use super::args::{self, DEFAULT_READ_LINES, ListDirArgs, ReadFileArgs, WriteFileArgs};

/// Output `read_file` returns at most per call; more needs another offset.
const READ_MAX_BYTES: usize = 256 * 1024;
/// Files up to this size have their lines counted when only part is shown.
const COUNT_LINES_UP_TO: u64 = 64 * 1024 * 1024;
/// Bytes looked at to tell a binary file (a NUL among them) from text.
pub(crate) const BINARY_SNIFF_BYTES: usize = 8 * 1024;
/// Entries `list_dir` returns at most.
const LIST_MAX_ENTRIES: usize = 1000;

pub(crate) fn read_file(root: &Path, args: &ReadFileArgs, output_limit: usize) -> ToolResult {
    let relative = match args::required_file_path("path", &args.path) {
        Ok(relative) => relative,
        Err(err) => return ToolResult::error(err.to_string()),
    };
    let shown = relative.display().to_string();
    let path = root.join(&relative);
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(err) => return ToolResult::error(io_message(&shown, &err)),
    };
    if metadata.is_dir() {
        return ToolResult::error(format!("{shown} is a directory; list it with list_dir"));
    }
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(err) => return ToolResult::error(io_message(&shown, &err)),
    };
    let mut sniff = Vec::with_capacity(BINARY_SNIFF_BYTES);
    if let Err(err) = (&mut file).take(BINARY_SNIFF_BYTES as u64).read_to_end(&mut sniff) {
        return ToolResult::error(io_message(&shown, &err));
    }
    if sniff.contains(&0) {
        return ToolResult::error(format!(
            "{shown} is a binary file ({} bytes); read_file shows text only (the shell tool can inspect it, e.g. with \
             `xxd {shown} | head`)",
            metadata.len()
        ));
    }
    let first = args.offset.unwrap_or(1);
    let limit = args.limit.unwrap_or(DEFAULT_READ_LINES);
    let max_bytes = READ_MAX_BYTES.min(output_limit);
    let mut reader = BufReader::new(std::io::Cursor::new(sniff).chain(file));
    let mut output = String::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut last_shown = 0u64;
    // Why the output stops before the file's end, if it does.
    let mut stopped_by_bytes = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => return ToolResult::error(io_message(&shown, &err)),
        }
        number += 1;
        if number < first {
            continue;
        }
        if number >= first.saturating_add(limit) || stopped_by_bytes {
            // Counted only, to say how long the file is.
            if metadata.len() > COUNT_LINES_UP_TO {
                number = 0;
                break;
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if output.len() + text.len() > max_bytes {
            stopped_by_bytes = true;
            if output.is_empty() {
                // A single line longer than the whole allowance.
                let end = super::output::floor_char_boundary(&text, max_bytes);
                output.push_str(&text[..end]);
                output.push_str(&format!(
                    "\n[line {number} is {} bytes long; only its first {end} bytes are shown]\n",
                    text.len()
                ));
                last_shown = number;
            }
            continue;
        }
        output.push_str(&text);
        last_shown = number;
    }
    // `number` is the file's line count, or 0 when it was too large to count.
    let total = (number > 0).then_some(number);
    if first > 1 && last_shown == 0 {
        return ToolResult::error(match total {
            Some(total) => format!("offset {first} is past the end of {shown}, which has {total} lines"),
            None => format!("offset {first} is past the end of {shown}"),
        });
    }
    if last_shown == 0 {
        return ToolResult::ok(format!("[{shown} is empty]"));
    }
    let goes_on = total.is_none_or(|total| last_shown < total);
    if first > 1 || goes_on {
        if !output.ends_with('\n') {
            output.push('\n');
        }
        let of_total = total.map_or_else(String::new, |total| format!(" of {total}"));
        let next = if goes_on {
            let reason =
                if stopped_by_bytes { format!("; the output is limited to {max_bytes} bytes") } else { String::new() };
            format!("; continue with offset {}{reason}", last_shown + 1)
        } else {
            String::new()
        };
        output.push_str(&format!("[{shown}: lines {first}-{last_shown}{of_total} shown{next}]\n"));
    }
    ToolResult::ok(output)
}

pub(crate) fn write_file(root: &Path, args: &WriteFileArgs) -> ToolResult {
    let relative = match args::required_file_path("path", &args.path) {
        Ok(relative) => relative,
        Err(err) => return ToolResult::error(err.to_string()),
    };
    let shown = relative.display().to_string();
    let path = root.join(&relative);
    let previous = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {
            return ToolResult::error(format!("{shown} is a directory; write_file writes files"));
        }
        Ok(metadata) => Some(metadata.len()),
        Err(_) => None,
    };
    if let Some(parent) = path.parent()
        && let Err(err) = std::fs::create_dir_all(parent)
    {
        return ToolResult::error(io_message(&relative.parent().unwrap_or(&relative).display().to_string(), &err));
    }
    if let Err(err) = std::fs::write(&path, &args.content) {
        return ToolResult::error(io_message(&shown, &err));
    }
    let bytes = |n: u64| if n == 1 { "1 byte".to_owned() } else { format!("{n} bytes") };
    let written = bytes(args.content.len() as u64);
    ToolResult::ok(match previous {
        Some(old) => format!("wrote {written} to {shown} (replaced its {})", bytes(old)),
        None => format!("wrote {written} to {shown} (new file)"),
    })
}

pub(crate) fn list_dir(root: &Path, args: &ListDirArgs) -> ToolResult {
    let relative = match args::workspace_path("path", args.path.as_deref().unwrap_or(".")) {
        Ok(relative) => relative,
        Err(err) => return ToolResult::error(err.to_string()),
    };
    let shown = if relative.as_os_str().is_empty() { ".".to_owned() } else { relative.display().to_string() };
    let start = root.join(&relative);
    match std::fs::symlink_metadata(&start) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(metadata) => return ToolResult::ok(entry_line(&metadata, &shown, &start)),
        Err(err) => return ToolResult::error(io_message(&shown, &err)),
    }
    let include_ignored = args.include_ignored.unwrap_or(false);
    let mut walk = ignore::WalkBuilder::new(&start);
    walk.max_depth(Some(args.depth.unwrap_or(1) as usize))
        .hidden(false)
        .follow_links(false)
        .parents(false)
        .git_global(false)
        .require_git(false)
        .ignore(!include_ignored)
        .git_ignore(!include_ignored)
        .git_exclude(!include_ignored)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            // A `.git` met on the way is listed, but not what is inside it
            // (listing `.git` itself shows its contents).
            let start = start.clone();
            move |entry| {
                let below = entry.path().strip_prefix(&start).unwrap_or(entry.path());
                let mut parents = below.components().rev().skip(1);
                !parents.any(|component| component.as_os_str() == ".git")
            }
        });
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut stopped = false;
    for entry in walk.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                problems.push(err.to_string());
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        if lines.len() == LIST_MAX_ENTRIES {
            stopped = true;
            break;
        }
        let path = entry.path();
        let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
        match path.symlink_metadata() {
            Ok(metadata) => lines.push(entry_line(&metadata, &name, path)),
            Err(err) => problems.push(io_message(&name, &err)),
        }
    }
    let mut output = if lines.is_empty() { format!("[{shown} is empty]\n") } else { lines.concat() };
    if stopped {
        output.push_str(&format!(
            "[listing stopped at {LIST_MAX_ENTRIES} entries; list a subdirectory or use a smaller depth]\n"
        ));
    }
    for problem in problems.iter().take(20) {
        output.push_str(&format!("[cannot list: {problem}]\n"));
    }
    ToolResult::ok(output)
}

fn entry_line(metadata: &std::fs::Metadata, name: &str, path: &Path) -> String {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        format!("dir     {:>12}  {name}/\n", "-")
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(path).map(|target| target.display().to_string()).unwrap_or_default();
        format!("symlink {:>12}  {name} -> {target}\n", "-")
    } else if file_type.is_file() {
        format!("file    {:>12}  {name}\n", metadata.len())
    } else {
        format!("other   {:>12}  {name}\n", "-")
    }
}

/// An I/O error on a workspace path, worded for the model, with the reason
/// when the sandbox is behind it.
pub(crate) fn io_message(shown: &str, err: &std::io::Error) -> String {
    let protected_by_sandbox =
        shown == ".git/config" || shown == ".git/hooks" || shown.starts_with(".git/hooks/") || shown == ".git";
    let hint = match err.kind() {
        std::io::ErrorKind::NotFound => " (no such file or directory in the workspace)",
        std::io::ErrorKind::ReadOnlyFilesystem
        | std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::ResourceBusy
            if protected_by_sandbox =>
        {
            " (the sandbox keeps .git/hooks and .git/config read-only: code there would run outside the sandbox)"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => " (this path is read-only in the sandbox)",
        std::io::ErrorKind::PermissionDenied => " (the sandbox or the file's permissions do not allow this)",
        _ => "",
    };
    format!("{shown}: {err}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_say_when_the_sandbox_protects_git() {
        let read_only = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(
            io_message(".git/hooks/pre-commit", &read_only),
            ".git/hooks/pre-commit: read-only filesystem or storage medium (the sandbox keeps .git/hooks and \
             .git/config read-only: code there would run outside the sandbox)"
        );
        assert_eq!(
            io_message("src/x", &read_only),
            "src/x: read-only filesystem or storage medium (this path is read-only in the sandbox)"
        );
    }
}
