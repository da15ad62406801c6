//! Tests of the Helm chart `charts/purrify`; everything is in `tests/`.
//!
//! `tests/chart` renders the chart with the offline renderer built by
//! `../shared/tools/helm-template/build.sh` (the `shared` folder next to the workspace root,
//! found as `CARGO_MANIFEST_DIR/../../../shared`; the build installs Debian's Go packages when
//! they are missing and caches the binary outside the clone) across a matrix of values, and
//! checks every manifest: typed parsing, custom resources against the generated CRD schemas,
//! pod security, probes and resources, RBAC equal to `deploy/`, CRDs equal to `crds/`, and
//! the values schema's refusals.
//!
//! `tests/processes` starts `purrify-gateway` and `purrify-operator` with exactly the args
//! and environment the rendered Deployments give them (Secrets rendered as plain values,
//! KUBECONFIG pointing at a `purrify-kubesim` process, the test PostgreSQL) and waits for the
//! readiness probe's path to answer 200; it also runs the `helm test` pod's script, and
//! installs the rendered release into kubesim with the real `kubectl apply` (default
//! validation, and `--server-side`) and lets the operator reconcile the default GpuPool.
