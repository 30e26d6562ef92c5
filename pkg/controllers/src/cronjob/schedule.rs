//! Cron schedules as upstream's CronJob controller reads them (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) with lists, ranges, steps and
//! month/day names, the descriptors `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/
//! `@midnight`/`@hourly`/`@every <duration>`, and an optional `CRON_TZ=`/`TZ=` prefix.
//!
//! Times are computed in the schedule's time zone from jiff's time zone database, which is
//! compiled into the binary (`tzdb-bundle-always`), so zones work on machines without
//! `/usr/share/zoneinfo`.

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A schedule that does not parse; the message follows robfig/cron's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// A time zone name not in the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0}")]
pub struct UnknownTimeZone(pub String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Field bitsets (bit n = value n) and whether day-of-month/day-of-week were `*`.
    Fields {
        /// Minutes 0–59.
        minute: u64,
        /// Hours 0–23.
        hour: u64,
        /// Days of month 1–31.
        dom: u64,
        /// Months 1–12.
        month: u64,
        /// Days of week 0–6 (Sunday 0).
        dow: u64,
        /// Day of month was unrestricted (`*` or `?`).
        dom_star: bool,
        /// Day of week was unrestricted.
        dow_star: bool,
    },
    /// `@every <duration>`: a fixed interval.
    Every(Duration),
}

/// A schedule with the time zone named in it (`CRON_TZ=…`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The schedule proper.
    pub schedule: Schedule,
    /// The zone from a `CRON_TZ=`/`TZ=` prefix.
    pub zone: Option<String>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses a schedule string.
///
/// # Errors
/// [`ParseError`] naming what is wrong.
pub fn parse(spec: &str) -> Result<Parsed, ParseError> {
    let mut spec = spec.trim();
    let mut zone = None;
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let (z, rest) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| ParseError(format!("missing schedule after {prefix}")))?;
            zone = Some(z.to_string());
            spec = rest.trim();
            break;
        }
    }
    let fields = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => {
            if let Some(d) = other.strip_prefix("@every ") {
                let d = parse_duration(d.trim())
                    .ok_or_else(|| ParseError(format!("failed to parse duration {other}")))?;
                return Ok(Parsed {
                    schedule: Schedule::Every(d.max(Duration::from_secs(1))),
                    zone,
                });
            }
            if other.starts_with('@') {
                return Err(ParseError(format!("unrecognized descriptor: {other}")));
            }
            other
        }
    };
    let parts: Vec<&str> = fields.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(ParseError(format!(
            "expected exactly 5 fields, found {}: {fields}",
            parts.len()
        )));
    }
    let (minute, _) = field(parts[0], 0, 59, &[])?;
    let (hour, _) = field(parts[1], 0, 23, &[])?;
    let (dom, dom_star) = field(parts[2], 1, 31, &[])?;
    let (month, _) = field(parts[3], 1, 12, &MONTHS)?;
    let (mut dow, dow_star) = field(parts[4], 0, 7, &DAYS)?;
    // 7 is Sunday too.
    if dow & (1 << 7) != 0 {
        dow = (dow | 1) & !(1 << 7);
    }
    Ok(Parsed {
        schedule: Schedule::Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        },
        zone,
    })
}

/// Parses one field into a bitset; true if it was `*`/`?` without a step above 1.
fn field(expr: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), ParseError> {
    let mut bits = 0u64;
    let mut star = false;
    for part in expr.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| {
                    ParseError(format!("failed to parse int from {s}: invalid syntax"))
                })?;
                if step == 0 {
                    return Err(ParseError(format!(
                        "step of range should be a positive number: {part}"
                    )));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (start, end) = if range == "*" || range == "?" {
            if step.is_none_or(|s| s == 1) {
                star = true;
            }
            (min, max)
        } else {
            let value = |s: &str| -> Result<u32, ParseError> {
                if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
                    // Month names start at 1, day names at 0.
                    return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
                }
                s.parse().map_err(|_| {
                    ParseError(format!("failed to parse int from {s}: invalid syntax"))
                })
            };
            match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // "a/step" runs from a to the maximum.
                None if step.is_some() => (value(range)?, max),
                None => {
                    let v = value(range)?;
                    (v, v)
                }
            }
        };
        if start < min {
            return Err(ParseError(format!(
                "beginning of range ({start}) below minimum ({min}): {part}"
            )));
        }
        if end > max {
            return Err(ParseError(format!(
                "end of range ({end}) above maximum ({max}): {part}"
            )));
        }
        if start > end {
            return Err(ParseError(format!(
                "beginning of range ({start}) beyond end of range ({end}): {part}"
            )));
        }
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

/// Go's `time.ParseDuration` for the units cron users write (h, m, s, ms), e.g. `1h30m`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// The zone a CronJob's times are computed in: `spec.timeZone`, else the schedule's
/// `CRON_TZ=`, else the controller's local zone (as upstream's controller manager).
///
/// # Errors
/// [`UnknownTimeZone`] for a name not in the database.
pub fn zone(spec_zone: Option<&str>, parsed: &Parsed) -> Result<TimeZone, UnknownTimeZone> {
    match spec_zone.or(parsed.zone.as_deref()) {
        Some(name) => TimeZone::get(name).map_err(|_| UnknownTimeZone(name.to_string())),
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

impl Schedule {
    /// The first scheduled time strictly after `after`, in zone `tz` (robfig's `Next`);
    /// None if none within five years (e.g. February 30th).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow, dom_star, dow_star) = match self {
            Schedule::Every(d) => {
                // Whole seconds, as robfig's ConstantDelaySchedule.
                let secs = after.as_second() + d.as_secs().max(1) as i64;
                return Timestamp::from_second(secs).ok();
            }
            Schedule::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            } => (*minute, *hour, *dom, *month, *dow, *dom_star, *dow_star),
        };
        let has = |bits: u64, v: i8| bits & (1u64 << v) != 0;
        let start = after.to_zoned(tz.clone()).datetime();
        // The next whole minute.
        let mut dt = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.year() + 5;
        while dt.year() <= limit {
            if !has(month, dt.month()) {
                dt = DateTime::new(dt.year(), dt.month(), 1, 0, 0, 0, 0)
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            let dom_ok = has(dom, dt.day());
            let dow_ok = has(dow, dt.weekday().to_sunday_zero_offset());
            let day_ok = if dom_star || dow_star {
                dom_ok && dow_ok
            } else {
                dom_ok || dow_ok
            };
            if !day_ok {
                dt = dt
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Default::default());
                continue;
            }
            if !has(hour, dt.hour()) {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(minute, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The latest scheduled time in `(earliest, now]` and how many were missed in that span
    /// (upstream's `mostRecentScheduleTime`). After 100 misses the count stops and the search
    /// jumps to the last week, so a long-stopped controller does not walk years of minutes.
    pub fn most_recent(
        &self,
        earliest: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> (Option<Timestamp>, u32) {
        let mut last = None;
        let mut count = 0u32;
        let mut t = earliest;
        while let Some(next) = self.next_after(t, tz) {
            if next > now {
                break;
            }
            last = Some(next);
            count = count.saturating_add(1);
            t = next;
            if count == 100 {
                let week_ago = now.checked_sub(168.hours()).unwrap_or(now);
                if week_ago > t {
                    t = week_ago;
                }
            }
        }
        (last, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, zone: &str) -> String {
        let p = parse(spec).unwrap();
        let tz = TimeZone::get(zone).unwrap();
        p.schedule.next_after(ts(after), &tz).unwrap().to_string()
    }

    #[test]
    fn standard_schedules() {
        assert_eq!(
            next("*/1 * * * *", "2024-01-01T10:00:30Z", "UTC"),
            "2024-01-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:00:00Z", "UTC"),
            "2024-01-01T10:15:00Z"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T10:00:00Z", "UTC"),
            "2024-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-01-01T10:00:00Z", "UTC"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-03-01T00:00:00Z", "UTC"),
            "2025-01-01T00:00:00Z"
        );
        // 2024-01-01 is a Monday: next Friday 9:30.
        assert_eq!(
            next("30 9 * * fri", "2024-01-01T00:00:00Z", "UTC"),
            "2024-01-05T09:30:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2024-01-01T00:00:00Z", "UTC"),
            "2024-01-07T00:00:00Z"
        );
        // Day of month OR day of week when both are restricted.
        assert_eq!(
            next("0 0 15 * mon", "2024-01-02T00:00:00Z", "UTC"),
            "2024-01-08T00:00:00Z"
        );
        assert_eq!(
            next("0 12 1-7/3 feb-mar *", "2024-01-01T00:00:00Z", "UTC"),
            "2024-02-01T12:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2024-01-01T00:00:00Z", "UTC"),
            "2024-01-01T00:01:30Z"
        );
    }

    #[test]
    fn time_zones() {
        // 09:00 in Berlin (UTC+1 in winter, +2 in summer).
        assert_eq!(
            next("0 9 * * *", "2024-01-01T00:00:00Z", "Europe/Berlin"),
            "2024-01-01T08:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2024-07-01T00:00:00Z", "Europe/Berlin"),
            "2024-07-01T07:00:00Z"
        );
        let p = parse("CRON_TZ=Asia/Tokyo 0 9 * * *").unwrap();
        assert_eq!(p.zone.as_deref(), Some("Asia/Tokyo"));
        let tz = zone(None, &p).unwrap();
        assert_eq!(
            p.schedule
                .next_after(ts("2024-01-01T00:00:00Z"), &tz)
                .unwrap()
                .to_string(),
            "2024-01-02T00:00:00Z"
        );
        assert!(zone(Some("Mars/Olympus"), &p).is_err());
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * mo",
            "*/0 * * * *",
            "@fortnightly",
            "5-1 * * * *",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missed_times_are_counted() {
        let p = parse("*/10 * * * *").unwrap().schedule;
        let (last, n) = p.most_recent(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T00:35:00Z"),
            &TimeZone::UTC,
        );
        assert_eq!(last.unwrap().to_string(), "2024-01-01T00:30:00Z");
        assert_eq!(n, 3);
        let (last, n) = p.most_recent(
            ts("2024-01-01T00:30:00Z"),
            ts("2024-01-01T00:35:00Z"),
            &TimeZone::UTC,
        );
        assert_eq!((last, n), (None, 0));
        let every_minute = parse("* * * * *").unwrap().schedule;
        let (last, n) = every_minute.most_recent(
            ts("2020-01-01T00:00:00Z"),
            ts("2024-01-01T00:00:30Z"),
            &TimeZone::UTC,
        );
        assert_eq!(last.unwrap().to_string(), "2024-01-01T00:00:00Z");
        assert!(n >= 100);
    }
}
