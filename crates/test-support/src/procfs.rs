//! What `/proc` says of a process the tests or benches started: its memory
//! (`VmRSS`, `VmHWM`) and its CPU time. Linux only; a process that is gone
//! or a field that cannot be read reads as 0.

/// A `kB` field of `/proc/<pid>/status` (`"VmRSS:"`, `"VmHWM:"`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of one process.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may hold spaces: utime is the 12th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(status_bytes(me, "VmRSS:") > 0);
        assert!(status_bytes(me, "VmHWM:") >= status_bytes(me, "VmRSS:") / 2);
        assert_eq!(status_bytes(me, "NoSuchField:"), 0);
        // Burn a little CPU so the counter has moved past zero ticks.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(me) > 0.0);
        assert_eq!(cpu_secs(u32::MAX), 0.0);
    }
}
