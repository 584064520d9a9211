//! Cutting long outputs: the head and the tail are kept (a build's first
//! lines and its final errors both matter), with a note in the middle
//! saying how much was cut.

/// `output` as given to the model: at most `max_bytes` bytes, note
/// included (when `max_bytes` leaves room for the note at all), cut on
/// character boundaries, preferably on line breaks. The full output is in the
/// event log, and the note says so.
pub fn for_model(output: &str, max_bytes: usize) -> String {
    cut_middle(output, max_bytes, |cut, total| {
        format!("[... {cut} of {total} bytes cut here; the full output is in the event log ...]\n")
    })
}

/// `text` within `limit` bytes, for what is kept of a tool's output.
pub(crate) fn cap(text: &str, limit: usize) -> String {
    cut_middle(text, limit, |cut, total| {
        format!("[... {cut} of {total} bytes cut here: the output is limited to {limit} bytes ...]\n")
    })
}

fn cut_middle(text: &str, max_bytes: usize, note: impl Fn(usize, usize) -> String) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    // The note never grows as the cut shrinks, so its longest form bounds it;
    // one more byte for the line break that may precede it.
    let note_bound = note(text.len(), text.len()).len() + 1;
    let budget = max_bytes.saturating_sub(note_bound);
    let mut head_end = floor_char_boundary(text, budget / 2);
    if let Some(newline) = text[..head_end].rfind('\n')
        && (newline + 1) * 4 >= head_end * 3
    {
        head_end = newline + 1;
    }
    let tail_budget = budget - head_end;
    let mut tail_start = ceil_char_boundary(text, text.len() - tail_budget);
    if let Some(newline) = text[tail_start..].find('\n')
        && (newline + 1) * 4 <= text.len() - tail_start
    {
        tail_start += newline + 1;
    }
    let head = &text[..head_end];
    let separator = if head.is_empty() || head.ends_with('\n') { "" } else { "\n" };
    format!("{head}{separator}{}{}", note(tail_start - head_end, text.len()), &text[tail_start..])
}

/// The largest char boundary at or before `index`.
pub(crate) fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// The smallest char boundary at or after `index`.
fn ceil_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// `line` shortened to about `max_chars` characters, for one-line displays.
pub(crate) fn shorten(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars) {
        None => line.to_owned(),
        Some((end, _)) => format!("{}… [{} more bytes]", &line[..end], line.len() - end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A cut output is a head and a tail of the original around the
        /// note, and never longer than asked when the note fits.
        #[test]
        fn cuts_keep_a_head_and_a_tail_within_the_limit(text in "[a-zé\n]{0,400}", max_bytes in 0usize..500) {
            let cut = for_model(&text, max_bytes);
            if text.len() <= max_bytes {
                proptest::prop_assert_eq!(cut, text);
            } else {
                if max_bytes >= 100 {
                    proptest::prop_assert!(cut.len() <= max_bytes, "{} > {max_bytes}", cut.len());
                }
                let (head, rest) = cut.split_once("[... ").unwrap();
                let tail = &rest[rest.find("...]\n").unwrap() + 5..];
                proptest::prop_assert!(text.starts_with(head.strip_suffix('\n').unwrap_or(head)));
                proptest::prop_assert!(text.ends_with(tail));
            }
        }
    }

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(for_model("hello\n", 6), "hello\n");
        assert_eq!(cap("", 0), "");
    }

    #[test]
    fn long_output_keeps_head_and_tail_within_the_limit() {
        let text: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        let cut = for_model(&text, 500);
        assert!(cut.len() <= 500, "{}", cut.len());
        assert!(cut.starts_with("line 0\nline 1\n"), "{cut}");
        assert!(cut.ends_with("line 999\n"), "{cut}");
        let note = cut.lines().find(|line| line.starts_with("[...")).unwrap();
        let kept = cut.len() - note.len() - 1;
        assert_eq!(
            note,
            format!(
                "[... {} of {} bytes cut here; the full output is in the event log ...]",
                text.len() - kept,
                text.len()
            )
        );
    }

    #[test]
    fn cuts_fall_on_char_boundaries() {
        let text = "é".repeat(1000);
        for max in [150, 151, 152, 153, 400, 1999] {
            let cut = cap(&text, max);
            assert!(cut.len() <= max, "{max}: {}", cut.len());
            assert!(cut.starts_with('é') && cut.ends_with('é'), "{max}: {cut}");
        }
    }

    #[test]
    fn a_limit_smaller_than_the_note_keeps_only_the_note() {
        let cut = for_model(&"x".repeat(10_000), 10);
        assert_eq!(cut, "[... 10000 of 10000 bytes cut here; the full output is in the event log ...]\n");
    }

    #[test]
    fn long_lines_are_shortened() {
        assert_eq!(shorten("abcdef", 3), "abc… [3 more bytes]");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
