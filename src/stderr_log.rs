//! The `wsloop` binary's logger (not part of the library): one line per record on standard
//! error, UTC timestamp first, for records of wsloop's own modules up to `--log-level`.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, Log, Metadata, Record};

/// Prints `2024-01-01T12:00:00Z WARN  text` lines to standard error.
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Only wsloop's records: dependencies that log (mio at trace level) stay quiet, as
        // they did before the library logged through the facade.
        metadata.level() <= log::max_level() && metadata.target().starts_with("wsloop")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
        let t = secs % 86_400;
        // One write per line, so lines from the signal and Redis threads do not interleave.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z {:<5} {}",
            t / 3600,
            t / 60 % 60,
            t % 60,
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger (once, at start) printing `level` and more severe records.
pub fn install(level: Level) {
    // Fails only if a logger is already installed, which main never does twice.
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

/// Changes the most verbose level that is printed.
pub fn set_level(level: Level) {
    log::set_max_level(level.to_level_filter());
}

/// Parses `--log-level`: error, warn (or warning), info, debug, trace, in any case.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(Level::Error),
        "warn" | "warning" => Ok(Level::Warn),
        "info" => Ok(Level::Info),
        "debug" => Ok(Level::Debug),
        "trace" => Ok(Level::Trace),
        _ => Err(format!(
            "unknown log level {s:?} (error, warn, info, debug, trace)"
        )),
    }
}

/// Days since 1970-01-01 to a (year, month, day) date in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("WARNING"), Ok(Level::Warn));
        assert_eq!(parse_level("trace"), Ok(Level::Trace));
        assert!(parse_level("loud").is_err());
    }
}
