//! The square on SQLite and PostgreSQL: only a user's own completed works are shared, and
//! `works.is_public` follows every way of sharing and withdrawing (seed 001's edit too);
//! deleting a work takes it off the square and lets the row be purged; feeds filter, page
//! and rank (latest, hot) with ties broken by id and hidden authors left out; reactions are
//! idempotent per user and their counters stay exact under concurrent toggles from many
//! users; plays are added in one statement.

use std::collections::BTreeSet;

use purrify_api::TaskStatus;
use purrify_store::testing::{TestDb, create_user};
use purrify_store::{
    AdminChange, Db, FeedFilter, FeedSort, NewPost, NewWork, PageRequest, ProfileChange, Publish, ReactionKind, ReactionOp, WorkChange,
    WorkFile, WorkKind, now_ms, on_both_databases,
};

const DAY: i64 = 86_400_000;

/// A work of `user`; completed (with a file) unless `done` is false.
async fn work(db: &Db, id: &str, user: &str, kind: WorkKind, done: bool) {
    let w = NewWork {
        id: id.into(),
        user_id: user.into(),
        task_id: format!("task-{id}"),
        kind,
        title: format!("title {id}"),
        status: TaskStatus::Processing,
        error_message: None,
        media_key: format!("key-{id}"),
        created_at: now_ms(),
    };
    assert!(db.insert_work(&w).await.unwrap());
    if done {
        let file = WorkFile { uri: format!("file:///works/{id}/output"), content_type: "image/jpeg".into(), width: 8, height: 8, size: 10 };
        assert!(db.complete_work(id, &file).await.unwrap());
    }
}

fn post(work: &str, user: &str, description: Option<&str>, at: i64) -> NewPost {
    NewPost { work_id: work.into(), user_id: user.into(), description: description.map(str::to_owned), at }
}

async fn is_public(db: &Db, id: &str) -> bool {
    db.work(id).await.unwrap().unwrap().is_public
}

on_both_databases!(
    only_own_completed_works_are_shared_and_is_public_follows,
    deleting_a_work_takes_it_off_the_square,
    feeds_filter_page_and_rank,
    reactions_are_idempotent_and_counts_exact_under_concurrency,
    plays_are_added_in_one_statement,
);

async fn only_own_completed_works_are_shared_and_is_public_follows(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    create_user(db, "u2").await;
    work(db, "w1", "u1", WorkKind::Image, true).await;
    work(db, "w2", "u1", WorkKind::Video, false).await;
    work(db, "w3", "u2", WorkKind::Video, true).await;
    let now = now_ms();

    assert_eq!(db.publish_post(&post("w2", "u1", None, now)).await.unwrap(), Publish::NotCompleted);
    assert!(!is_public(db, "w2").await, "a refused publish leaves the flag");
    assert_eq!(db.publish_post(&post("w1", "u2", None, now)).await.unwrap(), Publish::NoWork, "someone else's work");
    assert_eq!(db.publish_post(&post("nope", "u1", None, now)).await.unwrap(), Publish::NoWork);
    assert!(db.square_item("w1").await.unwrap().is_none());

    assert_eq!(db.publish_post(&post("w1", "u1", Some("my cat"), now)).await.unwrap(), Publish::Created);
    assert!(is_public(db, "w1").await);
    let item = db.square_item("w1").await.unwrap().unwrap();
    assert_eq!((item.post.description.as_str(), item.post.kind, item.post.published_at), ("my cat", WorkKind::Image, now));
    assert_eq!((item.author.id.as_str(), item.author.name.as_deref()), ("u1", None));
    assert_eq!(item.work.media_key, "key-w1");
    // Publishing again edits the description only when one is given; the time stays.
    assert_eq!(db.publish_post(&post("w1", "u1", None, now + 5)).await.unwrap(), Publish::Updated);
    assert_eq!(db.square_item("w1").await.unwrap().unwrap().post.description, "my cat");
    assert_eq!(db.publish_post(&post("w1", "u1", Some("my best cat"), now + 6)).await.unwrap(), Publish::Updated);
    let item = db.square_item("w1").await.unwrap().unwrap();
    assert_eq!((item.post.description.as_str(), item.post.published_at), ("my best cat", now));

    // Seed 001's edit shares (the title is the description) and withdraws.
    let w = db.update_work(Some("u2"), "w3", &WorkChange { is_public: Some(true), ..Default::default() }).await.unwrap().unwrap();
    assert!(w.is_public);
    assert_eq!(db.square_item("w3").await.unwrap().unwrap().post.description, "title w3");
    assert!(db.update_work(Some("u1"), "w3", &WorkChange { is_public: Some(false), ..Default::default() }).await.unwrap().is_none());
    assert!(db.square_item("w3").await.unwrap().is_some(), "not u1's to withdraw");
    db.update_work(Some("u2"), "w3", &WorkChange { is_public: Some(false), ..Default::default() }).await.unwrap().unwrap();
    assert!(db.square_item("w3").await.unwrap().is_none());
    assert!(!is_public(db, "w3").await);

    // Withdrawing: the owner only; its reactions go with it, so sharing again starts afresh.
    db.react("w1", "u2", ReactionKind::Like, ReactionOp::Set(true)).await.unwrap().unwrap();
    assert!(!db.withdraw_post("u2", "w1").await.unwrap());
    assert!(db.square_item("w1").await.unwrap().is_some());
    assert!(db.withdraw_post("u1", "w1").await.unwrap());
    assert!(!is_public(db, "w1").await);
    assert!(db.square_item("w1").await.unwrap().is_none());
    assert!(!db.withdraw_post("u1", "w1").await.unwrap(), "withdrawn once");
    assert_eq!(db.react("w1", "u2", ReactionKind::Like, ReactionOp::Toggle).await.unwrap(), None, "no post, no reaction");
    assert_eq!(db.publish_post(&post("w1", "u1", None, now + 10)).await.unwrap(), Publish::Created);
    let item = db.square_item("w1").await.unwrap().unwrap();
    assert_eq!((item.post.like_count, item.post.description.as_str()), (0, "title w1"));
    assert!(db.reactions_of("u2", &["w1".into()]).await.unwrap().is_empty());
}

async fn deleting_a_work_takes_it_off_the_square(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    create_user(db, "u2").await;
    work(db, "w1", "u1", WorkKind::Image, true).await;
    work(db, "w2", "u1", WorkKind::Image, true).await;
    for w in ["w1", "w2"] {
        assert_eq!(db.publish_post(&post(w, "u1", None, now_ms())).await.unwrap(), Publish::Created);
        db.react(w, "u2", ReactionKind::Favorite, ReactionOp::Set(true)).await.unwrap().unwrap();
    }
    db.delete_works("u1", &["w1".into()]).await.unwrap();
    assert!(db.square_item("w1").await.unwrap().is_none());
    assert_eq!(db.reactions_of("u2", &["w1".into(), "w2".into()]).await.unwrap(), [("w2".to_owned(), ReactionKind::Favorite)]);
    let all = FeedFilter { kind: None, author: None, sort: FeedSort::Latest, now: now_ms() };
    assert_eq!(db.square_feed(&all, PageRequest::default()).await.unwrap().total, 1);
    assert!(!db.withdraw_post("u1", "w1").await.unwrap(), "a deleted work is not withdrawn");
    assert_eq!(db.publish_post(&post("w1", "u1", None, now_ms())).await.unwrap(), Publish::NoWork);
    // The deleted work's row can be purged (nothing of the square holds on to it); the other
    // work and its post stay.
    for q in db.deletions_due(i64::MAX, 10).await.unwrap() {
        db.deletion_done(&q.uri).await.unwrap();
    }
    assert_eq!(db.purge_deleted_works(i64::MAX).await.unwrap(), 1);
    assert!(db.square_item("w2").await.unwrap().is_some());
}

async fn feeds_filter_page_and_rank(t: TestDb) {
    let db = &t.db;
    for u in ["u1", "u2", "u3"] {
        create_user(db, u).await;
    }
    let change = ProfileChange { username: Some("Alice".into()), full_name: None, avatar_url: Some("https://a.example/a.png".into()) };
    db.update_profile("u1", &change).await.unwrap();
    let now = now_ms();
    // p0..p5: u1 has p0 p1 p2, u2 p3 p4, u3 p5; p1 and p4 are videos; p0 is oldest (5 days),
    // p5 newest. p2 and p3 share a time, so the id decides between them.
    let at = [now - 5 * DAY, now - 4 * DAY, now - 2 * DAY, now - 2 * DAY, now - DAY, now - 1000];
    let owner = ["u1", "u1", "u1", "u2", "u2", "u3"];
    for i in 0..6 {
        let id = format!("p{i}");
        let kind = if i == 1 || i == 4 { WorkKind::Video } else { WorkKind::Image };
        work(db, &id, owner[i], kind, true).await;
        assert_eq!(db.publish_post(&post(&id, owner[i], None, at[i])).await.unwrap(), Publish::Created);
    }
    work(db, "private", "u1", WorkKind::Image, true).await;

    let ids = |page: &purrify_store::Page<purrify_store::SquareItem>| page.items.iter().map(|i| i.post.id.clone()).collect::<Vec<_>>();
    let feed = |kind, author: Option<&str>, sort| FeedFilter { kind, author: author.map(str::to_owned), sort, now };
    let latest = db.square_feed(&feed(None, None, FeedSort::Latest), PageRequest::default()).await.unwrap();
    assert_eq!(latest.total, 6);
    assert_eq!(ids(&latest), ["p5", "p4", "p3", "p2", "p1", "p0"], "newest first, p3 before p2 by id");
    let alice = &latest.items[5];
    assert_eq!((alice.author.name.as_deref(), alice.author.avatar_url.as_deref()), (Some("Alice"), Some("https://a.example/a.png")));
    let page2 = db.square_feed(&feed(None, None, FeedSort::Latest), PageRequest::new(Some(2), Some(4))).await.unwrap();
    assert_eq!((page2.total, ids(&page2)), (6, vec!["p1".to_owned(), "p0".to_owned()]));
    let videos = db.square_feed(&feed(Some(WorkKind::Video), None, FeedSort::Latest), PageRequest::default()).await.unwrap();
    assert_eq!((videos.total, ids(&videos)), (2, vec!["p4".to_owned(), "p1".to_owned()]));
    let u1 = db.square_feed(&feed(None, Some("u1"), FeedSort::Latest), PageRequest::default()).await.unwrap();
    assert_eq!(ids(&u1), ["p2", "p1", "p0"]);
    let u1_images = db.square_feed(&feed(Some(WorkKind::Image), Some("u1"), FeedSort::Latest), PageRequest::default()).await.unwrap();
    assert_eq!((u1_images.total, ids(&u1_images)), (2, vec!["p2".to_owned(), "p0".to_owned()]));

    // Hot: without engagement it is the latest order. Then p0 (5 days old) gets 10 likes and
    // 10 favorites (score 31/36 = 0.86), p2 (2 days) 3 likes (4/9 = 0.44), p4 (1 day) 400
    // plays (5/4 = 1.25), above p5 (new, none: 1.0); p3 1/9, p1 1/25.
    let hot = db.square_feed(&feed(None, None, FeedSort::Hot), PageRequest::default()).await.unwrap();
    assert_eq!(ids(&hot), ids(&latest));
    let mut fans = Vec::new();
    for i in 0..10 {
        let fan = format!("fan{i}");
        create_user(db, &fan).await;
        fans.push(fan);
    }
    for fan in &fans {
        db.react("p0", fan, ReactionKind::Like, ReactionOp::Set(true)).await.unwrap().unwrap();
        db.react("p0", fan, ReactionKind::Favorite, ReactionOp::Set(true)).await.unwrap().unwrap();
    }
    for fan in &fans[..3] {
        db.react("p2", fan, ReactionKind::Like, ReactionOp::Set(true)).await.unwrap().unwrap();
    }
    assert!(db.add_plays("p4", 400).await.unwrap());
    let hot = db.square_feed(&feed(None, None, FeedSort::Hot), PageRequest::default()).await.unwrap();
    assert_eq!(ids(&hot), ["p4", "p5", "p0", "p2", "p3", "p1"]);
    // A week later everything has aged and engagement weighs more: p0 31/169, p4 5/81,
    // p2 4/100, p5 1/64, p3 1/100, p1 1/144.
    let later = FeedFilter { now: now + 7 * DAY, ..feed(None, None, FeedSort::Hot) };
    let hot = db.square_feed(&later, PageRequest::default()).await.unwrap();
    assert_eq!(ids(&hot), ["p0", "p4", "p2", "p5", "p3", "p1"]);
    let hot_videos = db.square_feed(&FeedFilter { kind: Some(WorkKind::Video), ..later }, PageRequest::default()).await.unwrap();
    assert_eq!(ids(&hot_videos), ["p4", "p1"]);

    // A deactivated author's posts leave the square and take no reactions; back when reactivated.
    db.admin_update_user("u2", AdminChange { active: Some(false), ..Default::default() }).await.unwrap().unwrap();
    let latest = db.square_feed(&feed(None, None, FeedSort::Latest), PageRequest::default()).await.unwrap();
    assert_eq!((latest.total, ids(&latest)), (4, vec!["p5".to_owned(), "p2".to_owned(), "p1".to_owned(), "p0".to_owned()]));
    assert!(db.square_item("p3").await.unwrap().is_none());
    assert_eq!(db.react("p3", "u1", ReactionKind::Like, ReactionOp::Toggle).await.unwrap(), None);
    db.admin_update_user("u2", AdminChange { active: Some(true), ..Default::default() }).await.unwrap().unwrap();
    assert_eq!(db.square_feed(&feed(None, None, FeedSort::Latest), PageRequest::default()).await.unwrap().total, 6);
}

async fn reactions_are_idempotent_and_counts_exact_under_concurrency(t: TestDb) {
    let db = &t.db;
    create_user(db, "owner").await;
    work(db, "w", "owner", WorkKind::Video, true).await;
    assert_eq!(db.publish_post(&post("w", "owner", None, now_ms())).await.unwrap(), Publish::Created);

    let like = |user: &'static str, op| async move { db.react("w", user, ReactionKind::Like, op).await.unwrap().unwrap() };
    create_user(db, "solo").await;
    let r = like("solo", ReactionOp::Set(true)).await;
    assert_eq!((r.on, r.count), (true, 1));
    assert_eq!((like("solo", ReactionOp::Set(true)).await.count), 1, "liking twice counts once");
    let r = like("solo", ReactionOp::Toggle).await;
    assert_eq!((r.on, r.count), (false, 0));
    let r = like("solo", ReactionOp::Set(false)).await;
    assert_eq!((r.on, r.count), (false, 0), "un-liking what is not liked is a no-op");
    let r = like("solo", ReactionOp::Toggle).await;
    assert_eq!((r.on, r.count), (true, 1));
    let fav = db.react("w", "solo", ReactionKind::Favorite, ReactionOp::Toggle).await.unwrap().unwrap();
    assert_eq!((fav.on, fav.count), (true, 1), "favorites count apart from likes");

    // 30 users at once: user i toggles its like i % 4 + 1 times and sets its favorite on; a
    // second replica's pool takes half of them. Each user's own toggles run concurrently too.
    let other = t.reopen().await;
    let users: Vec<String> = (0..30).map(|i| format!("user{i:02}")).collect();
    for u in &users {
        create_user(db, u).await;
    }
    let mut calls = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let pool = if i % 2 == 0 { db.clone() } else { other.clone() };
        for _ in 0..(i % 4 + 1) {
            let (pool, u) = (pool.clone(), u.clone());
            calls.push(tokio::spawn(async move { pool.react("w", &u, ReactionKind::Like, ReactionOp::Toggle).await.unwrap().unwrap() }));
        }
        let u = u.clone();
        calls.push(tokio::spawn(async move { pool.react("w", &u, ReactionKind::Favorite, ReactionOp::Set(true)).await.unwrap().unwrap() }));
    }
    for c in calls {
        c.await.unwrap();
    }
    // Odd toggle counts (i % 4 + 1 in {1, 3}: i even) end liked.
    let liked: BTreeSet<&str> = users.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(_, u)| u.as_str()).collect();
    let item = db.square_item("w").await.unwrap().unwrap();
    assert_eq!((item.post.like_count, item.post.favorite_count), (liked.len() as u64 + 1, users.len() as u64 + 1));
    for u in &users {
        let mine = db.reactions_of(u, &["w".into()]).await.unwrap();
        assert_eq!(mine.contains(&("w".to_owned(), ReactionKind::Like)), liked.contains(u.as_str()), "{u}");
        assert!(mine.contains(&("w".to_owned(), ReactionKind::Favorite)), "{u}");
    }
}

async fn plays_are_added_in_one_statement(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    work(db, "w", "u1", WorkKind::Video, true).await;
    assert!(!db.add_plays("w", 3).await.unwrap(), "not on the square");
    assert_eq!(db.publish_post(&post("w", "u1", None, now_ms())).await.unwrap(), Publish::Created);
    assert!(db.add_plays("w", 3).await.unwrap());
    assert!(db.add_plays("w", 136_697).await.unwrap());
    assert_eq!(db.square_item("w").await.unwrap().unwrap().post.play_count, 136_700);
}
