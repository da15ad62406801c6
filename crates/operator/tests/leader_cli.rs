//! Two whole operators (`purrify-operator run`, in-process) against the in-memory API server:
//! only the leader is ready and manages pools; a SIGTERM'd leader hands over through a
//! released Lease and exits cleanly; a leader whose Lease is taken exits with an error.

use purrify_testkit::eventually;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use purrify_api::GpuPool;
use purrify_operator::cli::{Cli, Command, run_with_client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LEASE_NS: &str = "default";

async fn client() -> (kubesim::ServerHandle, Client, tempfile::TempDir) {
    let (addr, handle) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kubesim::write_kubeconfig(&path, addr).unwrap();
    let client = purrify_testkit::cluster::kube_client(&path).await;
    purrify_testkit::cluster::install_crds(&client).await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "purrify"}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await;
    (handle, client, dir)
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Operator {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn spawn_operator(client: &Client, name: &str) -> Operator {
    let addr = free_addr();
    let cli = Cli::try_parse_from([
        "purrify-operator",
        "run",
        "--namespace",
        "purrify",
        "--lease-namespace",
        LEASE_NS,
        "--lease-duration-seconds",
        "2",
        "--identity",
        name,
        "--metrics-addr",
        &addr.to_string(),
        "--probe-interval-seconds",
        "1",
    ])
    .expect("the command line parses");
    let Command::Run(args) = cli.command;
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with_client(args, client.clone(), async move {
        let _ = rx.await;
    }));
    Operator { addr, stop: Some(stop), task }
}

/// Status code and body of `GET path`, or None while the server is not up.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: op\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

async fn ready(op: &Operator) -> Option<bool> {
    get(op.addr, "/readyz").await.map(|(code, _)| code == 200)
}

async fn holder(client: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), LEASE_NS).get_opt("purrify-operator").await.ok()??;
    lease.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operator_leads_hands_over_on_sigterm_and_exits_on_a_lost_lease() {
    let (_sim, client, _dir) = client().await;
    let a = spawn_operator(&client, "op-a");
    let b = spawn_operator(&client, "op-b");

    // Exactly one becomes ready; both serve liveness and metrics.
    let a_leads = eventually(15, "a leader", || async {
        match (ready(&a).await?, ready(&b).await?) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await;
    let (mut leader, standby) = if a_leads { (a, b) } else { (b, a) };
    for op in [&leader, &standby] {
        assert_eq!(get(op.addr, "/healthz").await.unwrap().0, 200);
    }
    let (_, metrics) = get(leader.addr, "/metrics").await.unwrap();
    assert!(metrics.contains("purrify_operator_is_leader 1"), "{metrics}");
    let (_, metrics) = get(standby.addr, "/metrics").await.unwrap();
    assert!(metrics.contains("purrify_operator_is_leader 0"), "{metrics}");
    let (code, _) = get(leader.addr, "/v1/tasks/purrify/none/progress").await.unwrap();
    assert_eq!(code, 404, "the task progress routes are mounted");
    assert!(holder(&client).await.unwrap().starts_with(if a_leads { "op-a-" } else { "op-b-" }));

    // Only the leader manages pools.
    let pool: GpuPool = serde_json::from_value(json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
        "metadata": {"name": "p", "namespace": "purrify"},
        "spec": {"image": "img", "replicas": {"min": 1, "max": 1}}
    }))
    .unwrap();
    Api::<GpuPool>::namespaced(client.clone(), "purrify").create(&PostParams::default(), &pool).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "purrify");
    eventually(15, "Deployment applied by the leader", || async { deployments.get_opt("p-inference").await.ok()? }).await;

    // SIGTERM to the leader: it stops, releases the Lease, exits 0; the standby takes over
    // well before the Lease would have expired on its own.
    let first = holder(&client).await.unwrap();
    leader.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), leader.task).await.expect("the leader stops").unwrap();
    assert!(result.is_ok(), "{result:?}");
    eventually(10, "standby leads", || async { ready(&standby).await?.then_some(()) }).await;
    let second = holder(&client).await.unwrap();
    assert_ne!(first, second);

    // The Lease is taken from the new leader (as after a partition): it exits with an error.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let mut lease = leases.get("purrify-operator").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    leases.replace("purrify-operator", &PostParams::default(), &lease).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(15), standby.task).await.expect("a deposed leader stops").unwrap();
    let err = result.expect_err("losing the lease is an error exit");
    assert!(format!("{err:#}").contains("lost leadership"), "{err:#}");
}
