//! The pure half of the Kubernetes backend: the `EnhanceTask` an upload becomes, what
//! clients see of a task CR, and the edits of a pool's external endpoints. No I/O.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use purrify_api::{
    EnhanceTask, EnhanceTaskSpec, ExternalEndpoint, FaceRestoration, FailReason, GpuPool, GpuPoolSpec, JobResult, TaskInput, TaskOutput,
    TaskParams, TaskStatus,
};
use purrify_store::{NewTask, now_ms};

use super::{LABEL_MANAGED_BY, LABEL_POOL};
use crate::domain::tasks::hub::TaskView;
use crate::domain::tasks::model::TaskFailure;

/// The public API's error code for an operator's reason word (a reason this gateway does
/// not know yet reads as an internal error).
pub fn code_of(reason: &str) -> &'static str {
    FailReason::from_reason(reason).map_or(FailReason::InternalError.code(), FailReason::code)
}

/// What clients see of a task CR.
pub fn view_of(task: &EnhanceTask) -> Option<TaskView> {
    let id = task.metadata.name.clone()?;
    let st = task.status.clone().unwrap_or_default();
    let status = TaskStatus::from(st.phase);
    let result = st.result.as_ref().map(|r| JobResult {
        output_uri: r.uri.clone(),
        // Results recorded by an operator older than these fields lack them: the requested
        // format and the face count are then the best information there is.
        content_type: r.content_type.clone().unwrap_or_else(|| task.spec.params.output_format.content_type().into()),
        width: r.width,
        height: r.height,
        bytes: r.bytes,
        faces: r.faces,
        face_restoration: match r.face_restoration {
            Some(f) => f,
            None if r.faces > 0 => FaceRestoration::Applied,
            None if !task.spec.params.face_enhance => FaceRestoration::Disabled,
            None => FaceRestoration::NoFaces,
        },
        model: String::new(),
        elapsed_ms: 0,
    });
    let error = match (status, st.error.as_ref()) {
        (TaskStatus::Failed | TaskStatus::Cancelled, Some(e)) => {
            Some(TaskFailure { code: code_of(&e.reason).to_string(), message: e.message.clone() })
        }
        _ => None,
    };
    Some(TaskView {
        task_id: id,
        status,
        progress: if status == TaskStatus::Completed { 1.0 } else { st.progress },
        stage: None,
        error,
        result,
        user_id: task.spec.owner.as_ref().and_then(|o| crate::domain::tasks::model::account_owner(&o.user_id)),
        updated_at: now_ms(),
    })
}

/// The EnhanceTask for an accepted upload (pure).
pub fn task_resource(task: &NewTask, pool: &str, deadline_seconds: u32) -> EnhanceTask {
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED_BY.to_string(), "purrify-gateway".to_string());
    labels.insert(LABEL_POOL.to_string(), pool.to_string());
    let mut annotations = BTreeMap::new();
    if let Some(rid) = &task.request_id {
        annotations.insert("purrify.io/request-id".to_string(), rid.clone());
    }
    EnhanceTask {
        metadata: ObjectMeta { name: Some(task.id.clone()), labels: Some(labels), annotations: Some(annotations), ..Default::default() },
        spec: EnhanceTaskSpec {
            pool: pool.to_string(),
            input: TaskInput { uri: task.input_uri.clone(), content_type: Some(task.content_type.clone()), bytes: Some(task.input_bytes) },
            output: TaskOutput { uri: task.output_uri.clone() },
            params: TaskParams::from(task.params),
            priority: task.priority,
            deadline_seconds,
            // The gateway keeps the history; the CR can go soon after it finished.
            ttl_seconds_after_finished: Some(300),
            // The account, or the anonymous client's group: the operator queues fairly by it.
            owner: task.user_id.clone().or_else(|| task.fair_group.clone()).map(|user_id| purrify_api::TaskOwner { user_id }),
        },
        status: None,
    }
}

/// `spec.external` with `url` added (or renamed), or `None` when nothing changes (pure).
pub fn with_external(external: &[ExternalEndpoint], url: &str, name: &str) -> Option<Vec<ExternalEndpoint>> {
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let mut out = external.to_vec();
    match out.iter_mut().find(|e| norm(&e.url) == norm(url)) {
        Some(e) if e.name.as_deref() == Some(name) => return None,
        Some(e) => e.name = Some(name.to_string()),
        None => out.push(ExternalEndpoint { url: url.to_string(), name: Some(name.to_string()) }),
    }
    Some(out)
}

/// `spec.external` without `url`, or `None` when it was not there (pure).
pub fn without_external(external: &[ExternalEndpoint], url: &str) -> Option<Vec<ExternalEndpoint>> {
    let norm = |u: &str| u.trim_end_matches('/').to_string();
    let out: Vec<_> = external.iter().filter(|e| norm(&e.url) != norm(url)).cloned().collect();
    (out.len() != external.len()).then_some(out)
}

/// A new external-only pool holding `endpoint`, every other field at the CRD's default.
pub fn external_only_pool(name: &str, endpoint: ExternalEndpoint) -> GpuPool {
    GpuPool {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: GpuPoolSpec::external_only(vec![endpoint]),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purrify_api::{EnhanceParams, TaskPhase};
    use purrify_store::NewTask;

    #[test]
    fn phases_map_to_the_seed_words() {
        assert_eq!(TaskStatus::from(TaskPhase::Running).as_str(), "processing");
        assert_eq!(TaskStatus::from(TaskPhase::Succeeded).as_str(), "completed");
        assert_eq!(code_of("DeadlineExceeded"), "PROCESSING_TIMEOUT");
        assert_eq!(code_of("something new"), "INTERNAL_ERROR");
    }

    #[test]
    fn uploads_become_task_resources() {
        let mut t = NewTask::new("abc123", "file:///s/in.jpg", "file:///s/out.jpg", EnhanceParams::default());
        t.fair_group = Some("anon:10.0.0.9".into());
        t.request_id = Some("req-1".into());
        let anonymous = task_resource(&t, "gpu-a", 300);
        assert_eq!(anonymous.spec.owner.as_ref().unwrap().user_id, "anon:10.0.0.9", "anonymous clients are queued fairly too");
        assert_eq!(view_of(&anonymous).and_then(|v| v.user_id), None, "an anonymous group is not an account");
        t.user_id = Some("5d0c6c2e-2b0e-4a51-9b1f-0a4c8f1e2d3c".into());
        let cr = task_resource(&t, "gpu-a", 300);
        assert_eq!(cr.metadata.name.as_deref(), Some("abc123"));
        assert_eq!(cr.spec.pool, "gpu-a");
        assert_eq!(cr.spec.params.tile_size, 400);
        assert_eq!(cr.spec.owner.as_ref().unwrap().user_id, "5d0c6c2e-2b0e-4a51-9b1f-0a4c8f1e2d3c");
        assert_eq!(cr.metadata.labels.unwrap()[LABEL_POOL], "gpu-a");
        assert_eq!(cr.metadata.annotations.unwrap()["purrify.io/request-id"], "req-1");
    }

    #[test]
    fn task_results_report_what_the_worker_said() {
        let task = |result: serde_json::Value, face_enhance: bool| -> EnhanceTask {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "purrify.io/v1alpha1", "kind": "EnhanceTask",
                "metadata": {"name": "t1", "namespace": "default"},
                "spec": {"input": {"uri": "file:///s/in.png"}, "output": {"uri": "file:///s/out.webp"},
                         "params": {"outputFormat": "webp", "faceEnhance": face_enhance}},
                "status": {"phase": "Succeeded", "progress": 1.0, "result": result},
            }))
            .unwrap()
        };
        let base = serde_json::json!({"uri": "file:///s/out.webp", "width": 8, "height": 6, "bytes": 99, "faces": 0});
        let mut current = base.clone();
        current["contentType"] = "image/webp".into();
        current["faceRestoration"] = "notConfigured".into();
        let r = view_of(&task(current, true)).unwrap().result.unwrap();
        assert_eq!((r.content_type.as_str(), r.face_restoration), ("image/webp", FaceRestoration::NotConfigured));
        // An older operator's result: the requested format and the face count are all there is.
        let r = view_of(&task(base.clone(), true)).unwrap().result.unwrap();
        assert_eq!((r.content_type.as_str(), r.face_restoration), ("image/webp", FaceRestoration::NoFaces));
        let r = view_of(&task(base, false)).unwrap().result.unwrap();
        assert_eq!(r.face_restoration, FaceRestoration::Disabled);
    }

    #[test]
    fn an_external_only_pool_gets_the_crd_defaults() {
        let p = external_only_pool("default", ExternalEndpoint { url: "http://203.0.113.7:8000".into(), name: Some("gpu-1".into()) });
        assert_eq!(p.metadata.name.as_deref(), Some("default"));
        assert_eq!(p.spec.concurrency_per_replica, 2, "the CRD requires at least 1");
        assert!(p.spec.image.is_none() && p.spec.replicas.is_none());
        assert_eq!(p.spec.external.len(), 1);
        // What the API server stores for `spec: {external: [...]}` is the same spec.
        let admin: GpuPoolSpec = serde_json::from_value(serde_json::json!({ "external": [p.spec.external[0]] })).unwrap();
        assert_eq!(p.spec, admin);
    }

    #[test]
    fn external_endpoints_are_added_once_and_removed() {
        let e = with_external(&[], "http://203.0.113.7:8000", "gpu-1").unwrap();
        assert_eq!(e.len(), 1);
        assert!(with_external(&e, "http://203.0.113.7:8000/", "gpu-1").is_none(), "idempotent");
        assert_eq!(with_external(&e, "http://203.0.113.7:8000", "gpu-9").unwrap()[0].name.as_deref(), Some("gpu-9"));
        assert!(without_external(&e, "http://203.0.113.8:8000").is_none());
        assert!(without_external(&e, "http://203.0.113.7:8000").unwrap().is_empty());
    }
}
