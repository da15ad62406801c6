//! Running one postcard task (see the module documentation of `postcards`): the provider
//! runner claims it like every provider task and hands it here; what comes back is the
//! runner's [`Ending`]. Success ends as [`Ending::Recorded`]: the task's completion and the
//! postcard row are one transaction ([`purrify_store::Db::complete_postcard_task`]).
//!
//! - The task's deadline bounds every step; the row is touched while a step waits (a child
//!   task in the engine's queue, a slow provider) so the runner's take-over never mistakes a
//!   long wait for a dead replica.
//! - The photo's child task belongs to no account: it is a step of the postcard, which is
//!   the user's task, work and charge (an owned child would appear as a second work, could
//!   be refused by the user's concurrent-task limit that the postcard itself fills, and its
//!   events would reach the user's `/ws`). Its fairness group is still the user's own
//!   (`anon:postcard:<user>`). It is cancelled when the postcard stops waiting for it.
//! - Messages of failures are client-safe: providers' messages are (adapters make them so);
//!   storage and database causes are logged and replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use purrify_api::{EnhanceParams, FailReason};
use purrify_store::postcards::Postcard;
use purrify_store::{Generation, Runner, Task, TaskMeta, now_ms};
use tokio::time::Instant;

use super::card::{self, Card};
use super::spec::PostcardSpec;
use crate::domain::DomainError;
use crate::domain::accounts::{Principal, Role};
use crate::domain::generation::outputs::{self, OutputError, StoredFile};
use crate::domain::generation::runner::{Ending, RunnerSettings};
use crate::domain::generation::{ImageSpec, JobSpec};
use crate::domain::providers::adapter::{ChatMessage, ImageJob, InputImage, Job, Output, Remote, Submitted};
use crate::domain::providers::policy::CallError;
use crate::domain::providers::{BUILTIN_ID, ChainError, Kind, Provider, ProviderService};
use crate::domain::tasks::{NewUpload, PublicStatus, TaskOptions, TaskService, TaskSnapshot, TaskView};

/// What the chat provider is asked.
const SYSTEM_PROMPT: &str = "你是一位明信片文案作者。请根据用户给出的心情、风格和主题，写一段简短的明信片寄语：\
不超过80个汉字，真诚自然，贴合心情与主题。只输出寄语正文，不要标题、引号、表情符号、署名或任何解释。";
/// Most characters read from the chat answer (the rest is not waited for).
const MAX_REPLY_CHARS: usize = 1000;
/// Most characters of the message kept on the card.
pub const MAX_TEXT_CHARS: usize = 200;
/// The picture asked of providers: square, a size every image protocol takes.
const IMAGE_SIDE: u32 = 1024;
/// How far image-to-image may move from the photo.
const STRENGTH: f32 = 0.6;

/// What the runner lends a postcard run.
pub(crate) struct RunCtx<'a> {
    pub tasks: &'a TaskService,
    pub providers: &'a ProviderService,
    pub http: &'a reqwest::Client,
    pub settings: &'a RunnerSettings,
}

fn failed(reason: FailReason, message: impl Into<String>) -> Ending {
    Ending::Failed(reason, message.into())
}

/// Logs an internal cause and fails with a message that reveals nothing of it.
fn internal(what: &str, cause: impl std::fmt::Display) -> Ending {
    tracing::warn!(error = %cause, "postcard: {what}");
    failed(FailReason::InternalError, format!("{what}; try again later"))
}

/// The progress last reported, shared with the heartbeat.
#[derive(Default)]
struct Progress(AtomicU64);

impl Progress {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Runs postcard task `id` (attempt `job_id`) to its end.
pub(crate) async fn run(
    cx: RunCtx<'_>,
    id: &str,
    job_id: &str,
    task: &Task,
    g: &Generation,
    spec: &PostcardSpec,
    deadline: Instant,
) -> Ending {
    let progress = Progress::default();
    let work = execute(&cx, id, job_id, task, g, spec, deadline, &progress);
    tokio::pin!(work);
    let every = (cx.settings.stale_after / 4).max(Duration::from_secs(1));
    let mut beat = tokio::time::interval_at(Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ending = &mut work => return ending.unwrap_or_else(|e| e),
            _ = beat.tick() => {
                if let Err(e) = cx.tasks.db().update_progress(id, job_id, progress.get()).await {
                    tracing::warn!(task = %id, error = %e, "cannot touch a running postcard task");
                }
            }
        }
    }
}

/// Records and publishes progress `p`.
async fn advance(cx: &RunCtx<'_>, id: &str, job_id: &str, progress: &Progress, p: f64) {
    progress.0.store(p.to_bits(), Ordering::Relaxed);
    let db = cx.tasks.db();
    if matches!(db.update_progress(id, job_id, p).await, Ok(true))
        && let Ok(Some(t)) = db.get_task(id).await
    {
        cx.tasks.hub().publish(TaskView::from_task(&t));
    }
}

#[expect(clippy::too_many_arguments, reason = "the task and what the runner read of it")]
async fn execute(
    cx: &RunCtx<'_>,
    id: &str,
    job_id: &str,
    task: &Task,
    g: &Generation,
    spec: &PostcardSpec,
    deadline: Instant,
    progress: &Progress,
) -> Result<Ending, Ending> {
    let started = Instant::now();
    let owner = task.user_id.as_deref().ok_or_else(|| failed(FailReason::InternalError, "a postcard task needs its owner"))?;
    let text = write_text(cx.providers, spec, deadline).await?;
    advance(cx, id, job_id, progress, 0.3).await;
    let (outs, served_by, model) = picture(cx, id, owner, task, g, spec, &text, deadline).await?;
    let _ = cx.tasks.db().set_provider_job(id, job_id, &served_by, None).await;
    let file = store_picture(cx, id, task, outs).await?;
    advance(cx, id, job_id, progress, 0.9).await;

    let storage = cx.tasks.storage();
    let postcard_id = uuid::Uuid::new_v4().simple().to_string();
    let image_uri = storage.uri_for(&format!("postcards/{postcard_id}.{}", extension(&file.content_type)));
    let copied = match storage.get(&file.uri, file.bytes.saturating_add(1)).await {
        Ok(bytes) => storage.put(&image_uri, bytes).await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        let _ = storage.delete(&file.uri).await;
        let _ = storage.delete(&image_uri).await;
        return Err(internal("the postcard's picture could not be stored", e));
    }
    let media_key = super::new_media_key();
    let image_url = super::image_url(cx.settings.public_url.as_deref(), &media_key);
    let frontend_code =
        card::render(&Card { text: &text, mood: &spec.mood, style: &spec.style, theme: &spec.theme, image_url: &image_url });
    let postcard = Postcard {
        id: postcard_id,
        task_id: id.to_owned(),
        user_id: owner.to_owned(),
        mood: spec.mood.clone(),
        style: spec.style.clone(),
        theme: spec.theme.clone(),
        extra: spec.extra.clone(),
        text,
        image_uri: image_uri.clone(),
        image_type: file.content_type.clone(),
        media_key,
        frontend_code,
        created_at: now_ms(),
    };
    let result = outputs::job_result(&file, model, started.elapsed().as_millis() as u64);
    let list = serde_json::to_string(&[&file]).unwrap_or_else(|_| "[]".into());
    let recorded = cx.tasks.db().complete_postcard_task(id, job_id, &result, &list, &postcard).await;
    if !matches!(recorded, Ok(true)) {
        // Cancelled or expired meanwhile, or not written: the files are nobody's.
        let _ = storage.delete(&file.uri).await;
        let _ = storage.delete(&image_uri).await;
    }
    match recorded {
        Ok(true) => {
            tracing::info!(task = %id, postcard = %postcard.id, "postcard made");
            Ok(Ending::Recorded)
        }
        Ok(false) => Ok(Ending::Recorded),
        Err(e) => Err(internal("the postcard could not be recorded", e)),
    }
}

/// The file extension of a picture type.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/webp" => "webp",
        "image/avif" => "avif",
        _ => "jpg",
    }
}

/// The chat messages asking for the postcard's text.
fn messages(spec: &PostcardSpec) -> Vec<ChatMessage> {
    let mut ask = format!("心情：{}\n风格：{}\n主题：{}", spec.mood, spec.style, spec.theme);
    if let Some(extra) = &spec.extra {
        ask.push_str(&format!("\n补充：{extra}"));
    }
    vec![ChatMessage { role: "system".into(), content: SYSTEM_PROMPT.into() }, ChatMessage { role: "user".into(), content: ask }]
}

/// Step 1: the chat provider's answer, collected (at most [`MAX_REPLY_CHARS`]) and cleaned.
async fn write_text(providers: &ProviderService, spec: &PostcardSpec, deadline: Instant) -> Result<String, Ending> {
    let late = || failed(FailReason::DeadlineExceeded, "the text step did not finish before the postcard's deadline");
    let down = |m: String| failed(FailReason::WorkerUnavailable, format!("the text step failed: {m}"));
    let reply = tokio::time::timeout_at(deadline, providers.chat(messages(spec))).await.map_err(|_| late())?.map_err(|e| match e {
        DomainError::Invalid { message, .. } => down(message),
        other => down(other.to_string()),
    })?;
    let mut tokens = reply.tokens;
    let mut raw = String::new();
    let mut chars = 0;
    loop {
        match tokio::time::timeout_at(deadline, tokens.next()).await {
            Err(_) => return Err(late()),
            Ok(None) => break,
            Ok(Some(Ok(t))) => {
                chars += t.chars().count();
                raw.push_str(&t);
                if chars >= MAX_REPLY_CHARS {
                    break; // dropping the stream stops the upstream answer
                }
            }
            Ok(Some(Err(e))) => return Err(down(format!("the chat provider broke off: {e}"))),
        }
    }
    let text = clean_text(&raw);
    if text.is_empty() {
        return Err(failed(FailReason::InferenceFailed, "the text step failed: the chat provider wrote nothing"));
    }
    Ok(text)
}

/// The answer as the card shows it: control characters out (line breaks kept), trimmed,
/// quotes a model wrapped it in taken off, at most [`MAX_TEXT_CHARS`].
pub(crate) fn clean_text(raw: &str) -> String {
    let plain: String =
        raw.replace("\r\n", "\n").chars().map(|c| if c == '\t' { ' ' } else { c }).filter(|c| *c == '\n' || !c.is_control()).collect();
    let mut text = plain.trim();
    for (open, close) in [('"', '"'), ('“', '”'), ('「', '」'), ('『', '』'), ('\'', '\'')] {
        if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
            text = inner.trim();
        }
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        let mut cut: String = text.chars().take(MAX_TEXT_CHARS - 1).collect();
        cut.push('…');
        return cut;
    }
    text.to_owned()
}

/// What the image provider is asked to draw.
fn image_prompt(spec: &PostcardSpec, text: &str) -> String {
    let mut p = format!(
        "A postcard illustration. Theme: {}. Mood: {}. Art style: {}. It goes with this message: {}.",
        spec.theme, spec.mood, spec.style, text
    );
    if let Some(extra) = &spec.extra {
        p.push_str(&format!(" Wishes: {extra}."));
    }
    p.push_str(" No lettering or words in the picture.");
    p
}

/// Step 2: the picture's outputs, who made them and with which model.
#[expect(clippy::too_many_arguments, reason = "the task and what the runner read of it")]
async fn picture(
    cx: &RunCtx<'_>,
    id: &str,
    owner: &str,
    task: &Task,
    g: &Generation,
    spec: &PostcardSpec,
    text: &str,
    deadline: Instant,
) -> Result<(Vec<Output>, String, String), Ending> {
    let has_photo = !task.input_uri.is_empty();
    let chain = cx.providers.chain(Kind::Image, Some(&g.provider)).await.map_err(|e| internal("the image providers cannot be read", e))?;
    let builtin = chain.iter().find(|p| p.id == BUILTIN_ID).cloned();
    let outside: Vec<Provider> = chain.into_iter().filter(|p| p.id != BUILTIN_ID).collect();
    if has_photo
        && let Some(engine) = builtin
        && (g.provider == BUILTIN_ID || outside.is_empty())
    {
        let model = engine.model_or_default(Some(&g.model));
        let outs = photo_step(cx, id, owner, task, &model, &image_prompt(spec, text), deadline).await?;
        return Ok((outs, engine.id, model));
    }
    if outside.is_empty() {
        return Err(failed(FailReason::WorkerUnavailable, "no image provider is available for postcards; an admin configures one"));
    }
    let init = if has_photo {
        let bytes = cx
            .tasks
            .storage()
            .get(&task.input_uri, cx.settings.max_input_bytes)
            .await
            .map_err(|e| internal("the photo cannot be read", e))?;
        Some(InputImage { bytes, content_type: task.content_type.clone() })
    } else {
        None
    };
    let job = Job::Image(ImageJob {
        prompt: image_prompt(spec, text),
        negative_prompt: None,
        width: IMAGE_SIDE,
        height: IMAGE_SIDE,
        count: 1,
        style: Some(spec.style.clone()),
        seed: None,
        init,
        strength: STRENGTH,
    });
    let model = if outside[0].id == g.provider { g.model.clone() } else { String::new() };
    let accepted = cx.providers.submit(&outside, &model, &job, deadline).await.map_err(|e| match e {
        ChainError::Refused(m) => failed(FailReason::InvalidParams, format!("the image step was refused: {m}")),
        ChainError::Unavailable(m) => failed(FailReason::WorkerUnavailable, format!("the image step failed: {m}")),
    })?;
    let outs = match accepted.submitted {
        Submitted::Finished(outs) => outs,
        Submitted::Pending { remote_id } => follow(cx.providers, &accepted.provider, &accepted.model, &remote_id, deadline).await?,
    };
    Ok((outs, accepted.provider.id, accepted.model))
}

/// Polls a pending image job to its end (image protocols answer at once today; a
/// provider that queues is followed like the runner follows videos).
async fn follow(providers: &ProviderService, p: &Provider, model: &str, remote: &str, deadline: Instant) -> Result<Vec<Output>, Ending> {
    loop {
        tokio::time::sleep(providers.settings().poll_interval).await;
        if Instant::now() >= deadline {
            providers.cancel(p, model, remote).await;
            return Err(failed(FailReason::DeadlineExceeded, "the image step did not finish before the postcard's deadline"));
        }
        match providers.poll(p, model, remote, deadline).await {
            Ok(Remote::Running { .. }) | Err(CallError::Open { .. }) => {}
            Ok(Remote::Finished(outs)) => return Ok(outs),
            Ok(Remote::Failed(m)) => return Err(failed(FailReason::InferenceFailed, format!("the image step failed: {m}"))),
            Err(CallError::Failed(e)) if e.retryable() => {
                tracing::info!(provider = %p.id, error = %e, "polling the image provider failed; polling on")
            }
            Err(CallError::Failed(e)) => return Err(failed(FailReason::WorkerUnavailable, format!("the image step failed: {e}"))),
        }
    }
}

/// Stores the outputs as the task's result: the first picture is kept, anything else
/// deleted.
async fn store_picture(cx: &RunCtx<'_>, id: &str, task: &Task, outs: Vec<Output>) -> Result<StoredFile, Ending> {
    let storage = cx.tasks.storage();
    let files = outputs::store(storage, cx.http, id, &task.output_uri, outs, cx.settings.copy).await.map_err(|e| match e {
        OutputError::Bad(m) => failed(FailReason::InferenceFailed, format!("the image step failed: {m}")),
        OutputError::Storage(m) => {
            tracing::warn!(task = %id, error = %m, "cannot store a postcard's picture");
            failed(FailReason::StorageError, "the picture could not be stored; try again later")
        }
    })?;
    let mut files = files.into_iter();
    let first = files.next().ok_or_else(|| failed(FailReason::InferenceFailed, "the image step made no picture"))?;
    for extra in files {
        let _ = storage.delete(&extra.uri).await;
    }
    if !first.content_type.starts_with("image/") {
        let _ = storage.delete(&first.uri).await;
        return Err(failed(FailReason::InferenceFailed, "the image step made a video, not a picture"));
    }
    Ok(first)
}

/// Cancels the photo's child task if the postcard stops waiting for it before it ended.
struct ChildGuard {
    tasks: TaskService,
    id: Option<String>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let tasks = self.tasks.clone();
        // The child belongs to no account; the runner cancels it as the system.
        let system = Principal { user_id: "postcard-runner".into(), role: Role::Admin };
        tokio::spawn(async move {
            if let Err(e) = tasks.cancel(&id, &system).await {
                tracing::warn!(task = %id, error = %e, "cannot cancel a postcard's photo step");
            }
        });
    }
}

/// Step 2 with the engine: the photo as a child task of kind `image_to_image` on the
/// built-in provider, waited for on the progress hub.
async fn photo_step(
    cx: &RunCtx<'_>,
    id: &str,
    owner: &str,
    task: &Task,
    model: &str,
    prompt: &str,
    deadline: Instant,
) -> Result<Vec<Output>, Ending> {
    let child = uuid::Uuid::new_v4().simple().to_string();
    let input_uri =
        cx.tasks.copy_input(&task.input_uri, &child).await.map_err(|e| internal("the photo cannot be copied for the photo step", e))?;
    let spec = JobSpec::ImageToImage(ImageSpec {
        prompt: prompt.to_owned(),
        negative_prompt: None,
        width: IMAGE_SIDE,
        height: IMAGE_SIDE,
        count: 1,
        style: None,
        seed: None,
        strength: STRENGTH,
    });
    let upload = NewUpload {
        task_id: child.clone(),
        input_uri: input_uri.clone(),
        content_type: task.content_type.clone(),
        bytes: task.input_bytes,
        // The built-in provider's models are the engine's quality levels.
        params: EnhanceParams {
            quality_level: serde_json::from_value(serde_json::Value::String(model.to_owned())).unwrap_or_default(),
            ..EnhanceParams::default()
        },
        request_id: task.request_id.clone().unwrap_or_default(),
        owner: None,
        client: format!("postcard:{owner}"),
    };
    let meta = TaskMeta {
        kind: "image_to_image".into(),
        title: Some("Postcard photo".into()),
        description: Some(format!("the photo step of postcard task {id}")),
        generation: Some(Generation {
            runner: Runner::Engine,
            provider: BUILTIN_ID.into(),
            model: model.to_owned(),
            job: serde_json::to_string(&spec).map_err(|e| internal("the photo step cannot be described", e))?,
            served_by: None,
            remote_id: None,
            outputs: None,
        }),
        ..TaskMeta::default()
    };
    if let Err(e) = cx.tasks.create_task_with(upload, TaskOptions { meta, priority: task.priority, price: Some(0) }).await {
        let _ = cx.tasks.storage().delete(&input_uri).await;
        return Err(match e {
            DomainError::Unavailable(m) => failed(FailReason::WorkerUnavailable, format!("the photo step could not start: {m}")),
            other => internal("the photo step could not start", other),
        });
    }
    let mut guard = ChildGuard { tasks: cx.tasks.clone(), id: Some(child.clone()) };
    let snap = wait_for(cx.tasks, &child, deadline).await?;
    guard.id = None;
    match (snap.status, snap.result) {
        (PublicStatus::Completed, Some(r)) => {
            let bytes = cx
                .tasks
                .storage()
                .get(&r.output_uri, cx.settings.copy.max_bytes)
                .await
                .map_err(|e| internal("the photo step's picture cannot be read", e))?;
            Ok(vec![Output::Bytes { bytes, content_type: r.content_type }])
        }
        (PublicStatus::Completed, None) => Err(failed(FailReason::InferenceFailed, "the photo step finished without a picture")),
        _ => Err(failed(
            FailReason::InferenceFailed,
            format!("the photo step failed: {}", snap.error.unwrap_or_else(|| "no reason was given".into())),
        )),
    }
}

/// Waits for task `id` to end, by its events on the progress hub (no polling). The view is
/// read first, which keeps it in the hub; a hub entry is only evicted once final, so when its
/// events end the next read is final.
async fn wait_for(tasks: &TaskService, id: &str, deadline: Instant) -> Result<TaskSnapshot, Ending> {
    let finished = |s: &TaskSnapshot| matches!(s.status, PublicStatus::Completed | PublicStatus::Failed);
    let late = || failed(FailReason::DeadlineExceeded, "the photo step did not finish before the postcard's deadline");
    loop {
        let now = tokio::time::timeout_at(deadline, tasks.task(id)).await.map_err(|_| late())?;
        let snap = now
            .map_err(|e| internal("the photo step cannot be followed", e))?
            .ok_or_else(|| internal("the photo step cannot be followed", "its task vanished"))?;
        if finished(&snap) {
            return Ok(snap);
        }
        let Some(events) = tasks.watch_task(id) else { continue };
        futures::pin_mut!(events);
        loop {
            match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => return Err(late()),
                Ok(None) => break,
                Ok(Some(s)) if finished(&s) => return Ok(s),
                Ok(Some(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_cleaned_for_the_card() {
        assert_eq!(clean_text("  “祝你生日快乐！”\r\n"), "祝你生日快乐！");
        assert_eq!(clean_text("\"Hello\""), "Hello");
        assert_eq!(clean_text("第一行\r\n第二行\t好\u{0}\u{7}"), "第一行\n第二行 好");
        assert_eq!(clean_text("   "), "");
        let long = clean_text(&"长".repeat(MAX_TEXT_CHARS + 10));
        assert_eq!((long.chars().count(), long.ends_with('…')), (MAX_TEXT_CHARS, true));
        assert_eq!(clean_text("<script>alert(1)</script>"), "<script>alert(1)</script>", "escaping is the card's job");
    }

    #[test]
    fn prompts_carry_the_request() {
        let spec = PostcardSpec::new("开心", "水彩", "春天", Some("给奶奶"), None);
        let m = messages(&spec);
        assert_eq!((m[0].role.as_str(), m[1].role.as_str()), ("system", "user"));
        assert!(m[0].content.contains("80"));
        assert_eq!(m[1].content, "心情：开心\n风格：水彩\n主题：春天\n补充：给奶奶");
        let p = image_prompt(&spec, "春风十里");
        for part in ["春天", "开心", "水彩", "春风十里", "给奶奶"] {
            assert!(p.contains(part), "{part} in {p}");
        }
        assert!(p.chars().count() < crate::domain::generation::MAX_PROMPT);
        assert_eq!(extension("image/png"), "png");
        assert_eq!(extension("image/jpeg"), "jpg");
    }
}
