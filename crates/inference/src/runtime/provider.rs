//! Execution-provider selection. CUDA and TensorRT are asked for by configuration and fall
//! back (with a warning) when the loaded ONNX Runtime cannot use them; the chain itself is
//! pure so it is tested without a GPU.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
        }
    }

    /// Providers to try, in order, when `self` is requested. TensorRT compiles only the
    /// subgraphs it supports and hands the rest to CUDA, so both are registered together;
    /// CPU is always last and always works.
    pub fn chain(self) -> &'static [Provider] {
        match self {
            Self::TensorRt => &[Self::TensorRt, Self::Cuda, Self::Cpu],
            Self::Cuda => &[Self::Cuda, Self::Cpu],
            Self::Cpu => &[Self::Cpu],
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" | "trt" => Ok(Self::TensorRt),
            other => Err(format!("unknown execution provider {other:?}: expected cpu, cuda or tensorrt")),
        }
    }
}

/// Outcome of trying a chain: which provider the session really runs on, and why the ones
/// before it were skipped (logged as warnings and shown in `/v1/info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub requested: Provider,
    pub active: Provider,
    pub skipped: Vec<(Provider, String)>,
}

/// Walks `requested.chain()`, calling `try_register` for each GPU provider until one
/// succeeds. CPU needs no registration. Pure apart from the callback.
pub fn select(requested: Provider, mut try_register: impl FnMut(Provider) -> Result<(), String>) -> Selection {
    let mut skipped = Vec::new();
    for &p in requested.chain() {
        if p == Provider::Cpu {
            return Selection { requested, active: p, skipped };
        }
        match try_register(p) {
            Ok(()) => return Selection { requested, active: p, skipped },
            Err(why) => skipped.push((p, why)),
        }
    }
    Selection { requested, active: Provider::Cpu, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_needs_no_registration() {
        let s = select(Provider::Cpu, |_| panic!("cpu must not register anything"));
        assert_eq!(s.active, Provider::Cpu);
        assert!(s.skipped.is_empty());
    }

    #[test]
    fn cuda_falls_back_to_cpu_with_the_reason() {
        let s = select(Provider::Cuda, |p| Err(format!("{p} not compiled in")));
        assert_eq!(s.active, Provider::Cpu);
        assert_eq!(s.skipped, vec![(Provider::Cuda, "cuda not compiled in".to_string())]);
    }

    #[test]
    fn tensorrt_falls_back_to_cuda_before_cpu() {
        let mut tried = Vec::new();
        let s = select(Provider::TensorRt, |p| {
            tried.push(p);
            if p == Provider::Cuda { Ok(()) } else { Err("no libnvinfer".into()) }
        });
        assert_eq!(tried, vec![Provider::TensorRt, Provider::Cuda]);
        assert_eq!(s.active, Provider::Cuda);
        assert_eq!(s.skipped.len(), 1);
    }

    #[test]
    fn tensorrt_success_stops_the_chain() {
        let s = select(Provider::TensorRt, |_| Ok(()));
        assert_eq!(s.active, Provider::TensorRt);
    }

    #[test]
    fn parses_names() {
        assert_eq!("CUDA".parse::<Provider>().unwrap(), Provider::Cuda);
        assert_eq!("trt".parse::<Provider>().unwrap(), Provider::TensorRt);
        assert!("rocm".parse::<Provider>().unwrap_err().contains("expected"));
    }
}
