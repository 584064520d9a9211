//! An incremental parser for server-sent events, as both providers stream
//! them: bytes arrive in arbitrary pieces (a line, half a line, half a UTF-8
//! character) and come out as whole events.
//!
//! It follows the WHATWG event-stream grammar for the fields we use (`event`,
//! `data`; comments and `id`/`retry` are skipped), with one leniency: an event
//! the server did not close with a blank line before the end of the body is
//! still handed out by [`SseParser::finish`], since some servers end with
//! `data: [DONE]\n` alone. A truncated event then fails where its JSON is
//! parsed, not here.
//!
//! What it holds is capped: neither a line being received nor the `data` of
//! an event may grow past [`limits::MAX_SSE_EVENT_BYTES`], so a server that
//! never ends a line or an event cannot make it hold more.

use super::ModelError;
use super::limits::{self, Limit};

/// One dispatched event: its `event:` name, if any, and its `data:` lines
/// joined with newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being received, without its terminator.
    line: Vec<u8>,
    /// The previous piece ended in `\r`: a `\n` starting this one belongs to
    /// the same line terminator.
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Takes the next piece of the body and appends the events it completes.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ModelError> {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(at) = rest.iter().position(|&byte| byte == b'\n' || byte == b'\r') {
            self.line.extend_from_slice(&rest[..at]);
            let terminator = rest[at];
            rest = &rest[at + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        limits::ensure_within(self.line.len(), rest.len(), Limit::SseEventBytes)?;
        self.line.extend_from_slice(rest);
        Ok(())
    }

    /// The body ended: hands out an event left open, if it has data.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, ModelError> {
        let line = std::mem::take(&mut self.line);
        let mut out = Vec::new();
        if !line.is_empty() {
            self.process_line(&line, &mut out)?;
        }
        self.process_line(b"", &mut out)?;
        Ok(out.pop())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), ModelError> {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(b":") {
            return Ok(());
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                let separator = usize::from(self.has_data);
                limits::ensure_within(self.data.len(), separator + value.len(), Limit::SseEventBytes)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::limits::MAX_SSE_EVENT_BYTES;
    use pretty_assertions::assert_eq;
    use proptest::prelude::*;

    fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece, &mut events).unwrap();
        }
        events.extend(parser.finish().unwrap());
        events
    }

    fn event(name: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: name.map(str::to_owned), data: data.to_owned() }
    }

    const SAMPLE: &str = concat!(
        ": a comment\n",
        "event: message_start\n",
        "data: {\"type\":\"message_start\"}\n",
        "\n",
        "data: first\r\n",
        "data:second\r\n",
        "id: 7\r\n",
        "\r\n",
        "event: ping\r",
        "data: {\"é\":\"ü→\"}\r",
        "\r",
        "event: empty\n",
        "\n",
        "data: [DONE]\n",
        "\n",
    );

    fn sample_events() -> Vec<SseEvent> {
        vec![
            event(Some("message_start"), "{\"type\":\"message_start\"}"),
            event(None, "first\nsecond"),
            event(Some("ping"), "{\"é\":\"ü→\"}"),
            event(None, "[DONE]"),
        ]
    }

    #[test]
    fn events_are_split_on_blank_lines_with_any_line_ending() {
        assert_eq!(parse_in_pieces(&[SAMPLE.as_bytes()]), sample_events());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = SAMPLE.as_bytes();
        for at in 0..=bytes.len() {
            assert_eq!(parse_in_pieces(&[&bytes[..at], &bytes[at..]]), sample_events(), "split at {at}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_in_pieces(&one_by_one), sample_events());
    }

    #[test]
    fn an_unterminated_last_event_is_handed_out_at_the_end() {
        assert_eq!(
            parse_in_pieces(&[b"data: {\"a\":1}\n\ndata: [DONE]"]),
            vec![event(None, "{\"a\":1}"), event(None, "[DONE]")]
        );
        assert_eq!(parse_in_pieces(&[b"data: [DONE]\n"]), vec![event(None, "[DONE]")]);
        assert_eq!(parse_in_pieces(&[b"event: ping\n"]), vec![]);
    }

    #[test]
    fn an_overlong_line_is_refused() {
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut events = Vec::new();
        let mut failed = false;
        for _ in 0..20 {
            if let Err(err) = parser.feed(&chunk, &mut events) {
                assert!(matches!(err, ModelError::TooLarge(Limit::SseEventBytes)), "{err:?}");
                failed = true;
                break;
            }
        }
        assert!(failed, "20 MiB without a newline was accepted");
    }

    /// Regression: only lines were capped, so an event of many short `data:`
    /// lines and no blank line grew without bound.
    #[test]
    fn an_event_of_many_short_data_lines_is_capped() {
        let mut parser = SseParser::default();
        let chunk = "data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".repeat(16 * 1024);
        let mut events = Vec::new();
        let mut fed = 0;
        let err = loop {
            match parser.feed(chunk.as_bytes(), &mut events) {
                Ok(()) => fed += chunk.len(),
                Err(err) => break err,
            }
            assert!(fed <= 2 * MAX_SSE_EVENT_BYTES, "{fed} bytes of one event were accepted");
        };
        assert!(matches!(err, ModelError::TooLarge(Limit::SseEventBytes)), "{err:?}");
        assert!(parser.data.len() <= MAX_SSE_EVENT_BYTES, "{}", parser.data.len());
        assert_eq!(events, vec![]);

        // An event just under the cap is handed out whole.
        let mut parser = SseParser::default();
        let half = format!("data: {}\n", "y".repeat(MAX_SSE_EVENT_BYTES / 2 - 1));
        parser.feed(half.as_bytes(), &mut events).unwrap();
        parser.feed(half.as_bytes(), &mut events).unwrap();
        parser.feed(b"data:\n\n", &mut events).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), MAX_SSE_EVENT_BYTES);
    }

    proptest! {
        #[test]
        fn splitting_never_changes_the_events(cuts in proptest::collection::vec(0..SAMPLE.len(), 0..8)) {
            let bytes = SAMPLE.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&bytes[start..cut]);
                start = cut;
            }
            pieces.push(&bytes[start..]);
            prop_assert_eq!(parse_in_pieces(&pieces), sample_events());
        }

        #[test]
        fn arbitrary_bytes_never_panic(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            for piece in &pieces {
                parser.feed(piece, &mut events).unwrap();
            }
            parser.finish().unwrap();
        }
    }
}
