//! CPU time: the load generator's own (`getrusage`, user + system, whole process), and with
//! `--server-pid` the servers' (utime + stime from `/proc/PID/stat`, summed over every pid given)
//! over the measured part of a run: from the start line (every connection open, every worker
//! ready) to the end of the load (and, for fan-out, of the drain). The servers' resident memory
//! (VmRSS) is read before the run's connections open and again at the start line.

use std::sync::Mutex;

use crate::BenchError;

/// User + system CPU seconds this process has used so far.
pub fn own_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, which is large enough.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// User + system CPU seconds process `pid` has used so far.
pub fn process_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).ok_or_else(|| BenchError::Report(format!("cannot read /proc/{pid}/stat")))
}

fn parse_stat(stat: &str) -> Option<f64> {
    // Field 2, the command, is in parentheses and may hold spaces and parentheses: count from
    // after its last `)`. There field 3 (state) comes first, so utime (14) and stime (15) are
    // the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// The servers being watched: their CPU clocks (summed) at the start line and at the end, and
/// each one's resident memory before the run's connections and with them open.
struct Watch {
    pids: Vec<u32>,
    start: Option<f64>,
    end: Option<f64>,
    resident_before: Vec<u64>,
    resident_with_load: Option<Vec<u64>>,
    /// Bytes the servers had written (`wchar`, summed) at the start line and at the end.
    written: (Option<u64>, Option<u64>),
}

static SERVERS: Mutex<Option<Watch>> = Mutex::new(None);

/// Watches processes `pids` (checked now: a wrong pid fails the run before it starts), and
/// reads their memory before any connection opens.
pub fn watch_servers(pids: &[u32]) -> Result<(), BenchError> {
    let checked = |pid: u32| {
        let cpu = process_seconds(pid);
        cpu.and_then(|_| resident_bytes(pid)).map_err(|error| {
            BenchError::Report(format!("--server-pid {pid}: cannot read it: {error}"))
        })
    };
    let resident_before = pids
        .iter()
        .map(|&pid| checked(pid))
        .collect::<Result<_, _>>()?;
    *lock() = Some(Watch {
        pids: pids.to_vec(),
        start: None,
        end: None,
        resident_before,
        resident_with_load: None,
        written: (None, None),
    });
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, Option<Watch>> {
    SERVERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn total_seconds(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| process_seconds(pid).ok()).sum()
}

/// The measured part starts, every connection open: the servers' clocks and memory are read
/// (nothing without a watched server).
pub fn mark_start() {
    if let Some(watch) = lock().as_mut() {
        watch.start = total_seconds(&watch.pids);
        watch.written.0 = total_written(&watch.pids);
        watch.read_memory();
    }
}

/// Reads the servers' memory again (`idle`, after holding its connections a while).
pub fn sample_memory() {
    if let Some(watch) = lock().as_mut() {
        watch.read_memory();
    }
}

impl Watch {
    fn read_memory(&mut self) {
        let resident = self.pids.iter().map(|&pid| resident_bytes(pid).ok());
        self.resident_with_load = resident.collect();
    }
}

/// The measured part ends.
pub fn mark_end() {
    if let Some(watch) = lock().as_mut() {
        watch.end = total_seconds(&watch.pids);
        watch.written.1 = total_written(&watch.pids);
    }
}

/// Bytes the servers wrote between the two marks (`wchar` in /proc/PID/io: every write and
/// writev, so their sockets' bytes, headers and all), when both were read.
pub fn server_written_bytes() -> Option<u64> {
    let watch = lock();
    let (start, end) = watch.as_ref()?.written;
    Some(end?.saturating_sub(start?))
}

fn total_written(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .map(|&pid| {
            let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
            io.lines()
                .find_map(|line| line.strip_prefix("wchar:"))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The servers' CPU seconds between the two marks, when both were read.
pub fn server_seconds() -> Option<f64> {
    let watch = lock();
    let watch = watch.as_ref()?;
    Some((watch.end? - watch.start?).max(0.0))
}

/// Each server's resident bytes before the connections and with them open, when read.
pub fn server_memory() -> Option<(Vec<u64>, Vec<u64>)> {
    let watch = lock();
    let watch = watch.as_ref()?;
    Some((
        watch.resident_before.clone(),
        watch.resident_with_load.clone()?,
    ))
}

/// VmRSS of a process, in bytes.
pub fn resident_bytes(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Report(format!("no VmRSS for pid {pid}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_utime_and_stime_past_an_odd_command_name() {
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(super::parse_stat(stat), Some(300.0 / ticks));
        assert_eq!(super::parse_stat("42 (x) S 1"), None);
    }

    #[test]
    fn own_time_is_counted() {
        let before = super::own_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        assert!(super::own_seconds() > before, "{x}");
        let me = super::process_seconds(std::process::id()).unwrap();
        assert!(me >= 0.0);
    }
}
