//! The container images `make images` builds (tools/images/build.sh), run with podman:
//! - `containers`: the seed 000 topology on a podman network (gateway + two workers that
//!   register by webhook), a real photo through it while a worker is killed;
//! - `chart`: the chart's rendered Deployments (and the worker Deployment the operator makes
//!   of the chart's default GpuPool) started in the images with exactly their args and env.
//!
//! One test binary, so `make images` runs once per test run. Without podman the tests do
//! not skip: `make images` installs it.

mod chart;
mod containers;
// The chart tests' renderer (../shared/tools/helm-template) and values, shared as a file.
#[path = "../../../chart-tests/tests/support/mod.rs"]
mod render;
mod support;
