//! The process's own figures for the standard `process_*` metrics (CPU time, resident memory,
//! file descriptors, start time), read from `/proc/self` on Linux; elsewhere there are none.

/// What `/proc/self` says about this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch; `None` where `/proc/stat` (the boot time)
    /// is hidden, as under systemd's `ProcSubset=pid`.
    pub start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`): 100 on every Linux architecture
/// (the kernel's ABI; Prometheus' own procfs reader assumes the same).
const USER_HZ: f64 = 100.0;

/// Reads this process's figures; `None` where `/proc` is missing or unreadable.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // after its closing parenthesis, from field 3 (state) on.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu_ticks = field(14)? + field(15)?;
    let start_ticks = field(22)?;
    let boot_time: Option<f64> = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    });
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    // `Max open files            1024                 524288               files`
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok();
    Some(ProcessStats {
        cpu_seconds: cpu_ticks / USER_HZ,
        resident_memory_bytes: rss_kib * 1024,
        open_fds,
        max_fds,
        start_time_seconds: boot_time.map(|boot| boot + start_ticks / USER_HZ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_is_read() {
        let stats = super::read().expect("/proc/self on Linux");
        assert!(stats.resident_memory_bytes > 0);
        assert!(stats.open_fds >= 3, "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        let start = stats.start_time_seconds.expect("/proc/stat readable");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }
}
