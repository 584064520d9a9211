//! Byte sizes as people write them in flags and manifests.

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{0}' is not a size like 512M, 1GiB or 65536")]
    Invalid(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Parses sizes like `512M`, `2G`, `1GiB`, `64KiB` or `65536` (bytes).
/// Units are binary (K = 1024), with or without `B`/`iB`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let shown = || text.chars().take(64).collect::<String>();
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| SizeError::Invalid(shown()))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(SizeError::Invalid(shown())),
    };
    number.checked_mul(multiplier).ok_or_else(|| SizeError::TooLarge(shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("lots"), Err(SizeError::Invalid("lots".into())));
        assert!(parse_size("5T").is_err());
        assert!(parse_size("").is_err());
        assert!(matches!(parse_size("99999999999999999999G"), Err(SizeError::Invalid(_) | SizeError::TooLarge(_))));
        assert!(matches!(parse_size("999999999999G"), Err(SizeError::TooLarge(_))));
    }
}
