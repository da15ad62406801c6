//! The assistant's conversations on SQLite and PostgreSQL: messages round-trip in order (an
//! incomplete answer stays marked), lists are the owner's, most recently active first, with
//! counts and previews, only the owner appends, a withdrawn message leaves the conversation
//! as it was (or no conversation at all), and concurrent appends take distinct places
//! within the length limit.

use purrify_store::conversations::{Conversation, MessageRole, NewMessage, PREVIEW_CHARS};
use purrify_store::testing::TestDb;
use purrify_store::{Db, PageRequest, StoreError};

const T0: i64 = 1_800_000_000_000;

fn conversation(id: &str, user: &str, at: i64) -> Conversation {
    Conversation { id: id.into(), user_id: user.into(), title: format!("title of {id}"), created_at: at, updated_at: at }
}

fn user_says(text: &str, at: i64) -> NewMessage {
    NewMessage { role: MessageRole::User, content: text.into(), complete: true, provider: None, model: None, created_at: at }
}

fn answer(text: &str, complete: bool, at: i64) -> NewMessage {
    NewMessage {
        role: MessageRole::Assistant,
        content: text.into(),
        complete,
        provider: Some("fake".into()),
        model: Some("fake-chat".into()),
        created_at: at,
    }
}

async fn users(db: &Db) {
    purrify_store::testing::create_user(db, "alice").await;
    purrify_store::testing::create_user(db, "bob").await;
}

async fn messages_round_trip_in_order(t: TestDb) {
    let db = &t.db;
    users(db).await;
    db.start_conversation(&conversation("c1", "alice", T0), &user_says("你好", T0)).await.unwrap();
    assert_eq!(db.append_message("alice", "c1", &answer("你好！", true, T0 + 5), None).await.unwrap(), Some(2));
    assert_eq!(db.append_message("alice", "c1", &user_says("tell me more", T0 + 9), None).await.unwrap(), Some(3));
    assert_eq!(db.append_message("alice", "c1", &answer("Once upon", false, T0 + 12), None).await.unwrap(), Some(4));

    let all = db.conversation_messages("c1", None).await.unwrap();
    let seen: Vec<(i64, MessageRole, &str, bool)> = all.iter().map(|m| (m.seq, m.role, m.content.as_str(), m.complete)).collect();
    assert_eq!(
        seen,
        [
            (1, MessageRole::User, "你好", true),
            (2, MessageRole::Assistant, "你好！", true),
            (3, MessageRole::User, "tell me more", true),
            (4, MessageRole::Assistant, "Once upon", false),
        ]
    );
    assert_eq!((all[1].provider.as_deref(), all[1].model.as_deref()), (Some("fake"), Some("fake-chat")));
    assert_eq!((all[0].provider.as_deref(), all[0].created_at), (None, T0));
    // The latest two, still oldest first.
    let last: Vec<i64> = db.conversation_messages("c1", Some(2)).await.unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(last, [3, 4]);
    assert_eq!(db.conversation_messages("c1", Some(10)).await.unwrap().len(), 4);

    let c = db.user_conversation("alice", "c1").await.unwrap().expect("alice's own");
    assert_eq!((c.title.as_str(), c.created_at, c.updated_at), ("title of c1", T0, T0 + 12), "active as of its latest message");
    assert!(matches!(db.start_conversation(&conversation("c1", "bob", T0), &user_says("hi", T0)).await, Err(StoreError::Duplicate(_))));
}

async fn lists_are_the_owners_newest_first(t: TestDb) {
    let db = &t.db;
    users(db).await;
    for (n, at) in [(1, T0), (2, T0 + 10), (3, T0 + 20)] {
        db.start_conversation(&conversation(&format!("a{n}"), "alice", at), &user_says(&format!("question {n}"), at)).await.unwrap();
    }
    db.start_conversation(&conversation("b1", "bob", T0 + 30), &user_says("bob's", T0 + 30)).await.unwrap();
    // a1 becomes the most recently active; its preview is the start of its latest message.
    let long = "长".repeat(PREVIEW_CHARS + 50);
    db.append_message("alice", "a1", &answer(&long, true, T0 + 40), None).await.unwrap();

    let page = db.conversations("alice", PageRequest::new(Some(1), Some(2))).await.unwrap();
    assert_eq!((page.total, page.page, page.page_size), (3, 1, 2));
    let ids: Vec<&str> = page.items.iter().map(|s| s.conversation.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a3"]);
    assert_eq!(page.items[0].message_count, 2);
    assert_eq!(page.items[0].last_message.as_deref(), Some("长".repeat(PREVIEW_CHARS).as_str()), "cut at characters, not bytes");
    assert_eq!((page.items[1].message_count, page.items[1].last_message.as_deref()), (1, Some("question 3")));
    let second = db.conversations("alice", PageRequest::new(Some(2), Some(2))).await.unwrap();
    assert_eq!(second.items.iter().map(|s| s.conversation.id.as_str()).collect::<Vec<_>>(), ["a2"]);

    let bobs = db.conversations("bob", PageRequest::default()).await.unwrap();
    assert_eq!((bobs.total, bobs.items.len(), bobs.items[0].conversation.id.as_str()), (1, 1, "b1"));
    assert_eq!(db.conversations("nobody", PageRequest::default()).await.unwrap().total, 0);
}

async fn only_the_owner_reads_or_appends(t: TestDb) {
    let db = &t.db;
    users(db).await;
    db.start_conversation(&conversation("a1", "alice", T0), &user_says("mine", T0)).await.unwrap();
    assert_eq!(db.user_conversation("bob", "a1").await.unwrap(), None);
    assert_eq!(db.append_message("bob", "a1", &user_says("let me in", T0 + 1), None).await.unwrap(), None);
    assert_eq!(db.append_message("alice", "missing", &user_says("hello?", T0 + 1), None).await.unwrap(), None);
    assert_eq!(db.conversation_messages("a1", None).await.unwrap().len(), 1, "bob's append stored nothing");
}

async fn a_withdrawn_message_leaves_no_trace(t: TestDb) {
    let db = &t.db;
    users(db).await;
    // A first message withdrawn: the conversation goes with it.
    db.start_conversation(&conversation("gone", "alice", T0), &user_says("hello", T0)).await.unwrap();
    db.withdraw_message("gone", 1).await.unwrap();
    assert_eq!(db.user_conversation("alice", "gone").await.unwrap(), None);
    assert!(db.conversation_messages("gone", None).await.unwrap().is_empty());
    // A later one: the conversation's activity time returns to what remains.
    db.start_conversation(&conversation("kept", "alice", T0), &user_says("hello", T0)).await.unwrap();
    db.append_message("alice", "kept", &answer("hi", true, T0 + 3), None).await.unwrap();
    let seq = db.append_message("alice", "kept", &user_says("again", T0 + 50), None).await.unwrap().unwrap();
    db.withdraw_message("kept", seq).await.unwrap();
    let c = db.user_conversation("alice", "kept").await.unwrap().unwrap();
    assert_eq!(c.updated_at, T0 + 3);
    assert_eq!(db.conversation_messages("kept", None).await.unwrap().len(), 2);
    // The next message takes the withdrawn place.
    assert_eq!(db.append_message("alice", "kept", &user_says("again", T0 + 60), None).await.unwrap(), Some(3));
}

async fn concurrent_appends_take_distinct_places_within_the_limit(t: TestDb) {
    let db = t.db.clone();
    users(&db).await;
    db.start_conversation(&conversation("c", "alice", T0), &user_says("first", T0)).await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move { db.append_message("alice", "c", &user_says(&format!("m{n}"), T0 + 1 + n), Some(8)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(seq)) => seqs.push(seq),
            Ok(None) => panic!("alice's conversation was not found"),
            Err(StoreError::LimitReached(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=8).collect::<Vec<i64>>(), "the limit of 8 holds; every place once");
    assert_eq!(refused, 5);
    // Without a limit (an answer to a question already admitted) the append goes through.
    assert_eq!(db.append_message("alice", "c", &answer("done", true, T0 + 100), None).await.unwrap(), Some(9));
}

purrify_store::on_both_databases!(
    messages_round_trip_in_order,
    lists_are_the_owners_newest_first,
    only_the_owner_reads_or_appends,
    a_withdrawn_message_leaves_no_trace,
    concurrent_appends_take_distinct_places_within_the_limit,
);
