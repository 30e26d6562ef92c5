//! `resource.Quantity`: parsing (`100m`, `1.5`, `2Gi`, `1e3`, `500M`), exact comparison and
//! arithmetic, and the canonical string upstream's `Quantity.String()` prints.
//!
//! # Design
//! A quantity is held as an `i128` count of nano-units plus the format it was written in
//! (decimal SI, binary SI or decimal exponent), which decides how it prints. Upstream rounds
//! anything finer than 1n up (away from zero) to 1n, so nano-units lose nothing.
//!
//! # Limits
//! Upstream caps values it cannot hold in an `int64` mantissa at 2^63-1 but keeps small
//! mantissas with huge exponents (`1e30`) exactly; values beyond ±1.7e29 saturate here.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// Why a quantity string was rejected. `Display` is upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string does not have the number-then-suffix shape.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The numeric part could not be read.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one of n u m k M G T P E Ki Mi Gi Ti Pi Ei or eN.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// How a quantity prints, chosen by the suffix it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `12e6`-style.
    DecimalExponent,
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `m`, `k`, `M`, ... (powers of 1000).
    DecimalSI,
}

const NANO: i128 = 1_000_000_000;
/// Upstream's slow path caps magnitudes at the largest int64.
const MAX_ALLOWED_NANOS: i128 = (i64::MAX as i128) * NANO;

/// A parsed resource quantity.
#[derive(Debug, Clone)]
pub struct Quantity {
    nanos: i128,
    format: Format,
    /// Upstream keeps the input verbatim when it already is canonical and prints it back.
    cached: Option<String>,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

fn pow10_saturating(exp: i64) -> i128 {
    u32::try_from(exp).ok().and_then(pow10).unwrap_or(i128::MAX)
}

fn parse_saturating(digits: &str) -> i128 {
    let mut v: i128 = 0;
    for d in digits.bytes() {
        v = match v
            .checked_mul(10)
            .and_then(|x| x.checked_add(i128::from(d - b'0')))
        {
            Some(x) => x,
            None => return i128::MAX,
        };
    }
    v
}

/// Magnitude of `digits` (ASCII digits) × 10^exp10 in nano-units, rounded up to a whole
/// nano-unit as upstream rounds (away from zero), saturating at i128.
fn to_nanos(digits: &str, exp10: i64) -> i128 {
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return 0;
    }
    let shift = exp10 + 9;
    if shift >= 0 {
        return parse_saturating(digits).saturating_mul(pow10_saturating(shift));
    }
    let kept_len = digits.len() as i64 + shift;
    let (kept, dropped) = if kept_len <= 0 {
        ("", digits)
    } else {
        digits.split_at(kept_len as usize)
    };
    let mut v = parse_saturating(kept);
    if dropped.bytes().any(|b| b != b'0') {
        v = v.saturating_add(1);
    }
    v
}

/// Splits a quantity string like upstream `parseQuantityString`.
fn split(s: &str) -> Result<(bool, String, String, String), Error> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if let Some(&c) = b.first() {
        if c == b'-' {
            positive = false;
            pos += 1;
        } else if c == b'+' {
            pos += 1;
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok((positive, "0".into(), String::new(), String::new()));
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = s[num_start..pos].to_string();
    if num.is_empty() {
        num = "0".into();
    }
    let mut denom = String::new();
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let d_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = s[d_start..pos].to_string();
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(Error::Format);
    }
    Ok((positive, num, denom, s[suffix_start..].to_string()))
}

/// (base, exponent, format) for a suffix, like upstream's suffixer.
fn interpret(suffix: &str) -> Option<(u32, i64, Format)> {
    let dec = |e| Some((10, e, Format::DecimalSI));
    let bin = |e| Some((2, e, Format::BinarySI));
    match suffix {
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "" => dec(0),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => bin(10),
        "Mi" => bin(20),
        "Gi" => bin(30),
        "Ti" => bin(40),
        "Pi" => bin(50),
        "Ei" => bin(60),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let e: i64 = s[1..].parse().ok()?;
            // upstream truncates the parsed exponent to int32
            Some((10, i64::from(e as i32), Format::DecimalExponent))
        }
        _ => None,
    }
}

impl Quantity {
    /// Parses a quantity string (upstream `resource.ParseQuantity`).
    ///
    /// # Errors
    /// [`Error`] with upstream's message for malformed input.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() {
            return Err(Error::Format);
        }
        if s == "0" {
            return Ok(Quantity {
                nanos: 0,
                format: Format::DecimalSI,
                cached: Some("0".into()),
            });
        }
        let (positive, num, denom, suffix) = split(s)?;
        let (base, exponent, mut format) = interpret(&suffix).ok_or(Error::Suffix)?;
        let digits = format!("{num}{denom}");
        let frac = denom.len() as i64;
        let mut nanos = if base == 10 {
            to_nanos(&digits, exponent - frac)
        } else {
            binary_nanos(&digits, frac, exponent)
        };

        // Upstream's fast path (int64 mantissa, scale >= -9) keeps the value uncapped and may
        // cache the input as its canonical form; everything else is capped at 2^63-1.
        let mut cached = None;
        let fast = fast_path(&num, &denom, base, exponent);
        if fast {
            let scale = if base == 10 { exponent - frac } else { 0 };
            let shifted = digits.as_str();
            let canonical_input = match format {
                Format::BinarySI => {
                    let v: i64 = shifted.parse().unwrap_or(0);
                    exponent % 10 == 0 && (v & 0x07) != 0
                }
                _ => scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0'),
            };
            if canonical_input {
                cached = Some(s.to_string());
            }
        } else {
            nanos = nanos.min(MAX_ALLOWED_NANOS);
            if format == Format::BinarySI && nanos < NANO && nanos > 0 {
                format = Format::DecimalSI;
            }
        }
        Ok(Quantity {
            nanos: if positive { nanos } else { -nanos },
            format,
            cached,
        })
    }

    /// Reads a quantity from JSON as upstream's `UnmarshalJSON` does: a string (trimmed) or a
    /// bare number; `null` is zero.
    ///
    /// # Errors
    /// [`Error`] for malformed strings and non-scalar JSON.
    pub fn from_json(v: &Value) -> Result<Self, Error> {
        match v {
            Value::Null => Ok(Quantity::from_nanos(0, Format::DecimalSI)),
            Value::String(s) => Quantity::parse(s.trim()),
            Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => Err(Error::Format),
        }
    }

    /// A quantity from a nano-unit count, printed in `format`.
    pub fn from_nanos(nanos: i128, format: Format) -> Self {
        Quantity {
            nanos,
            format,
            cached: None,
        }
    }

    /// A whole-unit quantity (e.g. bytes, pods), printed in `format`.
    pub fn from_units(units: i64, format: Format) -> Self {
        Quantity::from_nanos(i128::from(units) * NANO, format)
    }

    /// A milli-unit quantity (e.g. millicores), printed in decimal SI.
    pub fn from_millis(millis: i64) -> Self {
        Quantity::from_nanos(i128::from(millis) * 1_000_000, Format::DecimalSI)
    }

    /// The value in nano-units (exact).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The format it prints in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whole units rounded up (upstream `Value()`), saturating at i64.
    pub fn value(&self) -> i64 {
        ceil_div(self.nanos, NANO)
    }

    /// Milli-units rounded up (upstream `MilliValue()`), saturating at i64.
    pub fn milli_value(&self) -> i64 {
        ceil_div(self.nanos, 1_000_000)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Sum (keeps `self`'s format, as upstream `Add`).
    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity::from_nanos(self.nanos.saturating_add(other.nanos), self.format)
    }

    /// Difference (keeps `self`'s format, as upstream `Sub`).
    pub fn sub(&self, other: &Quantity) -> Quantity {
        Quantity::from_nanos(self.nanos.saturating_sub(other.nanos), self.format)
    }

    /// The canonical string (upstream `String()`), ignoring any cached input form.
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySI && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            format = Format::DecimalSI;
        }
        match format {
            Format::BinarySI => {
                let mut units = self.nanos / NANO;
                let mut exp = 0;
                while exp < 6 && units % 1024 == 0 {
                    units /= 1024;
                    exp += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
                format!("{units}{suffix}")
            }
            Format::DecimalSI | Format::DecimalExponent => {
                let mut mant = self.nanos;
                let mut exp: i32 = -9;
                while mant % 10 == 0 {
                    mant /= 10;
                    exp += 1;
                }
                while exp.rem_euclid(3) != 0 {
                    mant *= 10;
                    exp -= 1;
                }
                if format == Format::DecimalExponent {
                    return if exp == 0 {
                        mant.to_string()
                    } else {
                        format!("{mant}e{exp}")
                    };
                }
                // DecimalSI tops out at E; bigger exponents keep the E suffix.
                while exp > 18 {
                    mant *= 1000;
                    exp -= 3;
                }
                let suffix = match exp {
                    -9 => "n",
                    -6 => "u",
                    -3 => "m",
                    3 => "k",
                    6 => "M",
                    9 => "G",
                    12 => "T",
                    15 => "P",
                    18 => "E",
                    _ => "",
                };
                format!("{mant}{suffix}")
            }
        }
    }
}

fn ceil_div(n: i128, d: i128) -> i64 {
    let q = n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0);
    i64::try_from(q).unwrap_or(if q > 0 { i64::MAX } else { i64::MIN })
}

/// Whether upstream takes its exact int64 fast path for this input.
fn fast_path(num: &str, denom: &str, base: u32, exponent: i64) -> bool {
    let digits = num.len() + denom.len();
    let frac = denom.len() as i64;
    if base == 10 {
        let precision = 18 - digits as i64;
        let scale = exponent - frac;
        precision >= 0 && scale >= -9 && format!("{num}{denom}").parse::<i64>().is_ok()
    } else {
        if !(exponent >= 0 && denom.is_empty()) {
            return false;
        }
        let precision = 15 - num.len() as i64 - ((exponent as f32) * 3.0 / 10.0) as i64 - 1;
        if precision < 0 {
            return false;
        }
        match num.parse::<i64>() {
            Ok(v) => u32::try_from(exponent)
                .ok()
                .and_then(|e| 1i64.checked_shl(e))
                .and_then(|m| v.checked_mul(m))
                .is_some(),
            Err(_) => false,
        }
    }
}

fn binary_nanos(digits: &str, frac: i64, exp2: i64) -> i128 {
    let exp2 = u32::try_from(exp2).unwrap_or(0);
    // value = digits × 10^-frac × 2^exp2, rounded up to a nano-unit after the multiply
    let digits_trim = digits.trim_start_matches('0');
    if digits_trim.is_empty() {
        return 0;
    }
    let mut v: i128 = 0;
    for d in digits_trim.bytes() {
        v = match v
            .checked_mul(10)
            .and_then(|x| x.checked_add(i128::from(d - b'0')))
        {
            Some(x) => x,
            None => return i128::MAX,
        };
    }
    let v = match v.checked_mul(1i128 << exp2.min(100)) {
        Some(x) => x,
        None => return i128::MAX,
    };
    // v × 10^(9 - frac)
    let shift = 9 - frac;
    if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(pow10)
            .and_then(|p| v.checked_mul(p))
            .unwrap_or(i128::MAX)
    } else {
        match u32::try_from(-shift).ok().and_then(pow10) {
            Some(p) => v / p + i128::from(v % p != 0),
            None => 1,
        }
    }
}

impl fmt::Display for Quantity {
    /// Upstream `String()`: the input itself when it was already canonical, else canonical.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cached {
            Some(s) => f.write_str(s),
            None => f.write_str(&self.canonical()),
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Quantity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_upstream() {
        let cases = [
            ("0", "0"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1.5", "1500m"),
            ("0.5", "500m"),
            ("1", "1"),
            ("1000", "1k"),
            ("2Gi", "2Gi"),
            ("8Gi", "8Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("1E3", "1E3"),
            ("1e-3", "1e-3"),
            ("500M", "500M"),
            ("12e6", "12e6"),
            ("100k", "100k"),
            ("1k", "1k"),
            ("-1", "-1"),
            ("-100m", "-100m"),
            ("+1", "+1"),
            ("0.1", "100m"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("1.0000000001", "1000000001n"),
            ("10E", "10E"),
            ("001", "001"),
            ("1Ki", "1Ki"),
            ("1023", "1023"),
            ("129e6", "129e6"),
            ("1.1e3", "1100"),
            (".5", "500m"),
            ("5.", "5."),
            ("00100m", "00100m"),
            ("0.10", "100m"),
        ];
        for (input, want) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.to_string(), want, "{input}");
        }
    }

    #[test]
    fn errors_match_upstream() {
        let fmt = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
        let cases = [
            ("", fmt),
            ("abc", fmt),
            ("1.2.3", fmt),
            ("1Zi", fmt),
            ("1 ", fmt),
            ("1ki", "unable to parse quantity's suffix"),
            ("1e", "unable to parse quantity's suffix"),
            ("1mm", "unable to parse quantity's suffix"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Quantity::parse(input).unwrap_err().to_string(),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn values_and_arithmetic() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1.5").value(), 2);
        assert_eq!(q("2Gi").value(), 2 * 1024 * 1024 * 1024);
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1n").milli_value(), 1);
        assert!(q("1") > q("999m"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("100m").add(&q("900m")).to_string(), "1");
        assert_eq!(q("1Gi").sub(&q("512Mi")).to_string(), "512Mi");
        assert_eq!(q("-1.5").value(), -1);
        assert_eq!(
            Quantity::from_json(&serde_json::json!(1.5))
                .unwrap()
                .to_string(),
            "1500m"
        );
        assert_eq!(
            Quantity::from_json(&serde_json::json!(" 2 "))
                .unwrap()
                .to_string(),
            "2"
        );
        assert_eq!(Quantity::from_millis(250).to_string(), "250m");
        assert_eq!(
            Quantity::from_units(3 * 1024, Format::BinarySI).to_string(),
            "3Ki"
        );
        // capped like upstream's slow path
        assert_eq!(q("1024Ei").to_string(), "9223372036854775807");
    }
}
