//! Units as policies write them: durations (`90s`, `1h30m`), percentages
//! (`0.5%` or a plain fraction), latencies (`200ms`, `1.5s`). Parsers return a
//! message saying what was expected; the caller adds the place.

use std::time::Duration;

/// What a unit parser expected and found, in words; the caller adds the
/// place (`FILE:LINE:COL: path:` or the CLI flag).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

/// `30s`, `10m`, `1h30m`, `250ms`, `2d`. A unit is mandatory; components are
/// whole numbers in descending order of size.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let s = text.trim();
    let expected = "expected a duration with a unit such as `30s`, `10m`, `1h30m`, `250ms` or `2d`";
    if s.is_empty() {
        return Err(UnitError(format!("{expected}, found an empty string")));
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    let mut last_unit_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(UnitError(format!("{expected}, found `{s}`")));
        }
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let (rank, unit_ms): (usize, u128) = match unit {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            "" if tail.is_empty() => {
                return Err(UnitError(format!("missing unit in `{s}`: {expected}")));
            }
            "" => return Err(UnitError(format!("{expected}, found `{s}`"))),
            other => {
                return Err(UnitError(format!(
                    "unknown duration unit `{other}` in `{s}`: use ms, s, m, h or d"
                )));
            }
        };
        if last_unit_rank != usize::MAX && rank <= last_unit_rank {
            return Err(UnitError(format!(
                "{expected}, found `{s}` (units must go from largest to smallest, each once)"
            )));
        }
        last_unit_rank = rank;
        let n: u128 = num
            .parse()
            .map_err(|_| UnitError(format!("duration `{s}` is too large")))?;
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| UnitError(format!("duration `{s}` is too large")))?;
        rest = tail;
    }
    // A century is far beyond any rollout; larger values are typos.
    const MAX_MS: u128 = 100 * 365 * 86_400_000;
    if total_ms > MAX_MS {
        return Err(UnitError(format!(
            "duration `{s}` is too large (at most 100 years)"
        )));
    }
    Ok(Duration::from_millis(total_ms as u64))
}

/// `0.5%` → 0.005; a plain fraction `0.005` → 0.005. The caller checks the range.
pub fn parse_percent_text(text: &str) -> Result<f64, UnitError> {
    let s = text.trim();
    let expected = "expected a percentage such as `0.5%` or a fraction such as `0.005`";
    let (number, scale) = match s.strip_suffix('%') {
        Some(n) => (n.trim_end(), 100.0),
        None => (s, 1.0),
    };
    let value: f64 =
        parse_decimal(number).ok_or_else(|| UnitError(format!("{expected}, found `{s}`")))?;
    Ok(value / scale)
}

/// `200ms`, `1.5s`, `750us` → milliseconds. A unit is mandatory.
pub fn parse_latency_ms(text: &str) -> Result<f64, UnitError> {
    let s = text.trim();
    let expected = "expected a latency with a unit such as `200ms`, `1.5s` or `750us`";
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(UnitError(format!("{expected}, found `{s}`")));
    }
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "us" | "µs" => 0.001,
        "" => return Err(UnitError(format!("missing unit in `{s}`: {expected}"))),
        other => {
            return Err(UnitError(format!(
                "unknown latency unit `{other}` in `{s}`: use us, ms or s"
            )));
        }
    };
    let value =
        parse_decimal(number).ok_or_else(|| UnitError(format!("{expected}, found `{s}`")))?;
    Ok(value * scale)
}

/// A plain decimal number: digits with at most one point, finite. Rejects
/// exponents, signs other than a leading `-`, and `inf`/`nan` spellings.
fn parse_decimal(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let valid = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
        && body.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Render a fraction as a percentage without trailing noise: 0.005 → `0.5%`.
pub fn format_percent(fraction: f64) -> String {
    let pct = fraction * 100.0;
    let mut s = format!("{pct:.4}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    format!("{s}%")
}

/// Render milliseconds as a latency: 200 → `200ms`, 1500 → `1.5s`.
pub fn format_latency_ms(ms: f64) -> String {
    if ms >= 1_000.0 {
        let s = format_trimmed(ms / 1_000.0);
        format!("{s}s")
    } else if ms < 1.0 {
        format!("{}us", format_trimmed(ms * 1_000.0))
    } else {
        format!("{}ms", format_trimmed(ms))
    }
}

fn format_trimmed(v: f64) -> String {
    let mut s = format!("{v:.3}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(
            parse_duration("30")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert!(parse_duration("30 sec").is_err());
        assert!(
            parse_duration("5y")
                .unwrap_err()
                .to_string()
                .contains("unknown duration unit")
        );
        assert!(
            parse_duration("30m1h")
                .unwrap_err()
                .to_string()
                .contains("largest to smallest")
        );
        assert!(
            parse_duration("99999999999999999999999d")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent_text("0.5%"), Ok(0.005));
        assert_eq!(parse_percent_text("1%"), Ok(0.01));
        assert_eq!(parse_percent_text("0.25"), Ok(0.25));
        assert!(parse_percent_text("abc%").is_err());
        assert!(parse_percent_text("1e3").is_err());
        assert!(parse_percent_text("inf").is_err());
        assert_eq!(format_percent(0.005), "0.5%");
        assert_eq!(format_percent(0.995), "99.5%");
    }

    #[test]
    fn latencies() {
        assert_eq!(parse_latency_ms("200ms"), Ok(200.0));
        assert_eq!(parse_latency_ms("1.5s"), Ok(1500.0));
        assert_eq!(parse_latency_ms("750us"), Ok(0.75));
        assert!(
            parse_latency_ms("200")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert!(
            parse_latency_ms("2h")
                .unwrap_err()
                .to_string()
                .contains("unknown latency unit")
        );
        assert_eq!(format_latency_ms(1500.0), "1.5s");
        assert_eq!(format_latency_ms(200.0), "200ms");
    }
}
