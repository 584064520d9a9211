//! How much a model server may send, in one place.
//!
//! A tenant chooses its model server, so a hostile or broken one must not be
//! able to exhaust a worker's memory: every answer is read under these caps,
//! and one that goes past a cap is refused with [`ModelError::TooLarge`].
//! That error is not retried: a server that sent 100 MB once will do it
//! again.
//!
//! The caps sit far above what real models send (a long answer of 32k
//! tokens is about 128 KiB of text), except for the stream's wire size,
//! where every token delta costs 100 to 200 bytes of framing.

use std::fmt;

use super::{ModelError, Result};
use crate::conversation::ModelReply;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A whole reply: the body of a non-streamed answer, and everything a
/// streamed answer assembles (text, tool-call ids, names and arguments).
pub const MAX_REPLY_BYTES: usize = 8 * MIB;

/// A streamed answer as it travels, events, framing and pings included.
pub const MAX_STREAM_BYTES: usize = 64 * MIB;

/// The assistant's text in one reply.
pub const MAX_CONTENT_BYTES: usize = MIB;

/// The arguments of one tool call.
pub const MAX_TOOL_CALL_ARGUMENTS_BYTES: usize = MIB;

/// Tool calls in one reply (streamed ones counted by their index).
pub const MAX_TOOL_CALLS: usize = 64;

/// The `data` of one server-sent event, and any one line of a stream: no
/// line can be longer than the event it belongs to.
pub const MAX_SSE_EVENT_BYTES: usize = 8 * MIB;

/// How much of an error response is read.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 64 * KIB;

/// How much server-provided text an error message keeps.
pub(crate) const MAX_ERROR_MESSAGE_BYTES: usize = KIB;

/// Which cap an answer went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`MAX_REPLY_BYTES`]
    ReplyBytes,
    /// [`MAX_STREAM_BYTES`]
    StreamBytes,
    /// [`MAX_CONTENT_BYTES`]
    ContentBytes,
    /// [`MAX_TOOL_CALL_ARGUMENTS_BYTES`]
    ToolCallArgumentsBytes,
    /// [`MAX_TOOL_CALLS`]
    ToolCalls,
    /// [`MAX_SSE_EVENT_BYTES`]
    SseEventBytes,
}

impl Limit {
    /// The cap, in bytes or, for [`Limit::ToolCalls`], in calls.
    pub const fn max(self) -> usize {
        match self {
            Limit::ReplyBytes => MAX_REPLY_BYTES,
            Limit::StreamBytes => MAX_STREAM_BYTES,
            Limit::ContentBytes => MAX_CONTENT_BYTES,
            Limit::ToolCallArgumentsBytes => MAX_TOOL_CALL_ARGUMENTS_BYTES,
            Limit::ToolCalls => MAX_TOOL_CALLS,
            Limit::SseEventBytes => MAX_SSE_EVENT_BYTES,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max();
        let size = if max.is_multiple_of(MIB) { format!("{} MiB", max / MIB) } else { format!("{max} bytes") };
        match self {
            Limit::ReplyBytes => write!(f, "the reply is larger than {size}"),
            Limit::StreamBytes => write!(f, "the stream is larger than {size}"),
            Limit::ContentBytes => write!(f, "the reply's text is larger than {size}"),
            Limit::ToolCallArgumentsBytes => write!(f, "the arguments of one tool call are larger than {size}"),
            Limit::ToolCalls => write!(f, "the reply makes more than {max} tool calls"),
            Limit::SseEventBytes => write!(f, "one stream event is larger than {size}"),
        }
    }
}

/// Fails with [`ModelError::TooLarge`] if `current + added` goes past `limit`.
pub(crate) fn ensure_within(current: usize, added: usize, limit: Limit) -> Result<()> {
    if current.saturating_add(added) > limit.max() { Err(ModelError::TooLarge(limit)) } else { Ok(()) }
}

/// What a reply being assembled from a stream has used so far, checked as
/// each piece arrives, so that memory stops growing at the cap.
#[derive(Debug, Default)]
pub(crate) struct ReplyBudget {
    content_bytes: usize,
    tool_calls: usize,
    total_bytes: usize,
}

impl ReplyBudget {
    /// `bytes` more of the assistant's text.
    pub(crate) fn add_content(&mut self, bytes: usize) -> Result<()> {
        ensure_within(self.content_bytes, bytes, Limit::ContentBytes)?;
        self.add_to_total(bytes)?;
        self.content_bytes += bytes;
        Ok(())
    }

    /// One more tool call.
    pub(crate) fn add_tool_call(&mut self) -> Result<()> {
        ensure_within(self.tool_calls, 1, Limit::ToolCalls)?;
        self.tool_calls += 1;
        Ok(())
    }

    /// `added` more bytes of arguments for a call that has `current` already.
    pub(crate) fn add_arguments(&mut self, current: usize, added: usize) -> Result<()> {
        ensure_within(current, added, Limit::ToolCallArgumentsBytes)?;
        self.add_to_total(added)
    }

    /// Anything else the reply keeps: tool-call ids and names.
    pub(crate) fn add_to_total(&mut self, bytes: usize) -> Result<()> {
        ensure_within(self.total_bytes, bytes, Limit::ReplyBytes)?;
        self.total_bytes += bytes;
        Ok(())
    }
}

/// Checks a reply parsed from one (size-capped) body against the per-piece
/// caps, so that a reply is held to the same limits streamed or not.
pub(crate) fn check_reply(reply: &ModelReply) -> Result<()> {
    let mut budget = ReplyBudget::default();
    budget.add_content(reply.content.as_ref().map_or(0, String::len))?;
    for call in &reply.tool_calls {
        budget.add_tool_call()?;
        budget.add_to_total(call.id.len() + call.name.len())?;
        budget.add_arguments(0, call.arguments.len())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{TokenUsage, ToolCall};

    fn reply(text: usize, calls: usize, arguments: usize) -> ModelReply {
        ModelReply {
            content: Some("x".repeat(text)),
            tool_calls: (0..calls)
                .map(|n| ToolCall { id: format!("c{n}"), name: "f".to_owned(), arguments: "a".repeat(arguments) })
                .collect(),
            usage: TokenUsage::default(),
            stop_reason: None,
        }
    }

    #[test]
    fn a_reply_at_the_caps_passes_and_one_byte_or_call_more_fails() {
        assert!(check_reply(&reply(MAX_CONTENT_BYTES, 1, MAX_TOOL_CALL_ARGUMENTS_BYTES)).is_ok());
        assert!(check_reply(&reply(0, MAX_TOOL_CALLS, 10)).is_ok());
        let refused = |reply: &ModelReply| match check_reply(reply) {
            Err(ModelError::TooLarge(limit)) => Some(limit),
            _ => None,
        };
        assert_eq!(refused(&reply(MAX_CONTENT_BYTES + 1, 0, 0)), Some(Limit::ContentBytes));
        assert_eq!(refused(&reply(0, MAX_TOOL_CALLS + 1, 0)), Some(Limit::ToolCalls));
        assert_eq!(refused(&reply(0, 1, MAX_TOOL_CALL_ARGUMENTS_BYTES + 1)), Some(Limit::ToolCallArgumentsBytes));
        // Each call within its cap, together past the reply's.
        assert_eq!(refused(&reply(0, 9, MAX_TOOL_CALL_ARGUMENTS_BYTES)), Some(Limit::ReplyBytes));
    }

    #[test]
    fn limits_are_named_with_their_size_and_are_not_retried() {
        assert_eq!(Limit::ContentBytes.to_string(), "the reply's text is larger than 1 MiB");
        assert_eq!(Limit::ToolCalls.to_string(), "the reply makes more than 64 tool calls");
        let err = ModelError::TooLarge(Limit::ReplyBytes);
        assert_eq!(err.to_string(), "the model server's answer exceeds a limit: the reply is larger than 8 MiB");
        assert!(!err.is_retryable());
    }
}
