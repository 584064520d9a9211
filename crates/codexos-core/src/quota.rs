//! Per-tenant quotas: the limits a tenant runs under, the installation's
//! defaults an operator's per-tenant values override, and the monthly
//! periods usage is counted in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The limits a tenant runs under. As the `[quotas]` settings section these
/// are the installation's defaults, for every tenant without a value of its
/// own (see `QuotaOverrides`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// API requests per second, sustained: the token bucket's refill rate.
    pub requests_per_second: u32,
    /// Requests at once above the sustained rate: the token bucket's size.
    pub burst: u32,
    /// Executions that have not finished (queued, running, paused or
    /// waiting for approval) at one time.
    pub max_concurrent_executions: u32,
    /// Sandbox CPU time per calendar month (UTC), in seconds.
    pub cpu_seconds_per_month: u64,
    /// What the tenant keeps: checkpoint content and memory notes, in bytes
    /// (a number, or a size such as `"50GiB"`).
    #[serde(deserialize_with = "size_or_bytes")]
    pub storage_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
            max_concurrent_executions: 10,
            // 100 hours.
            cpu_seconds_per_month: 360_000,
            storage_bytes: 50 << 30,
        }
    }
}

/// The largest rate and burst accepted: far above what one API process
/// serves, so only a typo is refused.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;
pub const MAX_CONCURRENT_EXECUTIONS: u32 = 1_000_000;
/// CPU seconds are compared in milliseconds, stored as signed 64-bit.
pub const MAX_CPU_SECONDS: u64 = (i64::MAX / 1000) as u64;
pub const MAX_STORAGE_BYTES: u64 = i64::MAX as u64;

/// A quota value out of its range, naming the quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{quota} must be {expected}, not {value}")]
pub struct QuotaError {
    pub quota: &'static str,
    pub expected: String,
    pub value: u64,
}

fn check(quota: &'static str, value: u64, min: u64, max: u64) -> Result<(), QuotaError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(QuotaError { quota, expected: format!("between {min} and {max}"), value })
}

impl Quotas {
    /// Every value within its range: a rate and a burst of at least 1 (a
    /// tenant that may not call at all is a suspended tenant, not a quota);
    /// zero executions, CPU or storage are allowed and refuse all work.
    pub fn validate(&self) -> Result<(), QuotaError> {
        QuotaOverrides {
            requests_per_second: Some(self.requests_per_second),
            burst: Some(self.burst),
            max_concurrent_executions: Some(self.max_concurrent_executions),
            cpu_seconds_per_month: Some(self.cpu_seconds_per_month),
            storage_bytes: Some(self.storage_bytes),
        }
        .validate()
    }
}

/// A tenant's own quotas, set by an operator; `None` takes the
/// installation's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QuotaOverrides {
    pub requests_per_second: Option<u32>,
    pub burst: Option<u32>,
    pub max_concurrent_executions: Option<u32>,
    pub cpu_seconds_per_month: Option<u64>,
    pub storage_bytes: Option<u64>,
}

impl QuotaOverrides {
    /// The quotas in effect: these values, the defaults for the others.
    pub fn over(&self, defaults: &Quotas) -> Quotas {
        Quotas {
            requests_per_second: self.requests_per_second.unwrap_or(defaults.requests_per_second),
            burst: self.burst.unwrap_or(defaults.burst),
            max_concurrent_executions: self.max_concurrent_executions.unwrap_or(defaults.max_concurrent_executions),
            cpu_seconds_per_month: self.cpu_seconds_per_month.unwrap_or(defaults.cpu_seconds_per_month),
            storage_bytes: self.storage_bytes.unwrap_or(defaults.storage_bytes),
        }
    }

    /// Whether every quota is the default.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Every value given within its range (see `Quotas::validate`).
    pub fn validate(&self) -> Result<(), QuotaError> {
        let rate = u64::from(MAX_REQUESTS_PER_SECOND);
        let checks = [
            ("requests_per_second", self.requests_per_second.map(u64::from), 1, rate),
            ("burst", self.burst.map(u64::from), 1, rate),
            (
                "max_concurrent_executions",
                self.max_concurrent_executions.map(u64::from),
                0,
                u64::from(MAX_CONCURRENT_EXECUTIONS),
            ),
            ("cpu_seconds_per_month", self.cpu_seconds_per_month, 0, MAX_CPU_SECONDS),
            ("storage_bytes", self.storage_bytes, 0, MAX_STORAGE_BYTES),
        ];
        for (quota, value, min, max) in checks {
            if let Some(value) = value {
                check(quota, value, min, max)?;
            }
        }
        Ok(())
    }
}

/// A storage size in settings: a number of bytes, or text `parse_size` reads.
fn size_or_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(bytes),
        Size::Text(text) => crate::parse_size(&text).map_err(serde::de::Error::custom),
    }
}

/// A calendar month (UTC): the period usage is counted in and monthly
/// quotas reset with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsagePeriod {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
}

impl UsagePeriod {
    /// The month a moment (milliseconds since the epoch) falls in.
    pub fn of(millis: i64) -> Self {
        let (year, month, _) = civil_from_days(millis.div_euclid(MILLIS_PER_DAY));
        Self { year, month }
    }

    /// When this month begins, in milliseconds since the epoch.
    pub fn start_millis(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * MILLIS_PER_DAY
    }

    pub fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }
}

impl fmt::Display for UsagePeriod {
    /// `YYYY-MM`, as the usage table keys it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

const MILLIS_PER_DAY: i64 = 86_400_000;

/// Year, month and day of a day number (days since 1970-01-01), in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12).
    (year, month as u32, day as u32)
}

/// The day number of a date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// Milliseconds of a date and time (UTC), through humantime's parser.
    fn at(text: &str) -> i64 {
        let time = humantime::parse_rfc3339(text).unwrap();
        time.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    }

    #[test]
    fn periods_are_calendar_months_in_utc() {
        assert_eq!(UsagePeriod::of(0).to_string(), "1970-01");
        assert_eq!(UsagePeriod::of(at("2024-02-29T23:59:59.999Z")).to_string(), "2024-02");
        assert_eq!(UsagePeriod::of(at("2024-03-01T00:00:00Z")).to_string(), "2024-03");
        assert_eq!(UsagePeriod::of(at("2025-12-31T12:00:00Z")).next().to_string(), "2026-01");
        assert_eq!(UsagePeriod::of(at("2025-12-31T12:00:00Z")).next().start_millis(), at("2026-01-01T00:00:00Z"));
        assert_eq!(UsagePeriod::of(at("2100-02-28T00:00:00Z")).next().start_millis(), at("2100-03-01T00:00:00Z"));
        assert_eq!(UsagePeriod::of(-1).to_string(), "1969-12");
    }

    #[test]
    fn every_day_maps_back_to_itself() {
        // Four centuries around the epoch, leap rules included.
        for day in -73_000..73_000 {
            let (year, month, dom) = civil_from_days(day);
            assert_eq!(days_from_civil(year, month, dom), day);
        }
    }

    #[test]
    fn a_tenants_values_override_the_defaults_one_by_one() {
        let defaults = Quotas::default();
        let overrides = QuotaOverrides { burst: Some(7), storage_bytes: Some(0), ..Default::default() };
        let effective = overrides.over(&defaults);
        assert_eq!(effective, Quotas { burst: 7, storage_bytes: 0, ..defaults });
        assert!(QuotaOverrides::default().is_empty());
        assert!(!overrides.is_empty());
    }

    #[test]
    fn out_of_range_values_name_the_quota() {
        assert_eq!(Quotas::default().validate(), Ok(()));
        let err = Quotas { requests_per_second: 0, ..Quotas::default() }.validate().unwrap_err();
        assert_eq!(err.to_string(), "requests_per_second must be between 1 and 1000000, not 0");
        let err = QuotaOverrides { cpu_seconds_per_month: Some(u64::MAX), ..Default::default() }.validate();
        assert_eq!(err.unwrap_err().quota, "cpu_seconds_per_month");
        assert_eq!(QuotaOverrides { max_concurrent_executions: Some(0), ..Default::default() }.validate(), Ok(()));
    }
}
