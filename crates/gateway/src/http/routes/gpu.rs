//! Seed 002's GPU monitoring (`/api/gpu/*`), for administrators only: the figures expose the
//! fleet's addresses and load. One shape whichever task backend runs: the fleet's health
//! probes in standalone mode, the GpuPool status in Kubernetes mode.

use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::monitoring::{ClusterOverview, GpuServer, GpuServerDetail, GpuServerStatus, Monitoring};
use crate::http::auth::AdminUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(servers)).routes(routes!(server)).routes(routes!(server_status)).routes(routes!(cluster_overview))
}

#[utoipa::path(get, path = "/api/gpu/servers", tag = "admin", security(("bearer" = [])),
    description = "Every GPU server (administrators): registered GPU servers, the configured backend and the in-process worker \
                   (standalone), or the GpuPool's workers (Kubernetes). Online ones first. CPU-only workers report `gpu_count: 0`; \
                   figures a worker does not report are null.",
    responses((status = 200, body = Envelope<Vec<GpuServer>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn servers(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<Vec<GpuServer>>> {
    Ok(Envelope::ok("ok", Monitoring::new(&state.tasks).servers().await?))
}

#[utoipa::path(get, path = "/api/gpu/servers/{server_id}", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "The server's id from `/api/gpu/servers`")),
    description = "One GPU server with its GPUs (utilisation, memory in GiB, as the worker reports them) and the tasks it is processing.",
    responses((status = 200, body = Envelope<GpuServerDetail>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn server(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(server_id): Path<String>,
) -> ApiResult<Envelope<GpuServerDetail>> {
    Ok(Envelope::ok("ok", Monitoring::new(&state.tasks).server(&server_id).await?))
}

#[utoipa::path(get, path = "/api/gpu/servers/{server_id}/status", tag = "admin", security(("bearer" = [])),
    params(("server_id" = String, Path, description = "The server's id from `/api/gpu/servers`")),
    description = "A GPU server's live status: host CPU and memory usage (percent), per-GPU usage and memory, running tasks with progress in percent.",
    responses((status = 200, body = Envelope<GpuServerStatus>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn server_status(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(server_id): Path<String>,
) -> ApiResult<Envelope<GpuServerStatus>> {
    Ok(Envelope::ok("ok", Monitoring::new(&state.tasks).server_status(&server_id).await?))
}

#[utoipa::path(get, path = "/api/gpu/cluster/overview", tag = "admin", security(("bearer" = [])),
    description = "Cluster totals (administrators): servers online and offline, GPUs (busy at 10 % utilisation or more), running and \
                   queued tasks, the mean utilisation of the GPUs that report it, GPU memory in GiB.",
    responses((status = 200, body = Envelope<ClusterOverview>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn cluster_overview(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Envelope<ClusterOverview>> {
    Ok(Envelope::ok("ok", Monitoring::new(&state.tasks).cluster_overview().await?))
}
