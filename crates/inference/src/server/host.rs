//! Host load for `/v1/info` (and from there the gateway's GPU monitoring): CPU from
//! `/proc/stat` as busy time over the interval since the previous reading, memory from
//! `/proc/meminfo` (`MemTotal - MemAvailable`). Linux only; elsewhere nothing is reported.
//! Readings are cached briefly so frequent probes read the files at most once per [`TTL`].

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::protocol::HostInfo;

const TTL: Duration = Duration::from_secs(2);

/// Without an earlier reading, the CPU is sampled over this long.
const FIRST_WINDOW: Duration = Duration::from_millis(100);

/// Aggregate CPU times from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

#[derive(Default)]
struct State {
    last_cpu: Option<CpuTimes>,
    cached: Option<(Instant, Option<HostInfo>)>,
}

#[derive(Default)]
pub struct HostProbe {
    state: Mutex<State>,
}

impl HostProbe {
    pub async fn read(&self) -> Option<HostInfo> {
        let mut st = self.state.lock().await;
        if let Some((at, info)) = &st.cached
            && at.elapsed() < TTL
        {
            return info.clone();
        }
        let before = match st.last_cpu {
            Some(t) => Some(t),
            None => {
                let first = read_cpu().await;
                tokio::time::sleep(FIRST_WINDOW).await;
                first
            }
        };
        let now = read_cpu().await;
        st.last_cpu = now;
        let cpu_usage = before.zip(now).and_then(|(a, b)| cpu_usage(a, b));
        let memory = tokio::fs::read_to_string("/proc/meminfo").await.ok().and_then(|m| parse_meminfo(&m));
        let info = cpu_usage.zip(memory).map(|(cpu_usage, (memory_used, memory_total))| HostInfo { cpu_usage, memory_used, memory_total });
        st.cached = Some((Instant::now(), info.clone()));
        info
    }
}

async fn read_cpu() -> Option<CpuTimes> {
    parse_stat(&tokio::fs::read_to_string("/proc/stat").await.ok()?)
}

/// The `cpu` line: user nice system idle iowait irq softirq steal (guest time is already in
/// user and nice). Idle and iowait are not busy.
pub fn parse_stat(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes { busy: total - idle, total })
}

/// Percent busy between two readings; `None` when no time passed between them.
pub fn cpu_usage(before: CpuTimes, after: CpuTimes) -> Option<f32> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)?;
    let busy = after.busy.saturating_sub(before.busy).min(total);
    Some((busy as f64 * 100.0 / total as f64) as f32)
}

/// `(used, total)` in bytes from `/proc/meminfo` (kB values).
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some((total.saturating_sub(available), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_is_busy_share_of_the_interval() {
        let a = parse_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, CpuTimes { busy: 150, total: 1000 });
        let b = parse_stat("cpu  160 0 90 880 70 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_usage(a, b), Some(50.0));
        assert_eq!(cpu_usage(a, a), None, "no time passed");
        assert!(parse_stat("intr 1 2 3").is_none());
    }

    #[test]
    fn memory_in_use_is_total_minus_available() {
        let m = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(parse_meminfo(m), Some((12_000_000 * 1024, 16_000_000 * 1024)));
        let info = HostInfo { cpu_usage: 1.0, memory_used: 3, memory_total: 4 };
        assert_eq!(info.memory_usage(), 75.0);
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_none());
    }

    #[tokio::test]
    async fn this_host_reports_its_load() {
        if !std::path::Path::new("/proc/stat").exists() {
            return;
        }
        let info = HostProbe::default().read().await.expect("a Linux host reports its load");
        assert!((0.0..=100.0).contains(&info.cpu_usage), "{info:?}");
        assert!(info.memory_total > 0 && info.memory_used <= info.memory_total, "{info:?}");
    }
}
