//! Execution-provider selection. OpenVINO, CUDA and TensorRT are asked for by configuration
//! and fall back (with a warning) when the loaded ONNX Runtime cannot use them; the chain
//! itself is pure so it is tested without a GPU or the OpenVINO build.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
    /// Intel's OpenVINO runtime on the CPU, inside the ONNX Runtime build of the PyPI
    /// `onnxruntime-openvino` wheel: its convolution kernels are faster than the CPU
    /// provider's on the Real-ESRGAN models (README, Benchmarks), so it is the default of
    /// CPU workers; without that build it falls back to `Cpu` with a warning.
    #[default]
    OpenVino,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::OpenVino => "openvino",
        }
    }

    /// Providers to register, in priority order, when `self` is requested. TensorRT
    /// compiles only the subgraphs it supports and leaves the rest to the next provider, so
    /// CUDA is registered after it (otherwise those nodes would run on the CPU). CPU needs
    /// no registration: ONNX Runtime always appends it last.
    pub fn registrations(self) -> &'static [Provider] {
        match self {
            Self::TensorRt => &[Self::TensorRt, Self::Cuda],
            Self::Cuda => &[Self::Cuda],
            Self::OpenVino => &[Self::OpenVino],
            Self::Cpu => &[],
        }
    }

    /// Whether this provider runs on a GPU (GPU telemetry, device memory for tile sizes).
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::TensorRt)
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
            "openvino" | "ov" => Ok(Self::OpenVino),
            other => Err(format!("unknown execution provider {other:?}: expected cpu, openvino, cuda or tensorrt")),
        }
    }
}

/// Outcome of registering providers for one session: every provider the session may run
/// nodes on (in priority order, CPU last), which one is primary, and why the ones that could
/// not be registered were skipped (logged as warnings and shown in `/v1/info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub requested: Provider,
    /// The first registered provider: where the session's nodes go first.
    pub active: Provider,
    /// Registered providers in priority order, always ending with CPU.
    pub registered: Vec<Provider>,
    pub skipped: Vec<(Provider, String)>,
}

/// Calls `try_register` for each of `requested.registrations()`, in order, keeping the
/// ones that succeed: with TensorRT that is TensorRT then CUDA, so a missing TensorRT still
/// leaves CUDA, and a working one still has CUDA behind it. Pure apart from the callback.
pub fn select(requested: Provider, mut try_register: impl FnMut(Provider) -> Result<(), String>) -> Selection {
    let mut registered = Vec::new();
    let mut skipped = Vec::new();
    for &p in requested.registrations() {
        match try_register(p) {
            Ok(()) => registered.push(p),
            Err(why) => skipped.push((p, why)),
        }
    }
    registered.push(Provider::Cpu);
    Selection { requested, active: registered[0], registered, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Provider::{Cpu, Cuda, OpenVino, TensorRt};

    /// (requested, which GPU registrations succeed) -> (tried, registered, active).
    #[test]
    fn registered_providers_for_every_configuration() {
        type Case = (Provider, &'static [Provider], &'static [Provider], &'static [Provider], Provider);
        let cases: &[Case] = &[
            (Cpu, &[], &[], &[Cpu], Cpu),
            (Cuda, &[Cuda], &[Cuda], &[Cuda, Cpu], Cuda),
            (Cuda, &[], &[Cuda], &[Cpu], Cpu),
            // TensorRT hands unsupported subgraphs to CUDA, not to the CPU.
            (TensorRt, &[TensorRt, Cuda], &[TensorRt, Cuda], &[TensorRt, Cuda, Cpu], TensorRt),
            (TensorRt, &[Cuda], &[TensorRt, Cuda], &[Cuda, Cpu], Cuda),
            (TensorRt, &[TensorRt], &[TensorRt, Cuda], &[TensorRt, Cpu], TensorRt),
            (TensorRt, &[], &[TensorRt, Cuda], &[Cpu], Cpu),
            (OpenVino, &[OpenVino], &[OpenVino], &[OpenVino, Cpu], OpenVino),
            // The standard ONNX Runtime build has no OpenVINO provider: CPU, with a warning.
            (OpenVino, &[], &[OpenVino], &[Cpu], Cpu),
        ];
        for &(requested, works, tried_expected, registered, active) in cases {
            let mut tried = Vec::new();
            let s = select(requested, |p| {
                tried.push(p);
                if works.contains(&p) { Ok(()) } else { Err(format!("{p} unavailable")) }
            });
            let case = format!("{requested} with {works:?} working");
            assert_eq!(tried, tried_expected, "{case}: tried");
            assert_eq!(s.registered, registered, "{case}: registered");
            assert_eq!(s.active, active, "{case}: active");
            assert_eq!(s.requested, requested);
            let failed: Vec<Provider> = tried_expected.iter().copied().filter(|p| !works.contains(p)).collect();
            assert_eq!(s.skipped.iter().map(|(p, _)| *p).collect::<Vec<_>>(), failed, "{case}: skipped");
            assert!(s.skipped.iter().all(|(p, why)| why == &format!("{p} unavailable")), "{case}: reasons kept");
        }
    }

    #[test]
    fn parses_names() {
        assert_eq!("CUDA".parse::<Provider>().unwrap(), Provider::Cuda);
        assert_eq!("trt".parse::<Provider>().unwrap(), Provider::TensorRt);
        assert_eq!("OpenVINO".parse::<Provider>().unwrap(), Provider::OpenVino);
        for p in [Cpu, Cuda, TensorRt, OpenVino] {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        assert!("rocm".parse::<Provider>().unwrap_err().contains("expected"));
    }
}
