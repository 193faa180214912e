//! Resource use of a process, read from Linux's `/proc` (nothing is reported elsewhere).
//!
//! * Peak resident memory is `VmHWM` of `/proc/<pid>/status` (the high-water mark of
//!   `VmRSS`, in kB), so one read after the work covers its whole lifetime so far.
//! * CPU time is `utime + stime` of `/proc/<pid>/stat`, summed over all threads, in
//!   clock ticks of 1/100 s (Linux's `USER_HZ` is 100 on every mainstream
//!   configuration); deltas over whole rounds keep the 10 ms granularity negligible.

/// Linux `USER_HZ`: clock ticks per second in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

/// Peak resident memory of `pid` in bytes, or `None` if the process is gone or this is
/// not Linux.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

/// Current resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// User + system CPU time of `pid` (all threads) in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        // RSS first: the high-water mark read afterwards covers it.
        let now = rss_bytes(pid).expect("Linux /proc");
        let peak = peak_rss_bytes(pid).expect("Linux /proc");
        assert!(peak >= now && now > 0);
        // Burn a little CPU so the counter is non-zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(pid).expect("Linux /proc") >= 0.0);
    }

    #[test]
    fn a_missing_process_reads_as_none() {
        // Pid numbers are below 2^22 on Linux.
        assert_eq!(peak_rss_bytes(u32::MAX), None);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
