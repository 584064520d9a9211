//! How long to wait before retrying a failed model call.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Exponential backoff stops growing here.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A server asking for a longer pause than this is asked again sooner: the
/// call has a retry budget, and an agent step should not stall for minutes
/// on one header.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The pause before retry number `attempt` (1 for the first retry): the
/// server's `Retry-After` when it sent one, capped, and otherwise
/// exponential backoff from `base` with "equal jitter" (half fixed, half
/// random), so that many workers throttled together do not retry together.
pub(crate) fn retry_delay(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) => wait.min(MAX_RETRY_AFTER),
        None => backoff(base, attempt, rand::random::<f64>()),
    }
}

/// `jitter` in `[0, 1)` picks the point in the upper half of the window.
fn backoff(base: Duration, attempt: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    let window = base.saturating_mul(factor).min(MAX_BACKOFF.max(base));
    let half = window / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The wait a response asks for: OpenAI's `retry-after-ms`, or the standard
/// `retry-after` in seconds. The HTTP-date form is rare on these APIs and
/// falls back to our own backoff.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = |name: &str, scale: f64| {
        let text = headers.get(name)?.to_str().ok()?;
        let value: f64 = text.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64((value / scale).min(1e9)))
    };
    seconds("retry-after-ms", 1000.0).or_else(|| seconds("retry-after", 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, 1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(base, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(base, u32::MAX, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 5, 0.5), Duration::ZERO);
        for _ in 0..100 {
            let delay = retry_delay(base, 2, None);
            assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200), "{delay:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        assert_eq!(retry_delay(Duration::from_millis(1), 1, retry_after(&headers)), Duration::from_secs(3));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_micros(1_500_500)));
        headers.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)), "falls back to retry-after");
        headers.insert("retry-after", HeaderValue::from_static("86400"));
        headers.remove("retry-after-ms");
        assert_eq!(retry_delay(Duration::from_millis(1), 1, retry_after(&headers)), MAX_RETRY_AFTER);
        for bad in ["-1", "NaN", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            headers.insert("retry-after", HeaderValue::from_static(bad));
            assert_eq!(retry_after(&headers), None, "{bad}");
        }
    }
}
