//! Durations and sizes with units, one convention for every flag, the file and the environment:
//! durations `500ms`, `30s`, `2m`, `1h`, `1d`; sizes `512B`, `64KiB`/`64KB`, `1MiB`/`1MB`,
//! `1GiB`/`1GB` (`Ki`/`Mi`/`Gi` are powers of 1024, `K`/`M`/`G` powers of 1000; unit letters in
//! any case). A bare number is in the flag's own unit, the one it had before units existed:
//! seconds for the whole-second timeouts, milliseconds for `--shutdown-timeout`,
//! `--accept-pause`, `--broker-linger` (once `*-ms`) and `--sse-retry`, bytes for sizes.
//!
//! Each parser returns the same integer type the `Config` field always had (u32 seconds, u64
//! milliseconds, bytes), so the code reading `cfg.*` does not change; a value the field cannot
//! hold (`1500ms` for a whole-seconds flag, more than the type holds, outside the flag's range)
//! is refused with a message saying why. Pure functions; clap calls them as value parsers.

/// Milliseconds per duration unit.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Bytes per size unit (lower case; matched without regard to case).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

/// Splits `"30s"` into `(30, "s")` and `"30"` into `(30, "")`. Digits may be grouped with `_`.
fn split_number(s: &str) -> Result<(u64, &str), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    let (digits, unit) = s.split_at(end);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!("{s:?} is not a number"));
    }
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("{s} is too large"))?;
    Ok((n, unit.trim_start()))
}

/// A duration in milliseconds; a bare number counts `bare_ms` milliseconds each.
pub fn parse_duration_ms(s: &str, bare_ms: u64) -> Result<u64, String> {
    let (n, unit) = split_number(s)?;
    let per = if unit.is_empty() {
        bare_ms
    } else {
        DURATION_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|&(_, per)| per)
            .ok_or_else(|| {
                format!("{s:?}: unknown unit {unit:?} (durations: 500ms, 30s, 2m, 1h, 1d)")
            })?
    };
    n.checked_mul(per).ok_or_else(|| format!("{s} is too long"))
}

/// A size in bytes; a bare number is bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s)?;
    let per = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == lower)
            .map(|&(_, per)| per)
            .ok_or_else(|| {
                format!("{s:?}: unknown unit {unit:?} (sizes: 512B, 64KiB, 1MiB, 1GB, 1GiB)")
            })?
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("{s} is too large"))
}

/// `ms` in the largest unit that divides it: `1h`, `30s`, `1500ms`.
pub fn format_duration(ms: u64) -> String {
    DURATION_UNITS
        .iter()
        .rev()
        .find(|&&(_, per)| ms != 0 && ms % per == 0)
        .map_or_else(|| format!("{ms}ms"), |&(u, per)| format!("{}{u}", ms / per))
}

/// `bytes` in the largest binary unit that divides it: `64MiB`, `4KiB`, `1000B`.
pub fn format_size(bytes: u64) -> String {
    ["TiB", "GiB", "MiB", "KiB"]
        .iter()
        .zip([40, 30, 20, 10])
        .find(|&(_, shift)| bytes != 0 && bytes % (1u64 << shift) == 0)
        .map_or_else(
            || format!("{bytes}B"),
            |(u, shift)| format!("{}{u}", bytes >> shift),
        )
}

fn in_range(v: u64, min: u64, max: u64, show: impl Fn(u64) -> String) -> Result<u64, String> {
    if v < min || v > max {
        return Err(format!(
            "{} is outside {}..={}",
            show(v),
            show(min),
            show(max)
        ));
    }
    Ok(v)
}

/// Value parser of a whole-seconds flag (the field is `u32` seconds): `30s`, `2m`, `1h`, a bare
/// number of seconds; `1500ms` is refused (not whole seconds). `min..=max` in seconds.
pub fn secs(
    min: u32,
    max: u32,
) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let ms = parse_duration_ms(s, 1_000)?;
        if ms % 1_000 != 0 {
            return Err(format!(
                "{} is not a whole number of seconds (this flag counts whole seconds)",
                format_duration(ms)
            ));
        }
        let v = in_range(
            ms,
            u64::from(min) * 1_000,
            u64::from(max) * 1_000,
            format_duration,
        )?;
        Ok((v / 1_000) as u32) // in range of u32 seconds: checked just above
    }
}

/// Value parser of a milliseconds flag (the field is `u64` or `u32` milliseconds): `500ms`,
/// `5s`, a bare number of milliseconds. `min..=max` in milliseconds.
pub fn millis<T>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |s: &str| {
        let ms = in_range(parse_duration_ms(s, 1)?, min, max, format_duration)?;
        T::try_from(ms).map_err(|_| format!("{s} is too long"))
    }
}

/// Value parser of a size flag in bytes (`usize` or `u32`): `64MiB`, `512KiB`, `1GB`, a bare
/// number of bytes. `min..=max` in bytes.
pub fn bytes<T>(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |s: &str| {
        let b = in_range(parse_size(s)?, min, max, format_size)?;
        T::try_from(b).map_err(|_| format!("{s} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s", 1000), Ok(30_000));
        assert_eq!(parse_duration_ms("500ms", 1000), Ok(500));
        assert_eq!(parse_duration_ms("2m", 1000), Ok(120_000));
        assert_eq!(parse_duration_ms("1h", 1), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1d", 1), Ok(86_400_000));
        assert_eq!(parse_duration_ms(" 5 s ", 1), Ok(5_000));
        // bare numbers in the flag's unit
        assert_eq!(parse_duration_ms("30", 1000), Ok(30_000));
        assert_eq!(parse_duration_ms("5000", 1), Ok(5_000));
        assert_eq!(parse_duration_ms("1_000", 1), Ok(1_000));
        for bad in [
            "", "s", "-1s", "1.5s", "30 sec", "30S", "1h30m", "abc", "0x10",
        ] {
            assert!(parse_duration_ms(bad, 1).is_err(), "{bad:?}");
        }
        assert!(
            parse_duration_ms("99999999999999999999", 1)
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration_ms("999999999999999d", 1)
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("4kb"), Ok(4_000));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("8192"), Ok(8192));
        for bad in ["", "MiB", "1.5MiB", "1 MiBs", "-1", "1e6", "1M"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn whole_seconds_flags() {
        let p = secs(1, 3600);
        assert_eq!(p("30s"), Ok(30));
        assert_eq!(p("2m"), Ok(120));
        assert_eq!(p("1h"), Ok(3600));
        assert_eq!(p("30"), Ok(30));
        assert_eq!(p("2000ms"), Ok(2));
        assert!(p("1500ms").unwrap_err().contains("whole number of seconds"));
        assert!(p("0").unwrap_err().contains("outside 1s..=1h"));
        assert!(p("2h").is_err());
        let unbounded = secs(0, u32::MAX);
        assert_eq!(unbounded("0"), Ok(0));
        assert_eq!(unbounded("4294967295"), Ok(u32::MAX));
        assert!(unbounded("4294967296").is_err());
        assert!(unbounded("garbage").is_err());
    }

    #[test]
    fn millisecond_and_size_flags() {
        let ms = millis::<u64>(0, u64::MAX);
        assert_eq!(ms("5s"), Ok(5_000));
        assert_eq!(ms("5000"), Ok(5_000));
        assert_eq!(ms("500ms"), Ok(500));
        let ms32 = millis::<u32>(0, u64::MAX);
        assert_eq!(ms32("2s"), Ok(2_000));
        assert!(ms32("50d").unwrap_err().contains("too long"));
        let b = bytes::<u32>(1, 16 << 20);
        assert_eq!(b("4KiB"), Ok(4096));
        assert_eq!(b("16MiB"), Ok(16 << 20));
        assert!(b("17MiB").unwrap_err().contains("outside 1B..=16MiB"));
        assert!(b("0").is_err());
        let big = bytes::<u32>(0, u64::MAX);
        assert!(big("4GiB").unwrap_err().contains("too large"));
        let us = bytes::<usize>(0, u64::MAX);
        assert_eq!(us("64MiB"), Ok(64 << 20));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(3_600_000), "1h");
        assert_eq!(format_duration(30_000), "30s");
        assert_eq!(format_duration(1_500), "1500ms");
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
    }
}
