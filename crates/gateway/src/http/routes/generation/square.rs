//! Seed 003's square (`/api/v1/square*`): the public feed, sharing and withdrawing a work,
//! likes, favorites and plays. A post's id is its work's id. Feeds, single posts and plays
//! need no login (with a valid token a feed says what the caller liked and favorited; an
//! invalid one is refused, as everywhere). Media URLs are the works' own capability URLs.
//!
//! The seed only has `POST /square/{id}/like|favorite`: a POST toggles (a second one undoes
//! the first), and `DELETE` on the same path always removes the reaction, so a client that
//! knows what it wants can say so and retry safely.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::PageRequest;
use crate::domain::square::{Entry, FeedQuery, FeedSort, ReactionKind, ReactionOp};
use crate::http::auth::{ClientAddr, CurrentUser, MaybeUser};
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::routes::works::{file_url, parse_kind, thumbnail_url};
use crate::http::views::iso;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(feeds))
        .routes(routes!(publish))
        .routes(routes!(post, withdraw))
        .routes(routes!(like, unlike))
        .routes(routes!(favorite, unfavorite))
        .routes(routes!(play))
}

/// Who shared a post.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Author {
    pub id: String,
    /// The username (else the full name; null when the account has neither).
    pub username: Option<String>,
    pub avatar: Option<String>,
}

/// A post of the square (seed 003's fields, and the counts and the file).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1SquareItem {
    /// The shared work's id.
    pub id: String,
    /// image or video.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A small JPEG (null until made), loadable without a token.
    pub thumbnail: Option<String>,
    /// The work's file, loadable without a token.
    pub file_url: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub play_count: u64,
    pub like_count: u64,
    pub favorite_count: u64,
    pub description: String,
    pub author: V1Author,
    /// When it was shared.
    pub created_at: String,
    /// Whether the caller liked it (absent without a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liked: Option<bool>,
    /// Whether the caller favorited it (absent without a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub favorited: Option<bool>,
}

impl From<Entry> for V1SquareItem {
    fn from(e: Entry) -> Self {
        let Entry { item, play_count, liked, favorited } = e;
        Self {
            kind: item.work.kind.as_str(),
            thumbnail: thumbnail_url(&item.work),
            file_url: file_url(&item.work),
            width: item.work.width,
            height: item.work.height,
            play_count,
            like_count: item.post.like_count,
            favorite_count: item.post.favorite_count,
            description: item.post.description,
            author: V1Author { id: item.author.id, username: item.author.name, avatar: item.author.avatar_url },
            created_at: iso(item.post.published_at),
            liked,
            favorited,
            id: item.post.id,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1SquareList {
    pub list: Vec<V1SquareItem>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(rename_all = "camelCase")]
pub struct V1FeedQuery {
    /// image, video or all (default).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// latest (default: newest shared first) or hot: (likes + 2 x favorites + plays / 100 + 1)
    /// / (1 + age in days)^2, highest first.
    pub sort: Option<String>,
    /// A user id: only that user's posts.
    pub author: Option<String>,
    /// From 1.
    pub page: Option<u32>,
    /// Default 20, at most 100.
    pub page_size: Option<u32>,
}

fn parse_sort(sort: Option<&str>) -> ApiResult<FeedSort> {
    match sort.map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("latest") => Ok(FeedSort::Latest),
        Some("hot") => Ok(FeedSort::Hot),
        Some(s) => Err(ApiError::field("sort", format!("{s:?} is not one of hot, latest"))),
    }
}

#[utoipa::path(get, path = "/api/v1/square/feeds", tag = "generation", params(V1FeedQuery), security((), ("bearer" = [])),
    responses((status = 200, description = "Shared works; liked/favorited with a token", body = V1<V1SquareList>),
              (status = 401, description = "A token was sent but is not valid", body = V1Error), (status = 422, body = V1Error)))]
pub async fn feeds(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    ApiQuery(q): ApiQuery<V1FeedQuery>,
) -> ApiResult<V1<V1SquareList>> {
    let query = FeedQuery { kind: parse_kind(q.kind.as_deref())?, sort: parse_sort(q.sort.as_deref())?, author: q.author };
    let viewer = viewer.map(|p| p.user_id);
    let page = state.square.feed(viewer.as_deref(), query, PageRequest::new(q.page, q.page_size)).await?;
    Ok(V1::ok(V1SquareList {
        list: page.items.into_iter().map(V1SquareItem::from).collect(),
        total: page.total,
        page: page.page,
        page_size: page.page_size,
    }))
}

#[utoipa::path(get, path = "/api/v1/square/{id}", tag = "generation", params(("id" = String, Path)), security((), ("bearer" = [])),
    responses((status = 200, body = V1<V1SquareItem>), (status = 404, body = V1Error)))]
pub async fn post(State(state): State<AppState>, MaybeUser(viewer): MaybeUser, Path(id): Path<String>) -> ApiResult<V1<V1SquareItem>> {
    let viewer = viewer.map(|p| p.user_id);
    Ok(V1::ok(state.square.get(viewer.as_deref(), &id).await?.into()))
}

/// A work to share.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct V1Publish {
    /// One of the caller's completed works.
    pub work_id: String,
    /// Up to 500 characters; absent: the work's title (or, when it is shared already, the
    /// description it has).
    pub description: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/square", tag = "generation", request_body = V1Publish, security(("bearer" = [])),
    responses((status = 201, description = "Shared; the post's id is the work's", body = V1<V1SquareItem>),
              (status = 200, description = "Already shared; the description is updated", body = V1<V1SquareItem>),
              (status = 401, body = V1Error), (status = 404, description = "Not a work of the caller", body = V1Error),
              (status = 422, description = "Not completed, or a bad description", body = V1Error)))]
pub async fn publish(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<V1Publish>,
) -> ApiResult<V1<V1SquareItem>> {
    let work_id = body.work_id.trim();
    if work_id.is_empty() {
        return Err(ApiError::field("workId", "is required"));
    }
    let (entry, created) = state.square.publish(&user.user_id, work_id, body.description).await?;
    Ok(if created { V1::created(entry.into()) } else { V1::ok(entry.into()) })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Withdrawn {
    pub id: String,
    pub withdrawn: bool,
}

#[utoipa::path(delete, path = "/api/v1/square/{id}", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Off the square, its likes and favorites with it; the work stays", body = V1<V1Withdrawn>),
              (status = 401, body = V1Error), (status = 404, description = "Not a post of the caller", body = V1Error)))]
pub async fn withdraw(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1Withdrawn>> {
    state.square.withdraw(&user.user_id, &id).await?;
    Ok(V1::ok(V1Withdrawn { id, withdrawn: true }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Liked {
    pub liked: bool,
    pub like_count: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Favorited {
    pub favorited: bool,
    pub favorite_count: u64,
}

async fn liked(state: &AppState, user: &str, id: &str, op: ReactionOp) -> ApiResult<V1<V1Liked>> {
    let r = state.square.react(user, id, ReactionKind::Like, op).await?;
    Ok(V1::ok(V1Liked { liked: r.on, like_count: r.count }))
}

async fn favorited(state: &AppState, user: &str, id: &str, op: ReactionOp) -> ApiResult<V1<V1Favorited>> {
    let r = state.square.react(user, id, ReactionKind::Favorite, op).await?;
    Ok(V1::ok(V1Favorited { favorited: r.on, favorite_count: r.count }))
}

#[utoipa::path(post, path = "/api/v1/square/{id}/like", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Toggled: liked unless it was", body = V1<V1Liked>),
              (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn like(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1Liked>> {
    liked(&state, &user.user_id, &id, ReactionOp::Toggle).await
}

#[utoipa::path(delete, path = "/api/v1/square/{id}/like", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Not liked (whether it was or not)", body = V1<V1Liked>),
              (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn unlike(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1Liked>> {
    liked(&state, &user.user_id, &id, ReactionOp::Set(false)).await
}

#[utoipa::path(post, path = "/api/v1/square/{id}/favorite", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Toggled: favorited unless it was", body = V1<V1Favorited>),
              (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn favorite(State(state): State<AppState>, CurrentUser(user): CurrentUser, Path(id): Path<String>) -> ApiResult<V1<V1Favorited>> {
    favorited(&state, &user.user_id, &id, ReactionOp::Toggle).await
}

#[utoipa::path(delete, path = "/api/v1/square/{id}/favorite", tag = "generation", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Not favorited (whether it was or not)", body = V1<V1Favorited>),
              (status = 401, body = V1Error), (status = 404, body = V1Error)))]
pub async fn unfavorite(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<V1<V1Favorited>> {
    favorited(&state, &user.user_id, &id, ReactionOp::Set(false)).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Played {
    pub play_count: u64,
}

#[utoipa::path(post, path = "/api/v1/square/{id}/play", tag = "generation", params(("id" = String, Path)),
    responses((status = 200, description = "Counted once per client address and post a minute; written in batches", body = V1<V1Played>),
              (status = 404, body = V1Error), (status = 429, body = V1Error)))]
pub async fn play(State(state): State<AppState>, ClientAddr(addr): ClientAddr, Path(id): Path<String>) -> ApiResult<V1<V1Played>> {
    let client: IpAddr = addr.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Ok(V1::ok(V1Played { play_count: state.square.play(&id, client).await? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_are_the_seeds_words_and_latest_by_default() {
        assert_eq!(parse_sort(None).unwrap(), FeedSort::Latest);
        assert_eq!(parse_sort(Some(" ")).unwrap(), FeedSort::Latest);
        assert_eq!(parse_sort(Some("latest")).unwrap(), FeedSort::Latest);
        assert_eq!(parse_sort(Some("hot")).unwrap(), FeedSort::Hot);
        assert!(parse_sort(Some("new")).is_err());
    }
}
