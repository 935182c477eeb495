//! What a run measured and how it is shown: latency histograms, CPU time and resident memory
//! of a process from /proc, error tallies, and the summary printed as text or as one JSON
//! object.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Longest latency the histograms hold (longer ones are recorded as this).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Latencies in nanoseconds, three significant digits.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(
            Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
    }

    /// Adds another thread's latencies.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    fn micros(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count(),
            "p50_us": self.micros(0.5),
            "p99_us": self.micros(0.99),
            "p999_us": self.micros(0.999),
            "max_us": self.0.max() as f64 / 1000.0,
            "mean_us": self.0.mean() / 1000.0,
        })
    }

    fn text(&self) -> String {
        if self.count() == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
            show_micros(self.micros(0.5)),
            show_micros(self.micros(0.99)),
            show_micros(self.micros(0.999)),
            show_micros(self.0.max() as f64 / 1000.0),
            self.count()
        )
    }
}

fn show_micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// Distinct error descriptions kept (the count goes on past it).
const MAX_ERROR_KINDS: usize = 20;

/// Errors seen: how many, and how many of each kind.
#[derive(Clone, Debug, Default)]
pub struct Errors {
    count: u64,
    kinds: BTreeMap<String, u64>,
}

impl Errors {
    /// Counts one error.
    pub fn add(&mut self, what: impl Into<String>) {
        self.count += 1;
        let what = what.into();
        if let Some(n) = self.kinds.get_mut(&what) {
            *n += 1;
        } else if self.kinds.len() < MAX_ERROR_KINDS {
            self.kinds.insert(what, 1);
        }
    }

    /// Adds another thread's errors.
    pub fn merge(&mut self, other: &Errors) {
        self.count += other.count;
        for (what, n) in &other.kinds {
            *self.kinds.entry(what.clone()).or_default() += n;
        }
    }

    /// How many.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// One description, for a setup that must stop at the first error.
    pub fn first(&self) -> Option<String> {
        self.kinds.keys().next().cloned()
    }
}

/// What every scenario thread keeps: its latencies and its errors.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// The scenario's latency (round trip, publish to receive, handshake).
    pub latency: Latency,
    /// Errors seen.
    pub errors: Errors,
}

impl Tally {
    /// All threads' tallies together.
    pub fn sum<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut sum = Tally::default();
        for t in tallies {
            sum.latency.merge(&t.latency);
            sum.errors.merge(&t.errors);
        }
        sum
    }
}

/// CPU time and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kb: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status` (`None`: this process).
pub fn sample(pid: Option<u32>) -> io::Result<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".into(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}: {what}"));
    Ok(ProcSample {
        cpu_ticks: parse_cpu_ticks(&stat).ok_or_else(|| invalid("no utime/stime in stat"))?,
        rss_kb: parse_rss_kb(&status).ok_or_else(|| invalid("no VmRSS in status"))?,
    })
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15, counted from 1). The
/// command name (field 2) is in parentheses and may itself hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:   1234 kB` from `/proc/PID/status`.
fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second, the unit of /proc/PID/stat times. `sysconf(_SC_CLK_TCK)` would
/// need unsafe FFI, so ask `getconf CLK_TCK` once; Linux has used 100 on every common
/// architecture for decades, which is the fallback.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// A process sampled before the run, when the measured window opened and when it closed.
#[derive(Clone, Copy, Debug)]
pub struct ProcWindow {
    /// Before any connection was opened.
    pub before: ProcSample,
    /// At the start of the measured window (after the warm-up).
    pub start: ProcSample,
    /// At the end of the window.
    pub end: ProcSample,
}

impl ProcWindow {
    /// CPU seconds spent in the window.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = self.end.cpu_ticks.saturating_sub(self.start.cpu_ticks);
        ticks as f64 / clock_ticks_per_second() as f64
    }
}

/// Bytes on the wire, both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wire {
    /// Read from the server.
    pub bytes_in: u64,
    /// Written to the server.
    pub bytes_out: u64,
}

impl std::ops::Sub for Wire {
    type Output = Wire;

    fn sub(self, earlier: Wire) -> Wire {
        Wire {
            bytes_in: self.bytes_in - earlier.bytes_in,
            bytes_out: self.bytes_out - earlier.bytes_out,
        }
    }
}

impl std::ops::AddAssign for Wire {
    fn add_assign(&mut self, other: Wire) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

/// A run's figures, as text lines and as one JSON object.
#[derive(Debug)]
pub struct Report {
    headline: String,
    lines: Vec<String>,
    json: Map<String, Value>,
    clean: bool,
}

impl Report {
    /// A report for `scenario`; `headline` says what ran.
    pub fn new(scenario: &str, headline: String) -> Self {
        let mut json = Map::new();
        json.insert("scenario".into(), scenario.into());
        Report {
            headline,
            lines: Vec::new(),
            json,
            clean: true,
        }
    }

    /// Sets a JSON field only (configuration, raw figures).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.into(), value.into());
    }

    /// A text line only.
    pub fn line(&mut self, label: &str, text: impl Display) {
        self.lines.push(format!("  {label:<18}{text}"));
    }

    /// A count over the window and its rate (`KEY` and `KEY_per_s`).
    pub fn count(&mut self, key: &str, label: &str, n: u64, seconds: f64) {
        let rate = if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        };
        self.set(key, n);
        self.set(&format!("{key}_per_s"), rate);
        self.line(label, format!("{n}  ({rate:.0}/s)"));
    }

    /// A plain figure, in both forms.
    pub fn figure(&mut self, key: &str, label: &str, value: impl Into<Value> + Display) {
        self.line(label, &value);
        self.set(key, value);
    }

    /// Latency percentiles under `key`.
    pub fn latency(&mut self, key: &str, label: &str, latency: &Latency) {
        self.set(key, latency.json());
        self.line(label, latency.text());
    }

    /// Server and client CPU time in the window, also per `unit` (`count` of them).
    pub fn cpu(
        &mut self,
        server: Option<&ProcWindow>,
        client: &ProcWindow,
        unit: &str,
        count: u64,
    ) {
        for (who, window) in [("server", server), ("client", Some(client))] {
            let key = format!("{who}_cpu_s");
            let per_key = format!("{who}_cpu_us_per_{unit}");
            let Some(window) = window else {
                self.set(&key, Value::Null);
                self.set(&per_key, Value::Null);
                self.line(&format!("{who} CPU"), "unknown (pass --server-pid)");
                continue;
            };
            let seconds = window.cpu_seconds();
            let per = (count > 0).then(|| seconds * 1e6 / count as f64);
            self.set(&key, seconds);
            self.set(&per_key, per);
            let per = per.map_or("-".into(), |p| format!("{p:.2}"));
            self.line(
                &format!("{who} CPU"),
                format!("{seconds:.2} s = {per} µs per {unit}"),
            );
        }
    }

    /// Bytes on the wire in the window, both ways, also per `unit` (`count` of them): what
    /// permessage-deflate saves.
    pub fn wire(&mut self, wire: Wire, unit: &str, count: u64) {
        for (way, bytes) in [("in", wire.bytes_in), ("out", wire.bytes_out)] {
            let per = (count > 0).then(|| bytes as f64 / count as f64);
            self.set(&format!("wire_bytes_{way}"), bytes);
            self.set(&format!("wire_bytes_{way}_per_{unit}"), per);
            let per = per.map_or("-".into(), |p| format!("{p:.1}"));
            self.line(
                &format!("wire {way}"),
                format!("{bytes} B = {per} B per {unit}"),
            );
        }
    }

    /// A count of things that must not happen: any makes the run unclean.
    pub fn problems(&mut self, key: &str, label: &str, n: u64) {
        if n > 0 {
            self.clean = false;
        }
        self.figure(key, label, n);
    }

    /// Errors, with their kinds.
    pub fn errors(&mut self, errors: &Errors) {
        self.problems("errors", "errors", errors.count);
        let kinds: Map<String, Value> = errors
            .kinds
            .iter()
            .map(|(what, n)| (what.clone(), Value::from(*n)))
            .collect();
        for (what, n) in &errors.kinds {
            self.lines.push(format!("    {n} x {what}"));
        }
        self.set("error_kinds", kinds);
    }

    /// Marks the run unclean with a reason unless `ok`.
    pub fn require(&mut self, ok: bool, why: &str) {
        if !ok {
            self.clean = false;
            self.lines.push(format!("  FAILED: {why}"));
        }
    }

    /// Nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.clean
    }

    /// The summary as text.
    pub fn text(&self) -> String {
        let mut text = self.headline.clone();
        for line in &self.lines {
            text.push('\n');
            text.push_str(line);
        }
        text
    }

    /// The figures as one JSON object (with `"clean"`).
    pub fn json(&self) -> Value {
        let mut json = self.json.clone();
        json.insert("clean".into(), self.clean.into());
        Value::Object(json)
    }

    /// Prints the text summary, or with `json` the JSON object on stdout and the summary
    /// on stderr.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json());
            eprintln!("{}", self.text());
        } else {
            println!("{}", self.text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields() {
        // A command name with spaces and a parenthesis, as proc(5) warns.
        let stat = "1234 (we ird) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\twsloop\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kb(status), Some(4321));
    }

    #[test]
    fn this_process() {
        let s = sample(None).unwrap();
        assert!(s.rss_kb > 0);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn latencies_merge() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        let j = a.json();
        assert!((j["p50_us"].as_f64().unwrap() - 30.0).abs() < 0.1);
        assert!(j["max_us"].as_f64().unwrap() >= 59_000_000.0);
    }

    #[test]
    fn error_kinds() {
        let mut e = Errors::default();
        for i in 0..30 {
            e.add(format!("kind {i}"));
        }
        e.add("kind 0");
        assert_eq!(e.count(), 31);
        assert_eq!(e.kinds.len(), MAX_ERROR_KINDS);
        assert_eq!(e.kinds["kind 0"], 2);
    }
}
