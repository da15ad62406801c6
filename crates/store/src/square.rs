//! The square (seed 003's 广场): posts of completed works their owners shared, with likes,
//! favorites and plays. A post's id is its work's id, and `works.is_public` says whether it
//! has one; every path that changes one changes the other in the same transaction
//! ([`publish_post`](Db::publish_post), [`withdraw_post`](Db::withdraw_post), seed 001's
//! `is_public` edit through [`Db::update_work`], and [`Db::delete_works`], which removes the
//! posts of the works it hides).
//!
//! Lock order, so concurrent writers never deadlock on PostgreSQL: a writer that touches both
//! locks the work's row first (its `UPDATE works`), then the post's. A reaction locks only the
//! post's row (a no-op `UPDATE`, which also finds out whether the post is visible), so all
//! reactions to one post run one after the other and its counters stay exact: the reaction
//! row and the counter change commit together, and the primary key of `square_reactions`
//! makes a repeated like a no-op.
//!
//! A post is visible while its work is completed and not deleted and its author's account is
//! active; feeds and reactions see visible posts only.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::works::{COLUMNS as WORK_COLUMNS, Work, WorkKind, work_from_row};
use crate::{Db, StoreError, WriteTx};

/// A like or a favorite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReactionKind {
    Like,
    Favorite,
}

impl ReactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Like => "like",
            Self::Favorite => "favorite",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Like, Self::Favorite].into_iter().find(|k| k.as_str() == s)
    }

    /// The post's counter of this kind.
    fn counter(self) -> &'static str {
        match self {
            Self::Like => "like_count",
            Self::Favorite => "favorite_count",
        }
    }
}

/// What a reaction request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionOp {
    /// On if it is off, off if it is on.
    Toggle,
    /// Exactly this state; already there is a no-op.
    Set(bool),
}

/// A user's reaction to a post after a request, and the post's count of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction {
    pub on: bool,
    pub count: u64,
}

/// A post's own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// Its work's id.
    pub id: String,
    pub user_id: String,
    pub kind: WorkKind,
    pub description: String,
    pub like_count: u64,
    pub favorite_count: u64,
    /// Flushed plays (a process adds its unflushed ones when it shows them).
    pub play_count: u64,
    pub published_at: i64,
    pub updated_at: i64,
}

/// Who published a post, as the square shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub id: String,
    /// The username, else the full name.
    pub name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A visible post with its work and author.
#[derive(Debug, Clone, PartialEq)]
pub struct SquareItem {
    pub post: Post,
    pub work: Work,
    pub author: Author,
}

/// A feed's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedSort {
    /// Newest published first.
    #[default]
    Latest,
    /// By [`HOT_SCORE`], then newest first.
    Hot,
}

/// Which posts a feed shows, and in which order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedFilter {
    pub kind: Option<WorkKind>,
    /// One author's posts only.
    pub author: Option<String>,
    pub sort: FeedSort,
    /// The time the hot ranking measures ages from (unix ms).
    pub now: i64,
}

/// A work to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPost {
    pub work_id: String,
    pub user_id: String,
    /// `None`: the work's title for a new post, the current description for a shared one.
    pub description: Option<String>,
    pub at: i64,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    Created,
    /// It was shared already; the description is updated when one was given.
    Updated,
    /// No such visible work of this user.
    NoWork,
    /// The work is not completed; nothing changed.
    NotCompleted,
}

/// The hot ranking: engagement (likes, favorites counting double, a hundred plays as one like,
/// plus one so posts without any still rank by age) divided by the square of one plus the age
/// in days. A day-old post needs four times the engagement of a new one to rank beside it, a
/// week-old one 64 times. Plain arithmetic in DOUBLE PRECISION, the same on both databases;
/// `$1` is the time ages are measured from (a post stamped in the future by a skewed clock
/// counts as new).
pub const HOT_SCORE: &str = "(CAST(p.like_count AS DOUBLE PRECISION) + 2.0 * p.favorite_count + p.play_count / 100.0 + 1.0) \
     / ((1.0 + CASE WHEN $1 > p.published_at THEN CAST($1 - p.published_at AS DOUBLE PRECISION) / 86400000.0 ELSE 0.0 END) \
      * (1.0 + CASE WHEN $1 > p.published_at THEN CAST($1 - p.published_at AS DOUBLE PRECISION) / 86400000.0 ELSE 0.0 END))";

const FROM: &str = "square_posts p JOIN works w ON w.id = p.id JOIN users u ON u.id = p.user_id";
const VISIBLE: &str = "w.deleted_at IS NULL AND w.status = 'completed' AND u.is_active = 1";

/// The columns of a [`SquareItem`]: the work's (prefixed), the post's own, the author's.
fn item_columns() -> String {
    let work: Vec<String> = WORK_COLUMNS.split(',').map(|c| format!("w.{}", c.trim())).collect();
    format!(
        "{}, p.description, p.like_count, p.favorite_count, p.play_count, p.published_at, p.updated_at AS post_updated_at, \
         u.username AS author_username, u.full_name AS author_full_name, u.avatar_url AS author_avatar",
        work.join(", ")
    )
}

impl Db {
    /// Shares one of `post.user_id`'s completed works (or edits the description of a shared
    /// one), setting `is_public` with it.
    pub async fn publish_post(&self, post: &NewPost) -> Result<Publish, StoreError> {
        let mut tx = self.begin_write(&scope(&post.work_id)).await?;
        let row = sqlx::query(
            "UPDATE works SET is_public = 1, updated_at = $3 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL \
             RETURNING kind, title, status",
        )
        .bind(&post.work_id)
        .bind(&post.user_id)
        .bind(post.at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(Publish::NoWork) };
        let status: String = row.try_get("status")?;
        if status != "completed" {
            // Dropping the transaction rolls the flag back.
            return Ok(Publish::NotCompleted);
        }
        let exists = sqlx::query("SELECT 1 AS one FROM square_posts WHERE id = $1").bind(&post.work_id).fetch_optional(&mut *tx).await?;
        let outcome = if exists.is_some() {
            sqlx::query("UPDATE square_posts SET description = COALESCE($2, description), updated_at = $3 WHERE id = $1")
                .bind(&post.work_id)
                .bind(post.description.as_deref())
                .bind(post.at)
                .execute(&mut *tx)
                .await?;
            Publish::Updated
        } else {
            let kind: String = row.try_get("kind")?;
            let title: String = row.try_get("title")?;
            let description = post.description.clone().unwrap_or(title);
            insert_post(&mut tx, &post.work_id, &post.user_id, &kind, &description, post.at).await?;
            Publish::Created
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Takes one of `user_id`'s works off the square (its reactions go with it) and clears
    /// `is_public`. `false`: it is not a shared work of this user.
    pub async fn withdraw_post(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write(&scope(id)).await?;
        let done = sqlx::query("UPDATE works SET is_public = 0, updated_at = $3 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL")
            .bind(id)
            .bind(user_id)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let removed = remove_post_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// A visible post.
    pub async fn square_item(&self, id: &str) -> Result<Option<SquareItem>, StoreError> {
        let sql = format!("SELECT {} FROM {FROM} WHERE p.id = $1 AND {VISIBLE}", item_columns());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.pool()).await?;
        row.as_ref().map(item_from_row).transpose()
    }

    /// A page of visible posts. Ties (same score or time) are broken by id, so pages neither
    /// repeat nor skip posts while nothing changes.
    pub async fn square_feed(&self, filter: &FeedFilter, page: PageRequest) -> Result<Page<SquareItem>, StoreError> {
        // The count binds the filters from `$1`; the page binds the ranking's time first.
        let mut texts: Vec<String> = Vec::new();
        let mut kinds = Vec::new();
        if let Some(kind) = filter.kind {
            texts.push(kind.as_str().to_owned());
            kinds.push("p.kind");
        }
        if let Some(author) = &filter.author {
            texts.push(author.clone());
            kinds.push("p.user_id");
        }
        let cond = |first: usize| {
            let mut clauses = vec![VISIBLE.to_owned()];
            clauses.extend(kinds.iter().enumerate().map(|(i, column)| format!("{column} = ${}", first + i)));
            clauses.join(" AND ")
        };
        let bind = |sql: String, now: Option<i64>| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(now) = now {
                q = q.bind(now);
            }
            for t in &texts {
                q = q.bind(t.clone());
            }
            q
        };
        let total: i64 =
            bind(format!("SELECT COUNT(*) AS n FROM {FROM} WHERE {}", cond(1)), None).fetch_one(self.pool()).await?.try_get("n")?;
        let order = match filter.sort {
            FeedSort::Latest => "p.published_at DESC, p.id DESC",
            FeedSort::Hot => "hot_score DESC, p.published_at DESC, p.id DESC",
        };
        let n = texts.len() + 2;
        let sql = format!(
            "SELECT {}, {HOT_SCORE} AS hot_score FROM {FROM} WHERE {} ORDER BY {order} LIMIT ${n} OFFSET ${}",
            item_columns(),
            cond(2),
            n + 1
        );
        let rows = bind(sql, Some(filter.now)).bind(page.limit()).bind(page.offset()).fetch_all(self.pool()).await?;
        let items = rows.iter().map(item_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// `user_id`'s like or favorite of a visible post, as `op` asks; the post's counter moves
    /// with it in one transaction. `None`: no such visible post.
    pub async fn react(&self, post_id: &str, user_id: &str, kind: ReactionKind, op: ReactionOp) -> Result<Option<Reaction>, StoreError> {
        let mut tx = self.begin_write(&scope(post_id)).await?;
        // Locks the post's row for the rest of the transaction (PostgreSQL), so reactions to
        // it run one at a time, and a concurrent withdrawal either waits or has happened.
        let visible = format!(
            "UPDATE square_posts SET updated_at = updated_at WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM works w JOIN users u ON u.id = w.user_id WHERE w.id = $1 AND {VISIBLE})"
        );
        if sqlx::query(sqlx::AssertSqlSafe(visible)).bind(post_id).execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(None);
        }
        let present = sqlx::query("SELECT 1 AS one FROM square_reactions WHERE post_id = $1 AND user_id = $2 AND kind = $3")
            .bind(post_id)
            .bind(user_id)
            .bind(kind.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let want = match op {
            ReactionOp::Toggle => !present,
            ReactionOp::Set(on) => on,
        };
        let delta: i64 = match (present, want) {
            (false, true) => {
                sqlx::query("INSERT INTO square_reactions (post_id, user_id, kind, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(post_id)
                    .bind(user_id)
                    .bind(kind.as_str())
                    .bind(crate::now_ms())
                    .execute(&mut *tx)
                    .await?;
                1
            }
            (true, false) => {
                sqlx::query("DELETE FROM square_reactions WHERE post_id = $1 AND user_id = $2 AND kind = $3")
                    .bind(post_id)
                    .bind(user_id)
                    .bind(kind.as_str())
                    .execute(&mut *tx)
                    .await?;
                -1
            }
            _ => 0,
        };
        let counter = kind.counter();
        let sql = format!("UPDATE square_posts SET {counter} = {counter} + $2 WHERE id = $1 RETURNING {counter} AS n");
        let count: i64 = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(post_id).bind(delta).fetch_one(&mut *tx).await?.try_get("n")?;
        tx.commit().await?;
        Ok(Some(Reaction { on: want, count: u64::try_from(count).unwrap_or(0) }))
    }

    /// Which of `post_ids` `user_id` liked or favorited.
    pub async fn reactions_of(&self, user_id: &str, post_ids: &[String]) -> Result<Vec<(String, ReactionKind)>, StoreError> {
        if post_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (0..post_ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("SELECT post_id, kind FROM square_reactions WHERE user_id = $1 AND post_id IN ({})", list.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
        for id in post_ids {
            q = q.bind(id.clone());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let kind = ReactionKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("square_reactions.kind = {kind:?}")))?;
                Ok((r.try_get("post_id")?, kind))
            })
            .collect()
    }

    /// Adds `plays` to a post's count: one statement, however many plays. `false`: the post
    /// is gone (withdrawn or deleted), and its plays with it.
    pub async fn add_plays(&self, id: &str, plays: u64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE square_posts SET play_count = play_count + $2 WHERE id = $1")
            .bind(id)
            .bind(i64::try_from(plays).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The write scope of one work's post (see [`Db::begin_write`]).
fn scope(id: &str) -> String {
    format!("square:{id}")
}

async fn insert_post(tx: &mut WriteTx, id: &str, user_id: &str, kind: &str, description: &str, at: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO square_posts (id, user_id, kind, description, published_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind)
    .bind(description)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Seed 001's `is_public` edit, in the transaction that made it (after its `UPDATE works`, so
/// the work's row is locked first): on shares the work with its title as the description,
/// off withdraws it.
pub(crate) async fn set_public_in(tx: &mut WriteTx, work_id: &str, public: bool, at: i64) -> Result<(), StoreError> {
    if !public {
        remove_post_in(tx, work_id).await?;
        return Ok(());
    }
    let row = sqlx::query("SELECT user_id, kind, title FROM works WHERE id = $1").bind(work_id).fetch_one(&mut **tx).await?;
    let (user_id, kind, title): (String, String, String) = (row.try_get("user_id")?, row.try_get("kind")?, row.try_get("title")?);
    insert_post(tx, work_id, &user_id, &kind, &title, at).await
}

/// Removes a work's post and (by cascade) its reactions. `true`: there was one.
pub(crate) async fn remove_post_in(tx: &mut WriteTx, work_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM square_posts WHERE id = $1").bind(work_id).execute(&mut **tx).await?;
    Ok(done.rows_affected() == 1)
}

fn count(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("square_posts.{column} = {v}")))
}

fn item_from_row(row: &AnyRow) -> Result<SquareItem, StoreError> {
    let work = work_from_row(row)?;
    let username: Option<String> = row.try_get("author_username")?;
    let full_name: Option<String> = row.try_get("author_full_name")?;
    let post = Post {
        id: work.id.clone(),
        user_id: work.user_id.clone(),
        kind: work.kind,
        description: row.try_get("description")?,
        like_count: count(row, "like_count")?,
        favorite_count: count(row, "favorite_count")?,
        play_count: count(row, "play_count")?,
        published_at: row.try_get("published_at")?,
        updated_at: row.try_get("post_updated_at")?,
    };
    let author = Author {
        id: work.user_id.clone(),
        name: username.filter(|n| !n.is_empty()).or(full_name.filter(|n| !n.is_empty())),
        avatar_url: row.try_get("author_avatar")?,
    };
    Ok(SquareItem { post, work, author })
}
