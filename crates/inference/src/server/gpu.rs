//! GPU telemetry for `/v1/info` (and from there the GpuPool status), read from `nvidia-smi`,
//! which the NVIDIA container runtime mounts into GPU pods. Cached briefly so frequent health
//! probes do not spawn a process each. Unverified on real hardware here: the parser is tested
//! against nvidia-smi's documented CSV output.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::protocol::GpuInfo;

const TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct GpuProbe {
    cached: Mutex<Option<(Instant, Vec<GpuInfo>)>>,
}

impl GpuProbe {
    /// Every GPU `nvidia-smi` lists, in device order; empty without it.
    pub async fn read(&self) -> Vec<GpuInfo> {
        let mut cached = self.cached.lock().await;
        if let Some((at, info)) = cached.as_ref()
            && at.elapsed() < TTL
        {
            return info.clone();
        }
        let info = query().await;
        *cached = Some((Instant::now(), info.clone()));
        info
    }
}

async fn query() -> Vec<GpuInfo> {
    let out = tokio::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"])
        .output()
        .await;
    match out {
        Ok(out) if out.status.success() => parse_all(&String::from_utf8_lossy(&out.stdout)),
        _ => Vec::new(),
    }
}

/// Free memory of the first GPU, read once when models load (the default tile size follows
/// it). Blocking; `None` without `nvidia-smi` or a GPU.
pub fn free_memory_blocking() -> Option<u64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse(&String::from_utf8_lossy(&out.stdout)).map(|g| g.memory_total.saturating_sub(g.memory_used))
}

/// First GPU of `nvidia-smi --query-gpu=name,utilization.gpu,memory.used,memory.total
/// --format=csv,noheader,nounits` (memory in MiB), memory converted to bytes.
pub fn parse(csv: &str) -> Option<GpuInfo> {
    parse_line(csv.lines().find(|l| !l.trim().is_empty())?)
}

/// Every GPU of that output, in device order. A line that does not parse (a GPU reporting
/// `N/A`) ends the list there, so indices keep matching device numbers.
pub fn parse_all(csv: &str) -> Vec<GpuInfo> {
    csv.lines().filter(|l| !l.trim().is_empty()).map_while(parse_line).collect()
}

fn parse_line(line: &str) -> Option<GpuInfo> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [name, util, used, total] = fields.as_slice() else {
        return None;
    };
    const MIB: u64 = 1024 * 1024;
    Some(GpuInfo {
        name: (*name).to_string(),
        utilization: util.parse().ok()?,
        memory_used: used.parse::<u64>().ok()? * MIB,
        memory_total: total.parse::<u64>().ok()? * MIB,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        let g = parse("NVIDIA A10G, 37, 2048, 23028\nNVIDIA A10G, 0, 0, 23028\n").unwrap();
        assert_eq!(g.name, "NVIDIA A10G");
        assert_eq!(g.utilization, 37.0);
        assert_eq!(g.memory_used, 2048 * 1024 * 1024);
        assert_eq!(g.memory_total, 23028 * 1024 * 1024);
        let all = parse_all("NVIDIA A10G, 37, 2048, 23028\nNVIDIA A10G, 0, 0, 23028\n");
        assert_eq!(all.len(), 2);
        assert_eq!((all[1].utilization, all[1].memory_used), (0.0, 0));
        assert_eq!(parse_all("T4, 5, 1, 2\nT4, N/A, 1, 2\nT4, 7, 1, 2\n").len(), 1, "stops at the first unreadable GPU");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_none());
        assert!(parse("No devices were found").is_none());
        assert!(parse("A10G, N/A, 1, 2").is_none());
    }
}
