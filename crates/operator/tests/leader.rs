//! Leader election against the in-memory API server: one leader among candidates, takeover
//! after the leader dies, immediate takeover after a release, and a leader that notices it
//! lost the Lease. Short leases (2 s) keep it quick; time bounds are generous multiples.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, PostParams};
use purrify_operator::leader::{LeaderConfig, LeaderElector, Leadership};
use purrify_operator::metrics::Metrics;
use tokio::sync::mpsc;

const NS: &str = "default";
const LEASE: &str = "purrify-operator";
const DURATION: Duration = Duration::from_secs(2);

struct Sim {
    _handle: kubesim::ServerHandle,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Sim {
    let (addr, handle) = kubesim::Server::start("127.0.0.1:0".parse().unwrap()).await.expect("kubesim starts");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kubesim::write_kubeconfig(&path, addr).unwrap();
    Sim { _handle: handle, client: purrify_testkit::cluster::kube_client(&path).await, _dir: dir }
}

fn elector(sim: &Sim, id: &str, metrics: &Arc<Metrics>) -> LeaderElector {
    LeaderElector::new(sim.client.clone(), LeaderConfig::new(NS, LEASE, id, DURATION), metrics.clone())
}

async fn holder(sim: &Sim) -> Option<String> {
    let lease = Api::<Lease>::namespaced(sim.client.clone(), NS).get(LEASE).await.unwrap();
    lease.spec.and_then(|s| s.holder_identity)
}

/// Candidates that report on `tx` when they become leader.
fn campaign(sim: &Sim, ids: &[&str], tx: &mpsc::UnboundedSender<(String, Leadership)>) -> Vec<Arc<Metrics>> {
    ids.iter()
        .map(|id| {
            let metrics = Arc::new(Metrics::new());
            let e = elector(sim, id, &metrics);
            let tx = tx.clone();
            let id = (*id).to_owned();
            tokio::spawn(async move {
                let l = e.acquire().await;
                let _ = tx.send((id, l));
            });
            metrics
        })
        .collect()
}

fn gauge(m: &Metrics) -> i64 {
    m.is_leader.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_takeover_when_it_dies() {
    let sim = start().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let metrics = campaign(&sim, &["a", "b"], &tx);

    let (first, leadership) = tokio::time::timeout(3 * DURATION, rx.recv()).await.expect("someone leads").unwrap();
    assert_eq!(holder(&sim).await.as_deref(), Some(first.as_str()));
    // The leader keeps renewing: over several lease durations nobody else gets in.
    assert!(tokio::time::timeout(3 * DURATION, rx.recv()).await.is_err(), "a second leader appeared");
    assert!(leadership.is_leader());
    let (lead_m, standby_m) = if first == "a" { (&metrics[0], &metrics[1]) } else { (&metrics[1], &metrics[0]) };
    assert_eq!((gauge(lead_m), gauge(standby_m)), (1, 0));
    assert_eq!(lead_m.leader_transitions.get(), 1);

    // The leader "crashes": its renew loop stops without releasing. The standby may take over
    // once the record has stood still for a lease duration (the last renew was at most a third
    // of one before the crash), at its next poll: about 1.3x the lease after the crash.
    let crashed = std::time::Instant::now();
    drop(leadership);
    let (second, _l2) = tokio::time::timeout(2 * DURATION, rx.recv())
        .await
        .expect("the standby takes over within twice the lease duration (about 1.3x expected, slack for a loaded machine)")
        .unwrap();
    let took = crashed.elapsed();
    assert!(took >= DURATION / 2, "took over after {took:?}: the lease ({DURATION:?}) cannot have expired yet");
    assert_ne!(second, first);
    assert_eq!(holder(&sim).await.as_deref(), Some(second.as_str()));
    assert_eq!(gauge(standby_m), 1);
    let lease = Api::<Lease>::namespaced(sim.client.clone(), NS).get(LEASE).await.unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_for_an_expired_lease_only_one_wins() {
    let sim = start().await;
    let metrics = Arc::new(Metrics::new());
    let mut ghost = elector(&sim, "ghost", &metrics);
    assert!(ghost.try_acquire_or_renew().await.unwrap(), "creates the lease");

    let mut candidates: Vec<_> = (0..6).map(|i| elector(&sim, &format!("c{i}"), &metrics)).collect();
    for c in &mut candidates {
        assert!(!c.try_acquire_or_renew().await.unwrap(), "held by ghost, not expired");
    }
    // Ghost stops renewing; everyone sees the record unchanged for a lease duration.
    tokio::time::sleep(DURATION + Duration::from_millis(200)).await;
    let results = futures::future::join_all(candidates.iter_mut().map(|c| c.try_acquire_or_renew())).await;
    let winners = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(holder(&sim).await.unwrap().starts_with('c'));
    assert!(!ghost.try_acquire_or_renew().await.unwrap(), "the old holder cannot renew any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_without_waiting_for_expiry() {
    let sim = start().await;
    // A long lease: the standby could only get it this fast through the release.
    let long = Duration::from_secs(30);
    let m = Arc::new(Metrics::new());
    let leader = LeaderElector::new(sim.client.clone(), LeaderConfig::new(NS, LEASE, "a", long), m.clone());
    let leadership = leader.acquire().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let standby = LeaderElector::new(sim.client.clone(), LeaderConfig::new(NS, LEASE, "b", long), Arc::new(Metrics::new()));
    tokio::spawn(async move {
        let _ = tx.send(standby.acquire().await);
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    leadership.release().await;
    assert_eq!(m.is_leader.get(), 0);
    let l = tokio::time::timeout(long / 3, rx.recv()).await.expect("taken after the release").unwrap();
    assert_eq!(l.identity(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_knows_it_lost() {
    let sim = start().await;
    let m = Arc::new(Metrics::new());
    let leadership = elector(&sim, "a", &m).acquire().await;
    let lost = leadership.lost();

    // Someone else overwrites the Lease (as a standby would after a long partition).
    let api = Api::<Lease>::namespaced(sim.client.clone(), NS);
    let mut lease = api.get(LEASE).await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    api.replace(LEASE, &PostParams::default(), &lease).await.unwrap();

    tokio::time::timeout(2 * DURATION, lost).await.expect("loss noticed within the renew deadline");
    assert!(!leadership.is_leader());
    assert_eq!(m.is_leader.get(), 0);
    assert_eq!(holder(&sim).await.as_deref(), Some("intruder"), "a lost leader does not fight back");
}

#[test]
fn identities_are_unique_per_process_start() {
    let a = purrify_operator::leader::default_identity();
    let b = purrify_operator::leader::default_identity();
    assert_ne!(a, b);
    assert!(a.rsplit_once('-').is_some_and(|(host, suffix)| !host.is_empty() && suffix.len() == 8));
}
