//! The GpuPool controller against the in-memory API server with the project's CRDs: children
//! applied, owned and collected; queue-driven scaling; pods and external endpoints probed
//! over real HTTP (a fake worker answering `/readyz` and `/v1/info`); status conditions and
//! Events; and no API writes in the steady state.

use purrify_testkit::eventually;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use purrify_api::{EnhanceTask, EnhanceTaskSpec, GpuPool, GpuPoolStatus, TaskInput, TaskOutput, TaskParams};
use purrify_operator::context::{Context, FIELD_MANAGER};
use purrify_operator::metrics::Metrics;
use purrify_operator::pool::{self, PoolConfig};
use purrify_operator::registry::{PoolKey, Registry};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NS: &str = "purrify";
const PROBE: Duration = Duration::from_millis(300);

struct Env {
    sim: kubesim::ServerHandle,
    client: Client,
    ctx: Arc<Context>,
    stop: watch::Sender<bool>,
    controller: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Self {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let (addr, sim) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.expect("kubesim starts");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        kubesim::write_kubeconfig(&path, addr).unwrap();
        let client = purrify_testkit::cluster::kube_client(&path).await;
        purrify_testkit::cluster::install_crds(&client).await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;

        let ctx = Arc::new(Context {
            client: client.clone(),
            registry: Arc::new(Registry::default()),
            metrics: Arc::new(Metrics::new()),
            namespace: Some(NS.into()),
        });
        let (stop, rx) = watch::channel(false);
        let config = PoolConfig {
            probe_interval: PROBE,
            error_requeue: Duration::from_millis(200),
            instance: Some("test".into()),
            ..PoolConfig::default()
        };
        let shutdown = async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        };
        let controller = tokio::spawn(pool::run(ctx.clone(), config, shutdown));
        Self { sim, client, ctx, stop, controller: Some(controller), _dir: dir }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    /// API writes the server saw, of every kind the pool controller may write.
    fn writes(&self) -> u64 {
        let mut n = 0;
        for verb in ["create", "update", "patch", "apply", "delete"] {
            for res in ["gpupools", "gpupools/status", "deployments", "services", "poddisruptionbudgets", "pods", "events"] {
                n += self.sim.request_count(verb, res);
            }
        }
        n
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controller.take() {
            tokio::time::timeout(Duration::from_secs(10), c).await.expect("controller stops").unwrap().unwrap();
        }
    }
}

fn fixture(name: &str) -> GpuPool {
    let path = format!("{}/tests/fixtures/pool/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut pool: GpuPool = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The server assigns these.
    pool.metadata.uid = None;
    pool.metadata.generation = None;
    pool
}

async fn status_where(env: &Env, name: &str, what: &str, pred: impl Fn(&GpuPoolStatus) -> bool) -> GpuPoolStatus {
    let api = env.api::<GpuPool>();
    eventually(15, what, || async { api.get(name).await.ok()?.status.filter(|s| pred(s)) }).await
}

fn condition<'a>(s: &'a GpuPoolStatus, t: &str) -> (&'a str, &'a str) {
    let c = s.conditions.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("condition {t}"));
    (c.status.as_str(), c.reason.as_str())
}

async fn event_reasons(env: &Env, pool: &str) -> Vec<String> {
    let events: Api<Event> = env.api();
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items.into_iter().filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pool)).filter_map(|e| e.reason).collect()
}

fn task(name: &str, pool: &str) -> EnhanceTask {
    let mut t = EnhanceTask::new(
        name,
        EnhanceTaskSpec {
            pool: pool.into(),
            input: TaskInput { uri: format!("file:///in/{name}.jpg"), content_type: None, bytes: None },
            output: TaskOutput { uri: format!("file:///out/{name}.jpg") },
            params: TaskParams::default(),
            priority: 0,
            deadline_seconds: 300,
            ttl_seconds_after_finished: None,
            owner: None,
        },
    );
    t.metadata.namespace = Some(NS.into());
    t
}

/// A stand-in inference worker: ready, with one GPU.
struct FakeWorker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeWorker {
    async fn start() -> Self {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let info = json!({
            "version": "test",
            "models": [],
            "execution_provider": "cuda",
            "requested_execution_provider": "cuda",
            "gpu": {"name": "Fake RTX", "utilization": 37.4, "memory_used": 3_221_225_472u64, "memory_total": 25_769_803_776u64},
            "capacity": 2,
            "in_flight": 1,
            "ready": true
        });
        let app = axum::Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(|| async { "ready" })).route(
            "/v1/info",
            get(move || {
                let info = info.clone();
                async move { Json(info) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes idle connections, as a dead worker would.
    async fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_pool_children_are_applied_owned_scaled_and_collected() {
    let env = Env::start().await;
    let pools = env.api::<GpuPool>();
    let pool = pools.create(&PostParams::default(), &fixture("gpu")).await.unwrap();
    let uid = pool.uid().unwrap();

    let deployments = env.api::<Deployment>();
    let dep = eventually(15, "Deployment applied", || async { deployments.get_opt("photos-inference").await.unwrap() }).await;
    let services = env.api::<Service>();
    let pdbs = env.api::<PodDisruptionBudget>();
    let svc = eventually(15, "Service applied", || async { services.get_opt("photos-inference").await.unwrap() }).await;
    let pdb = eventually(15, "PDB applied", || async { pdbs.get_opt("photos-inference").await.unwrap() }).await;
    for (kind, meta) in [("Deployment", &dep.metadata), ("Service", &svc.metadata), ("PDB", &pdb.metadata)] {
        let owner = &meta.owner_references.as_ref().unwrap_or_else(|| panic!("{kind} owned"))[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("GpuPool", uid.as_str(), Some(true)), "{kind}");
        let managers = meta.managed_fields.as_ref().unwrap();
        assert!(
            managers.iter().any(|m| m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")),
            "{kind} applied by {FIELD_MANAGER}: {managers:?}"
        );
    }
    assert_eq!(dep.spec.replicas, Some(1), "min with an empty queue");

    let s = status_where(&env, "photos", "first status", |s| s.observed_generation.is_some()).await;
    assert_eq!(s.observed_generation, pool.metadata.generation);
    assert_eq!(condition(&s, "Ready"), ("False", "NoWorkers"));
    assert_eq!(condition(&s, "ScalingLimited"), ("False", "WithinBounds"));

    // Nine queued tasks at four per replica: three replicas.
    let tasks = env.api::<EnhanceTask>();
    for i in 0..9 {
        tasks.create(&PostParams::default(), &task(&format!("t{i}"), "photos")).await.unwrap();
    }
    tasks.create(&PostParams::default(), &task("elsewhere", "other-pool")).await.unwrap();
    eventually(15, "scaled to 3", || async { (deployments.get("photos-inference").await.unwrap().spec.replicas == Some(3)).then_some(()) })
        .await;
    let s = status_where(&env, "photos", "queue counted", |s| s.queue_depth == 9).await;
    assert_eq!(condition(&s, "ScalingLimited").0, "False");
    // Twenty-one: six wanted, four allowed.
    for i in 9..21 {
        tasks.create(&PostParams::default(), &task(&format!("t{i}"), "photos")).await.unwrap();
    }
    eventually(15, "scaled to max", || async {
        (deployments.get("photos-inference").await.unwrap().spec.replicas == Some(4)).then_some(())
    })
    .await;
    let s = status_where(&env, "photos", "limited", |s| condition(s, "ScalingLimited").0 == "True").await;
    assert_eq!(s.queue_depth, 21);
    let reasons = eventually(10, "events", || async {
        let r = event_reasons(&env, "photos").await;
        r.iter().any(|r| r == "ScalingLimited").then_some(r)
    })
    .await;
    // Repeats of one reason become one Event with a count (kube's recorder folds them).
    assert!(reasons.iter().any(|r| r == "Scaled"), "{reasons:?}");

    // Deleting the pool takes its children with it.
    pools.delete("photos", &DeleteParams::default()).await.unwrap();
    eventually(15, "children collected", || async {
        let gone = deployments.get_opt("photos-inference").await.unwrap().is_none()
            && services.get_opt("photos-inference").await.unwrap().is_none()
            && pdbs.get_opt("photos-inference").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    let key = PoolKey::new(NS, "photos");
    eventually(15, "fleet forgotten", || async { env.ctx.registry.fleet(&key).is_none().then_some(()) }).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_worker_health_reaches_status_and_steady_state_writes_nothing() {
    let env = Env::start().await;
    let mut worker = FakeWorker::start().await;
    let mut pool = fixture("external");
    pool.spec.external = vec![purrify_api::ExternalEndpoint { url: worker.url(), name: Some("gpu-1".into()) }];
    env.api::<GpuPool>().create(&PostParams::default(), &pool).await.unwrap();

    let s = status_where(&env, "default", "worker healthy", |s| s.healthy_workers == 1).await;
    assert_eq!(condition(&s, "Ready"), ("True", "WorkersAvailable"));
    assert_eq!(condition(&s, "Degraded").0, "False");
    assert_eq!(condition(&s, "ScalingLimited"), ("False", "NoInClusterReplicas"));
    assert_eq!((s.replicas, s.ready_replicas), (0, 0));
    let w = &s.workers[0];
    assert_eq!((w.name.as_str(), w.endpoint.as_str(), w.healthy, w.in_flight), ("gpu-1", worker.url().as_str(), true, 1));
    let gpu = w.gpu.as_ref().expect("GPU telemetry");
    assert_eq!((gpu.utilization, gpu.memory_used, gpu.memory_total), (37.0, 3_221_225_472, 25_769_803_776));
    assert!(w.last_heartbeat.is_some());
    assert!(env.api::<Deployment>().get_opt("default-inference").await.unwrap().is_none(), "external-only: no Deployment");
    // The task controller picks from the same fleet.
    let fleet = env.ctx.registry.fleet(&PoolKey::new(NS, "default")).expect("fleet registered");
    assert_eq!(fleet.snapshot().healthy_workers, 1);

    // Steady state: many probe rounds, not one write.
    let reasons = eventually(10, "Ready event", || async {
        let r = event_reasons(&env, "default").await;
        r.iter().any(|r| r == "Ready").then_some(r)
    })
    .await;
    assert!(!reasons.iter().any(|r| r == "Degraded"), "{reasons:?}");
    tokio::time::sleep(2 * PROBE).await;
    let before = env.writes();
    let reconciles_before = reconciles(&env.ctx.metrics);
    tokio::time::sleep(8 * PROBE).await;
    assert!(reconciles(&env.ctx.metrics) >= reconciles_before + 4, "the pool kept being reconciled and probed");
    assert_eq!(env.writes(), before, "an unchanged pool costs no API writes");

    // The worker dies: unhealthy, Degraded, not Ready, and an Event says so.
    worker.kill().await;
    let s = status_where(&env, "default", "worker unhealthy", |s| s.healthy_workers == 0).await;
    assert!(!s.workers[0].healthy);
    assert_eq!(condition(&s, "Degraded"), ("True", "WorkersUnhealthy"));
    assert_eq!(condition(&s, "Ready"), ("False", "NoHealthyWorkers"));
    let reasons = eventually(10, "loss events", || async {
        let r = event_reasons(&env, "default").await;
        (r.iter().any(|r| r == "WorkerLost") && r.iter().any(|r| r == "Degraded")).then_some(r)
    })
    .await;
    assert!(reasons.iter().any(|r| r == "NotReady"), "{reasons:?}");
    let text = env.ctx.metrics.encode();
    assert!(text.contains("purrify_operator_healthy_workers{pool=\"purrify/default\"} 0"), "{text}");
    assert!(text.contains("purrify_operator_api_writes_total{verb=\"patch_status\",resource=\"gpupools\"}"), "{text}");
    env.stop().await;
}

/// What the gateway's unregister webhook does to the default pool: the last external server
/// goes, the pool stays (the CRD admits `external: []`) and reports that it has no workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_pool_whose_last_server_is_unregistered_stays_valid_without_workers() {
    let env = Env::start().await;
    let worker = FakeWorker::start().await;
    let pools = env.api::<GpuPool>();
    let spec =
        purrify_api::GpuPoolSpec::external_only(vec![purrify_api::ExternalEndpoint { url: worker.url(), name: Some("gpu-1".into()) }]);
    let mut pool = GpuPool::new("default", spec);
    pool.metadata.namespace = Some(NS.into());
    pools.create(&PostParams::default(), &pool).await.unwrap();
    status_where(&env, "default", "worker healthy", |s| s.healthy_workers == 1).await;

    // Read, drop the endpoint, replace: as the gateway does.
    let mut current = pools.get("default").await.unwrap();
    current.spec.external.clear();
    let replaced = pools.replace("default", &PostParams::default(), &current).await.expect("a pool without endpoints is admitted");
    assert!(replaced.spec.external.is_empty() && replaced.spec.image.is_none());

    let s = status_where(&env, "default", "no workers", |s| s.workers.is_empty() && s.observed_generation == replaced.metadata.generation)
        .await;
    assert_eq!(condition(&s, "Ready"), ("False", "NoWorkers"));
    assert_eq!(condition(&s, "Degraded"), ("False", "AllWorkersHealthy"), "valid, not an invalid spec");
    assert_eq!(s.healthy_workers, 0);
    let fleet = env.ctx.registry.fleet(&PoolKey::new(NS, "default")).expect("the pool keeps its (empty) fleet");
    assert_eq!(fleet.snapshot().workers.len(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_pods_join_the_fleet_and_a_changed_spec_is_reapplied() {
    let env = Env::start().await;
    let worker = FakeWorker::start().await;
    let pools = env.api::<GpuPool>();
    pools.create(&PostParams::default(), &fixture("cpu")).await.unwrap();
    let deployments = env.api::<Deployment>();
    eventually(15, "Deployment applied", || async { deployments.get_opt("cpu-inference").await.unwrap() }).await;

    // kubesim runs no ReplicaSets: stand in for one with a ready pod on the fake worker's port.
    let pods = env.api::<Pod>();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "cpu-inference-abc12", "labels": {"app.kubernetes.io/name": "purrify-inference", "purrify.io/pool": "cpu"}},
        "spec": {"containers": [{"name": "inference", "image": "x", "ports": [{"name": "http", "containerPort": worker.addr.port()}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("cpu-inference-abc12", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let s = status_where(&env, "cpu", "pod worker healthy", |s| s.healthy_workers == 1).await;
    assert_eq!(s.workers[0].name, "cpu-inference-abc12");
    assert_eq!(s.workers[0].endpoint, worker.url());
    assert_eq!(condition(&s, "Ready").0, "True");

    // Someone scales the Deployment by hand: the operator owns replicas and puts them back.
    let manual = json!({"spec": {"replicas": 7}});
    deployments.patch("cpu-inference", &PatchParams::default(), &Patch::Merge(&manual)).await.unwrap();
    eventually(15, "replicas restored", || async {
        (deployments.get("cpu-inference").await.unwrap().spec.replicas == Some(0)).then_some(())
    })
    .await;

    // A spec change reaches the Deployment.
    let patch = json!({"spec": {"image": "registry.example.com/purrify/inference-cpu:0.2.0"}});
    pools.patch("cpu", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually(15, "new image applied", || async {
        let d = deployments.get("cpu-inference").await.unwrap();
        let image = d.spec.template.spec?.containers.first()?.image.clone()?;
        image.ends_with(":0.2.0").then_some(())
    })
    .await;

    // The pod turns unready: it leaves the fleet and counts as a lost worker.
    let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods.patch_status("cpu-inference-abc12", &PatchParams::default(), &Patch::Merge(&unready)).await.unwrap();
    let s = status_where(&env, "cpu", "pod left the fleet", |s| s.workers.is_empty()).await;
    assert_eq!(condition(&s, "Ready"), ("False", "NoWorkers"));
    eventually(10, "WorkerLost event", || async { event_reasons(&env, "cpu").await.iter().any(|r| r == "WorkerLost").then_some(()) }).await;

    // Dropping the in-cluster replicas removes the children.
    let patch = json!({"spec": {"replicas": null, "image": null, "external": [{"url": worker.url()}]}});
    pools.patch("cpu", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually(15, "children removed", || async { deployments.get_opt("cpu-inference").await.unwrap().is_none().then_some(()) }).await;
    status_where(&env, "cpu", "external worker healthy", |s| s.healthy_workers == 1 && s.workers[0].endpoint == worker.url()).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_pool_is_reported_not_applied() {
    let env = Env::start().await;
    let mut pool = fixture("gpu");
    pool.metadata.name = Some(format!("p{}", "x".repeat(60)));
    env.api::<GpuPool>().create(&PostParams::default(), &pool).await.unwrap();
    let name = pool.metadata.name.clone().unwrap();
    let s = status_where(&env, &name, "invalid reported", |s| !s.conditions.is_empty()).await;
    assert_eq!(condition(&s, "Ready"), ("False", "InvalidSpec"));
    assert_eq!(condition(&s, "Degraded"), ("True", "InvalidSpec"));
    let deployments = env.api::<Deployment>();
    assert!(deployments.list(&ListParams::default()).await.unwrap().items.is_empty());
    eventually(10, "InvalidSpec event", || async { event_reasons(&env, &name).await.iter().any(|r| r == "InvalidSpec").then_some(()) })
        .await;
    env.stop().await;
}

fn reconciles(m: &Metrics) -> u64 {
    let labels = purrify_operator::metrics::ReconcileLabels { controller: "gpupool", outcome: "ok" };
    m.reconciles.get_or_create(&labels).get()
}
