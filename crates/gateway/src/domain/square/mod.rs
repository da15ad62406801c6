//! The square (DESIGN section 13, seed 003's 广场): the public feed of completed works their
//! owners chose to share.
//!
//! - A post is its work: its id is the work's id, and `is_public` on the work says it is
//!   shared. Publishing (`POST /api/v1/square`), withdrawing (`DELETE /api/v1/square/{id}`)
//!   and seed 001's `is_public` edit are three doors to the same two rows, changed together;
//!   deleting the work takes the post with it. Only a completed work is shared (a work that
//!   is still processing has nothing to show).
//! - Feeds are public. `latest` is newest published first; `hot` ranks by engagement with an
//!   age decay ([`purrify_store::square::HOT_SCORE`]): `(likes + 2 x favorites + plays / 100
//!   + 1) / (1 + age in days)^2`. Ties fall back to the newest, then to the id.
//! - Likes and favorites are one row per user, post and kind; the post's counters change in
//!   the same transaction, so they are exact under any concurrency.
//! - Plays are counted in memory and flushed in batches ([`plays`]).

mod plays;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use purrify_store::{Db, FeedFilter, NewPost, Publish, Reaction, SquareItem};
pub use purrify_store::{FeedSort, ReactionKind, ReactionOp, WorkKind};

pub use plays::Flushed;
use plays::PlayCounter;

use crate::domain::accounts::{Page, PageRequest};
use crate::domain::{DomainError, DomainResult};

/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest author id a feed is filtered by (ids are UUIDs; this only bounds the input).
const MAX_AUTHOR_CHARS: usize = 64;

#[derive(Debug, Clone)]
pub struct SquareSettings {
    /// How often counted plays are written.
    pub flush_interval: Duration,
    /// A client's repeated plays of one post within this window count once.
    pub play_window: Duration,
    /// Most (address, post) pairs remembered for the window; past it plays still count.
    pub max_recent_plays: usize,
}

impl Default for SquareSettings {
    fn default() -> Self {
        Self { flush_interval: Duration::from_secs(5), play_window: Duration::from_secs(60), max_recent_plays: 100_000 }
    }
}

/// Which posts a feed shows.
#[derive(Debug, Clone, Default)]
pub struct FeedQuery {
    pub kind: Option<WorkKind>,
    pub sort: FeedSort,
    /// One user's posts only.
    pub author: Option<String>,
}

/// A post as a viewer sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub item: SquareItem,
    /// Written plays plus this process's unwritten ones.
    pub play_count: u64,
    /// Whether the viewer liked / favorited it; `None` for anonymous viewers.
    pub liked: Option<bool>,
    pub favorited: Option<bool>,
}

/// Cheap to clone; clones share one service (and one play counter).
#[derive(Clone)]
pub struct SquareService {
    db: Db,
    settings: Arc<SquareSettings>,
    plays: Arc<PlayCounter>,
}

impl SquareService {
    pub fn new(db: Db, settings: SquareSettings) -> Self {
        let plays = Arc::new(PlayCounter::new(&settings));
        Self { db, settings: Arc::new(settings), plays }
    }

    /// A page of the square; with a `viewer`, whether they liked and favorited each post.
    pub async fn feed(&self, viewer: Option<&str>, query: FeedQuery, page: PageRequest) -> DomainResult<Page<Entry>> {
        let author = match query.author.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) if a.chars().count() > MAX_AUTHOR_CHARS || a.chars().any(char::is_control) => {
                return Err(DomainError::invalid("author", "not a user id"));
            }
            Some(a) => Some(a.to_owned()),
        };
        let filter = FeedFilter { kind: query.kind, author, sort: query.sort, now: purrify_store::now_ms() };
        let page = self.db.square_feed(&filter, page).await?;
        let entries = self.entries(viewer, page.items).await?;
        Ok(Page { items: entries, total: page.total, page: page.page, page_size: page.page_size })
    }

    /// One visible post.
    pub async fn get(&self, viewer: Option<&str>, id: &str) -> DomainResult<Entry> {
        let item = self.db.square_item(id).await?.ok_or_else(|| not_on_square(id))?;
        Ok(self.entries(viewer, vec![item]).await?.remove(0))
    }

    /// Shares one of `user_id`'s completed works, or edits the description of one already
    /// shared (`None` keeps it; a new post without one is described by the work's title).
    /// `true` with the post when it is new.
    pub async fn publish(&self, user_id: &str, work_id: &str, description: Option<String>) -> DomainResult<(Entry, bool)> {
        let description = description.map(|d| clean_description(&d)).transpose()?;
        let post = NewPost { work_id: work_id.to_owned(), user_id: user_id.to_owned(), description, at: purrify_store::now_ms() };
        let created = match self.db.publish_post(&post).await? {
            Publish::Created => true,
            Publish::Updated => false,
            Publish::NoWork => return Err(DomainError::NotFound(format!("no work {work_id}"))),
            Publish::NotCompleted => {
                return Err(DomainError::Conflict(format!("work {work_id} is not completed; only finished works can be shared")));
            }
        };
        tracing::info!(post = %work_id, user = %user_id, created, "work shared on the square");
        Ok((self.get(Some(user_id), work_id).await?, created))
    }

    /// Takes one of `user_id`'s posts off the square; anyone else's is answered as missing.
    pub async fn withdraw(&self, user_id: &str, id: &str) -> DomainResult<()> {
        if !self.db.withdraw_post(user_id, id).await? {
            return Err(not_on_square(id));
        }
        tracing::info!(post = %id, user = %user_id, "work withdrawn from the square");
        Ok(())
    }

    /// `user_id` likes or favorites a visible post, as `op` asks.
    pub async fn react(&self, user_id: &str, id: &str, kind: ReactionKind, op: ReactionOp) -> DomainResult<Reaction> {
        let r = self.db.react(id, user_id, kind, op).await?.ok_or_else(|| not_on_square(id))?;
        tracing::debug!(post = %id, user = %user_id, kind = kind.as_str(), on = r.on, count = r.count, "square reaction");
        Ok(r)
    }

    /// Counts a play of a visible post by `client` (once per address and post within the
    /// play window); the play count the client should show.
    pub async fn play(&self, id: &str, client: IpAddr) -> DomainResult<u64> {
        // A read, not a write: plays of unknown ids must not grow the counter.
        let item = self.db.square_item(id).await?.ok_or_else(|| not_on_square(id))?;
        self.plays.record(id, client, Instant::now());
        Ok(item.post.play_count + self.plays.pending(id))
    }

    async fn entries(&self, viewer: Option<&str>, items: Vec<SquareItem>) -> DomainResult<Vec<Entry>> {
        let reactions = match viewer {
            Some(user) if !items.is_empty() => {
                let ids: Vec<String> = items.iter().map(|i| i.post.id.clone()).collect();
                Some(self.db.reactions_of(user, &ids).await?)
            }
            Some(_) => Some(Vec::new()),
            None => None,
        };
        let has = |id: &str, kind| reactions.as_ref().map(|r| r.iter().any(|(p, k)| p == id && *k == kind));
        Ok(items
            .into_iter()
            .map(|item| Entry {
                play_count: item.post.play_count + self.plays.pending(&item.post.id),
                liked: has(&item.post.id, ReactionKind::Like),
                favorited: has(&item.post.id, ReactionKind::Favorite),
                item,
            })
            .collect())
    }
}

fn not_on_square(id: &str) -> DomainError {
    DomainError::NotFound(format!("no post {id} on the square"))
}

/// A description as stored: trimmed, bounded, no control characters but line breaks.
fn clean_description(d: &str) -> DomainResult<String> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters, no control characters but line breaks"),
        ));
    }
    Ok(d.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_trimmed_and_bounded() {
        assert_eq!(clean_description("  a cat\non a mat ").unwrap(), "a cat\non a mat");
        assert_eq!(clean_description("   ").unwrap(), "", "empty clears it");
        assert_eq!(clean_description(&"猫".repeat(MAX_DESCRIPTION_CHARS)).unwrap().chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(clean_description(&"猫".repeat(MAX_DESCRIPTION_CHARS + 1)).is_err());
        assert!(clean_description("a\u{7}b").is_err());
    }
}
