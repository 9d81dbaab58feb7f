//! Kubernetes resource quantities (`128Mi`, `1G`, `500m`, `0.25`) and short durations (`10s`).
//!
//! Arithmetic is exact (integers over a power of ten), so `0.5Gi` is exactly 512 MiB; results
//! that are not whole units (bytes, millicores) round up, as Kubernetes does.

use std::time::Duration;

const MEMORY_EXPECTED: &str = "expected a number with an optional suffix Ki, Mi, Gi, Ti, K, M, G, T";
const CPU_EXPECTED: &str = "expected cores (\"1\", \"0.5\") or millicores (\"500m\")";

/// A non-negative decimal: `mantissa / 10^scale`.
struct Decimal {
    mantissa: u128,
    scale: u32,
}

fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if int.len() + frac.len() > 30 {
        return None;
    }
    let digits = format!("{int}{frac}");
    Some(Decimal { mantissa: digits.parse().ok()?, scale: frac.len() as u32 })
}

/// Splits `s` into its number and its suffix (the first character that cannot be part of a number).
fn split_suffix(s: &str) -> (&str, &str) {
    let i = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .map_or(s.len(), |(i, _)| i);
    s.split_at(i)
}

/// `ceil(d * num / den)`, or `None` on overflow.
fn scale_ceil(d: &Decimal, num: u128, den: u128) -> Option<u128> {
    let n = d.mantissa.checked_mul(num)?;
    let den = den.checked_mul(10u128.checked_pow(d.scale)?)?;
    Some(n.div_ceil(den))
}

/// Parses a Kubernetes memory quantity into bytes: plain bytes (`500000`), decimal suffixes
/// `k`/`K`, `M`, `G`, `T`, `P`, `E`, binary suffixes `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`, an exponent
/// (`129e6`) or milli-bytes (`m`). Fractions that are not whole bytes round up.
pub fn parse_memory_bytes(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid quantity {s:?}: {MEMORY_EXPECTED}");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid quantity {s:?}: must not be negative"));
    }
    let (number, suffix) = split_suffix(t);
    let d = parse_decimal(number).ok_or_else(invalid)?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" | "K" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().map_err(|_| invalid())?;
            (10u128.checked_pow(exp).ok_or_else(invalid)?, 1)
        }
        _ => return Err(invalid()),
    };
    let bytes = scale_ceil(&d, num, den).ok_or_else(|| format!("invalid quantity {s:?}: too large"))?;
    u64::try_from(bytes).map_err(|_| format!("invalid quantity {s:?}: too large"))
}

/// Parses a Kubernetes CPU quantity into millicores: `500m`, `1`, `0.25`, `2`. Fractions of a
/// millicore round up.
pub fn parse_cpu_millis(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid cpu quantity {s:?}: {CPU_EXPECTED}");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid cpu quantity {s:?}: must not be negative"));
    }
    let (number, suffix) = split_suffix(t);
    let d = parse_decimal(number).ok_or_else(invalid)?;
    let millis = match suffix {
        "" => scale_ceil(&d, 1000, 1),
        "m" => scale_ceil(&d, 1, 1),
        _ => return Err(invalid()),
    };
    millis.and_then(|m| u64::try_from(m).ok()).ok_or_else(|| format!("invalid cpu quantity {s:?}: too large"))
}

/// Parses any Kubernetes quantity into a number (`10`, `500m` = 0.5, `2k`, `1Mi`): metric
/// targets such as a Pods metric's `averageValue`.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let invalid =
        || format!("invalid quantity {s:?}: expected a number with an optional suffix m, k, M, G, Ki, Mi, Gi");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("invalid quantity {s:?}: must not be negative"));
    }
    let (number, suffix) = split_suffix(t);
    let d = parse_decimal(number).ok_or_else(invalid)?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid()),
    };
    Ok(d.mantissa as f64 / 10f64.powi(d.scale as i32) * factor)
}

/// Parses a short duration: one or more `<integer><unit>` with unit `ms`, `s`, `m` or `h`
/// (`500ms`, `10s`, `2m`, `1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {s:?}: expected a number with a unit ms, s, m or h (\"500ms\", \"10s\", \"2m\")");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_suffixes() {
        assert_eq!(parse_memory_bytes("500000"), Ok(500_000));
        assert_eq!(parse_memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("1k"), Ok(1000));
        assert_eq!(parse_memory_bytes("1K"), Ok(1000));
        assert_eq!(parse_memory_bytes("2Ki"), Ok(2048));
        assert_eq!(parse_memory_bytes("1Ti"), Ok(1 << 40));
        assert_eq!(parse_memory_bytes("0.5Gi"), Ok(512 << 20));
        assert_eq!(parse_memory_bytes("129e6"), Ok(129_000_000));
        assert_eq!(parse_memory_bytes("1500m"), Ok(2));
        assert_eq!(parse_memory_bytes("0.1"), Ok(1));
        assert_eq!(parse_memory_bytes("+1Mi"), Ok(1 << 20));
        assert_eq!(parse_memory_bytes("0"), Ok(0));
    }

    #[test]
    fn memory_rejects() {
        for bad in ["", "12XB", "Mi", "1.2.3Mi", "abc", "1 Mi", "1mi", "1e", "99999999999999999999999999Ei"] {
            assert!(parse_memory_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_memory_bytes("12XB").unwrap_err(),
            "invalid quantity \"12XB\": expected a number with an optional suffix Ki, Mi, Gi, Ti, K, M, G, T"
        );
        assert_eq!(parse_memory_bytes("-1Mi").unwrap_err(), "invalid quantity \"-1Mi\": must not be negative");
    }

    #[test]
    fn cpu() {
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("0.25"), Ok(250));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.0001"), Ok(1));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        for bad in ["", "1Gi", "m", "-1", "1.5.m", "half"] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "10x", "1.5s", "-1s", "ten seconds"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
