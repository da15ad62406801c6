//! Request counters, so tests can count API writes per task.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    pub fn record(&self, verb: &str, resource: &str, code: u16) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((verb.to_string(), resource.to_string(), code)).or_default() += 1;
    }

    /// Requests of `verb` on `resource` (`"pods"`, `"enhancetasks/status"`), any code.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().filter(|((v, r, _), _)| v == verb && r == resource).map(|(_, n)| n).sum()
    }

    pub fn render(&self, resource_version: u64) -> String {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP kubesim_requests_total API requests served, by verb, resource and HTTP status code.\n");
        out.push_str("# TYPE kubesim_requests_total counter\n");
        for ((verb, resource, code), n) in c.iter() {
            let _ = writeln!(out, "kubesim_requests_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}");
        }
        out.push_str("# HELP kubesim_resource_version The latest resource version handed out.\n");
        out.push_str("# TYPE kubesim_resource_version gauge\n");
        let _ = writeln!(out, "kubesim_resource_version {resource_version}");
        out
    }
}
