//! Watch semantics through kube-rs: raw watches, the runtime watcher and reflector.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "1"}})).unwrap()
}

async fn next<S, T>(s: &mut S) -> T
where
    S: futures::Stream<Item = T> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("an event within 5s").expect("stream still open")
}

fn describe(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test]
async fn watch_resumes_after_a_resource_version() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let a = cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let wp = WatchParams::default().disable_bookmarks();
    let mut w = cms.watch(&wp, &a.resource_version().unwrap()).await.unwrap().boxed();

    cms.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await.unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut last_rv = 0u64;
    for _ in 0..3 {
        let e = next(&mut w).await.unwrap();
        if let WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) = &e {
            let rv: u64 = o.resource_version().unwrap().parse().unwrap();
            assert!(rv > last_rv, "resource versions increase");
            last_rv = rv;
        }
        seen.push(describe(&e));
    }
    assert_eq!(seen, vec!["ADDED b", "MODIFIED a", "DELETED b"]);

    // A watch from "0" starts with the current state as ADDED events.
    let mut w0 = cms.watch(&wp, "0").await.unwrap().boxed();
    assert_eq!(describe(&next(&mut w0).await.unwrap()), "ADDED a");
}

#[tokio::test]
async fn too_old_resource_version_gets_410_gone() {
    let sim = start_with(kubesim::ServerConfig { watch_history: 3, ..Default::default() }).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let first = cms.create(&PostParams::default(), &cm("c0", json!({}))).await.unwrap();
    for i in 1..6 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), json!({}))).await.unwrap();
    }
    let mut w = cms.watch(&WatchParams::default(), &first.resource_version().unwrap()).await.unwrap().boxed();
    match next(&mut w).await.unwrap() {
        WatchEvent::Error(s) => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
            assert!(s.message.contains("too old resource version"), "{}", s.message);
        }
        other => panic!("expected a 410 ERROR event, got {}", describe(&other)),
    }
    // The list at that version is gone too.
    let (code, _) = raw(
        "GET",
        &format!(
            "{}/api/v1/namespaces/default/configmaps?resourceVersion={}&resourceVersionMatch=Exact",
            sim.handle.url(),
            first.resource_version().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(code, 410);
}

#[tokio::test]
async fn bookmarks_and_timeouts() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let a = cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let mut w = cms.watch(&WatchParams::default(), &a.resource_version().unwrap()).await.unwrap().boxed();
    match next(&mut w).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, a.resource_version().unwrap())
        }
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }

    // timeoutSeconds ends the stream cleanly.
    let started = std::time::Instant::now();
    let mut short =
        cms.watch(&WatchParams::default().disable_bookmarks().timeout(1), &a.resource_version().unwrap()).await.unwrap().boxed();
    let end = tokio::time::timeout(Duration::from_secs(5), short.next()).await.unwrap();
    assert!(end.is_none(), "stream ended");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn watch_list_sends_initial_events_then_a_marked_bookmark() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    let mut w = cms.watch(&WatchParams::default().initial_events(), "0").await.unwrap().boxed();
    assert_eq!(describe(&next(&mut w).await.unwrap()), "ADDED a");
    assert_eq!(describe(&next(&mut w).await.unwrap()), "ADDED b");
    match next(&mut w).await.unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
            assert_eq!(b.metadata.resource_version, sim.handle.resource_version().to_string());
        }
        other => panic!("expected the initial-events-end bookmark, got {}", describe(&other)),
    }
    cms.create(&PostParams::default(), &cm("c", json!({}))).await.unwrap();
    loop {
        match next(&mut w).await.unwrap() {
            WatchEvent::Bookmark(_) => continue,
            e => {
                assert_eq!(describe(&e), "ADDED c");
                break;
            }
        }
    }

    // sendInitialEvents without NotOlderThan is rejected as on a real server.
    let (code, body) = raw(
        "GET",
        &format!("{}/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true", sim.handle.url()),
        None,
    )
    .await;
    assert_eq!(code, 422, "{body}");

    // sendInitialEvents=false starts from now: no ADDED events for existing objects.
    let (code, body) = raw(
        "GET",
        &format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
            sim.handle.url()
        ),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(!body.contains("\"ADDED\""), "{body}");
}

#[tokio::test]
async fn label_selected_watches_see_objects_enter_and_leave() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let a = cms.create(&PostParams::default(), &cm("a", json!({"app": "web"}))).await.unwrap();
    let wp = WatchParams::default().labels("app=web").disable_bookmarks();
    let mut w = cms.watch(&wp, &a.resource_version().unwrap()).await.unwrap().boxed();
    let pp = PatchParams::default();
    cms.patch("a", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("other", json!({"app": "db"}))).await.unwrap();
    cms.patch("a", &pp, &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}}))).await.unwrap();
    cms.patch("a", &pp, &Patch::Merge(json!({"data": {"v": "9"}}))).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut w).await.unwrap()));
    }
    assert_eq!(seen, vec!["DELETED a", "ADDED a", "MODIFIED a"]);
}

async fn collect_until_init_done<S>(s: &mut S) -> Vec<String>
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next(s).await.unwrap() {
            watcher::Event::Init => names.clear(),
            watcher::Event::InitApply(o) => names.push(o.name_any()),
            watcher::Event::InitDone => return names,
            other => panic!("unexpected event during init: {other:?}"),
        }
    }
}

#[tokio::test]
async fn runtime_watcher_lists_then_watches() {
    for streaming in [false, true] {
        let sim = start().await;
        let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
        cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
        cms.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
        let config = if streaming { watcher::Config::default().streaming_lists() } else { watcher::Config::default().page_size(1) };
        let mut s = watcher(cms.clone(), config).boxed();
        assert_eq!(collect_until_init_done(&mut s).await, vec!["a", "b"], "streaming={streaming}");
        cms.create(&PostParams::default(), &cm("c", json!({}))).await.unwrap();
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        match next(&mut s).await.unwrap() {
            watcher::Event::Apply(o) => assert_eq!(o.name_any(), "c"),
            other => panic!("{other:?}"),
        }
        match next(&mut s).await.unwrap() {
            watcher::Event::Delete(o) => assert_eq!(o.name_any(), "a"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn runtime_watcher_relists_after_410() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let mut s = watcher(cms.clone(), watcher::Config::default()).boxed();
    assert_eq!(collect_until_init_done(&mut s).await, vec!["a"]);
    cms.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    match next(&mut s).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("{other:?}"),
    }
    sim.handle.expire_watches();
    match next(&mut s).await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected the 410 to surface, got {other:?}"),
    }
    // The watcher starts over with a fresh list.
    assert_eq!(collect_until_init_done(&mut s).await, vec!["a", "b"]);
}

#[tokio::test]
async fn reflector_store_converges() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects().try_for_each(|_| async { Ok(()) });
    let task = tokio::spawn(stream);
    reader.wait_until_ready().await.unwrap();
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("c{i:02}"), json!({}))).await.unwrap();
    }
    for i in 0..10 {
        cms.delete(&format!("c{i:02}"), &DeleteParams::default()).await.unwrap();
    }
    cms.patch("c15", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "changed"}}))).await.unwrap();
    let names = eventually(|| {
        let reader = reader.clone();
        async move {
            let mut names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
            names.sort();
            let c15 = reader.state().into_iter().find(|o| o.name_any() == "c15")?;
            (names.len() == 10 && c15.data.as_ref()?.get("v")? == "changed").then_some(names)
        }
    })
    .await;
    assert_eq!(names.first().map(String::as_str), Some("c10"));
    task.abort();
}
