//! The assistant over hand-made token streams (the provider service's fakes are exercised by
//! `tests/assistant_api.rs`): event order, what is stored for every way an answer ends, that
//! dropping the stream drops the upstream stream, and the bounds.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use purrify_store::conversations::MessageRole;
use tokio::sync::oneshot;

use super::*;
use crate::domain::providers::adapter::ProviderError;

/// Answers from a script, one per call, recording what each call was sent.
#[derive(Default)]
struct Scripted {
    replies: Mutex<VecDeque<DomainResult<ChatReply>>>,
    sent: Mutex<Vec<Vec<ChatMessage>>>,
}

impl Scripted {
    fn push(&self, reply: DomainResult<ChatReply>) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn sent(&self) -> Vec<Vec<ChatMessage>> {
        self.sent.lock().unwrap().clone()
    }
}

impl ChatSource for Scripted {
    fn chat(&self, messages: Vec<ChatMessage>) -> BoxFut<'_, DomainResult<ChatReply>> {
        self.sent.lock().unwrap().push(messages);
        let reply = self.replies.lock().unwrap().pop_front().expect("a scripted reply");
        Box::pin(async move { reply })
    }
}

fn answer(tokens: impl Stream<Item = Result<String, ProviderError>> + Send + 'static) -> DomainResult<ChatReply> {
    Ok(ChatReply { provider: "scripted".into(), model: "script-1".into(), tokens: Box::pin(tokens) })
}

fn words(ws: &[&str]) -> DomainResult<ChatReply> {
    let items: Vec<Result<String, ProviderError>> = ws.iter().map(|w| Ok((*w).to_owned())).collect();
    answer(futures::stream::iter(items))
}

/// Sends on the channel when dropped: the upstream stream's end, observed.
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Yields `ws`, then waits for ever (a provider that went quiet); signals when dropped.
fn then_silence(ws: &'static [&'static str]) -> (DomainResult<ChatReply>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let tokens = async_stream::stream! {
        let _signal = DropSignal(Some(tx));
        for w in ws {
            yield Ok((*w).to_owned());
        }
        futures::future::pending::<()>().await;
    };
    (answer(tokens), rx)
}

async fn service(settings: AssistantSettings) -> (AssistantService, Arc<Scripted>, Db) {
    let db = Db::connect("sqlite::memory:").await.unwrap();
    purrify_store::testing::create_user(&db, "alice").await;
    purrify_store::testing::create_user(&db, "bob").await;
    let source = Arc::new(Scripted::default());
    (AssistantService::new(db.clone(), source.clone(), settings), source, db)
}

async fn events(s: &AssistantService, user: &str, message: &str, conversation: Option<&str>) -> Vec<ChatEvent> {
    s.chat(user, message, conversation, CancellationToken::new()).await.unwrap().collect().await
}

fn conversation_of(events: &[ChatEvent]) -> String {
    match events.last() {
        Some(ChatEvent::Done { conversation_id } | ChatEvent::Error { conversation_id, .. }) => conversation_id.clone(),
        other => panic!("the stream ended with {other:?}"),
    }
}

fn token(t: &str) -> ChatEvent {
    ChatEvent::Token(t.into())
}

/// (role, content, complete) of a conversation's messages.
async fn stored(db: &Db, id: &str) -> Vec<(MessageRole, String, bool)> {
    db.conversation_messages(id, None).await.unwrap().into_iter().map(|m| (m.role, m.content, m.complete)).collect()
}

#[tokio::test]
async fn an_answer_streams_is_stored_and_continues_with_its_history() {
    let (s, source, db) = service(AssistantSettings::default()).await;
    source.push(words(&["你", "", "好"]));
    let first = events(&s, "alice", "  说你好  ", None).await;
    let id = conversation_of(&first);
    assert_eq!(first, [token("你"), token("好"), ChatEvent::Done { conversation_id: id.clone() }], "empty fragments are not sent");
    assert_eq!(stored(&db, &id).await, [(MessageRole::User, "说你好".into(), true), (MessageRole::Assistant, "你好".into(), true)]);
    let c = db.user_conversation("alice", &id).await.unwrap().unwrap();
    assert_eq!(c.title, "说你好");

    source.push(words(&["again"]));
    let second = events(&s, "alice", "once more", Some(&id)).await;
    assert_eq!(second, [token("again"), ChatEvent::Done { conversation_id: id.clone() }]);
    let sent = source.sent();
    let roles: Vec<(&str, &str)> = sent[1].iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
    assert_eq!(roles, [("user", "说你好"), ("assistant", "你好"), ("user", "once more")], "the earlier turn goes along");
    assert_eq!(stored(&db, &id).await.len(), 4);
}

#[tokio::test]
async fn a_provider_error_mid_answer_ends_with_an_error_and_keeps_what_arrived() {
    let (s, source, db) = service(AssistantSettings::default()).await;
    let items = vec![Ok("Once ".to_owned()), Ok("upon".to_owned()), Err(ProviderError::Protocol("the provider's stream broke".into()))];
    source.push(answer(futures::stream::iter(items)));
    let ev = events(&s, "alice", "a story", None).await;
    let id = conversation_of(&ev);
    assert_eq!(ev[..2], [token("Once "), token("upon")]);
    let ChatEvent::Error { message, .. } = &ev[2] else { panic!("{ev:?}") };
    assert!(message.contains("the provider's stream broke"), "{message}");
    assert_eq!(ev.len(), 3, "the stream ends after the error");
    assert_eq!(stored(&db, &id).await[1], (MessageRole::Assistant, "Once upon".into(), false), "kept, marked incomplete");

    // An error before any token: the question stays, no answer is stored.
    source.push(answer(futures::stream::iter(vec![Err(ProviderError::Protocol("nothing came".into()))])));
    let ev = events(&s, "alice", "and then?", Some(&id)).await;
    assert!(matches!(ev.as_slice(), [ChatEvent::Error { .. }]), "{ev:?}");
    let roles: Vec<MessageRole> = stored(&db, &id).await.into_iter().map(|m| m.0).collect();
    assert_eq!(roles, [MessageRole::User, MessageRole::Assistant, MessageRole::User]);
}

#[tokio::test]
async fn no_provider_fails_before_the_stream_and_leaves_nothing() {
    let (s, source, db) = service(AssistantSettings::default()).await;
    source.push(Err(DomainError::Unavailable("no assistant provider is configured".into())));
    let err = s.chat("alice", "hello", None, CancellationToken::new()).await.err().expect("refused");
    assert!(matches!(err, DomainError::Unavailable(_)), "{err:?}");
    assert_eq!(db.conversations("alice", PageRequest::default()).await.unwrap().total, 0, "no conversation without an answer");

    source.push(words(&["hi"]));
    let id = conversation_of(&events(&s, "alice", "hello", None).await);
    source.push(Err(DomainError::Unavailable("every provider is down".into())));
    assert!(s.chat("alice", "still there?", Some(&id), CancellationToken::new()).await.is_err());
    assert_eq!(stored(&db, &id).await.len(), 2, "the refused question was taken back");
}

#[tokio::test]
async fn dropping_the_stream_drops_the_upstream_and_keeps_the_partial_answer() {
    let (s, source, db) = service(AssistantSettings::default()).await;
    let (reply, upstream_closed) = then_silence(&["half ", "an answer"]);
    source.push(reply);
    let mut stream = s.chat("alice", "tell me", None, CancellationToken::new()).await.unwrap();
    assert_eq!(stream.next().await, Some(token("half ")));
    assert_eq!(stream.next().await, Some(token("an answer")));
    drop(stream);
    upstream_closed.await.expect("the upstream stream was dropped");
    let id = db.conversations("alice", PageRequest::default()).await.unwrap().items[0].conversation.id.clone();
    let partial = purrify_testkit::eventually(30, "the partial answer stored", || async { stored(&db, &id).await.get(1).cloned() }).await;
    assert_eq!(partial, (MessageRole::Assistant, "half an answer".into(), false));
}

#[tokio::test]
async fn stopping_or_silence_ends_the_stream_with_an_error() {
    let settings = AssistantSettings { idle_timeout: Duration::from_millis(50), ..AssistantSettings::default() };
    let (s, source, db) = service(settings).await;
    // The gateway drains while the provider is quiet.
    let (reply, upstream_closed) = then_silence(&["partial"]);
    source.push(reply);
    let stop = CancellationToken::new();
    let mut stream = s.chat("alice", "hello", None, stop.clone()).await.unwrap();
    assert_eq!(stream.next().await, Some(token("partial")));
    stop.cancel();
    let Some(ChatEvent::Error { conversation_id, message }) = stream.next().await else { panic!("an error event") };
    assert!(message.contains("shutting down"), "{message}");
    assert_eq!(stream.next().await, None);
    upstream_closed.await.unwrap();
    assert_eq!(stored(&db, &conversation_id).await[1], (MessageRole::Assistant, "partial".into(), false));

    // A provider that goes quiet mid-answer.
    let (reply, _closed) = then_silence(&["so"]);
    source.push(reply);
    let ev = events(&s, "alice", "hello?", Some(&conversation_id)).await;
    assert_eq!(ev[0], token("so"));
    assert!(matches!(&ev[1], ChatEvent::Error { message, .. } if message.contains("stopped answering")), "{ev:?}");
}

#[tokio::test]
async fn messages_and_conversations_are_bounded() {
    let settings =
        AssistantSettings { max_message_chars: 10, max_conversation_messages: 4, max_answer_chars: 6, ..AssistantSettings::default() };
    let (s, source, db) = service(settings).await;
    for bad in ["", "   \n "] {
        assert!(matches!(s.chat("alice", bad, None, CancellationToken::new()).await, Err(DomainError::Invalid { field: "message", .. })));
    }
    let long = s.chat("alice", "12345678901", None, CancellationToken::new()).await.err().unwrap();
    assert!(long.to_string().contains("11 characters"), "{long}");
    assert!(source.sent().is_empty(), "refused messages never reach the provider");

    source.push(words(&["好的"]));
    let id = conversation_of(&events(&s, "alice", "一二三四五六七八九十", None).await);
    // Someone else's conversation is missing, and so is one that does not exist.
    for (user, conv) in [("bob", id.as_str()), ("alice", "nope")] {
        let e = s.chat(user, "hi", Some(conv), CancellationToken::new()).await.err().unwrap();
        assert!(matches!(e, DomainError::NotFound(_)), "{e:?}");
        assert!(matches!(s.conversation(user, conv).await, Err(DomainError::NotFound(_))));
    }
    // An answer past its bound is cut there and kept as incomplete.
    source.push(words(&["abc", "def", "ghi"]));
    let ev = events(&s, "alice", "more", Some(&id)).await;
    assert_eq!(ev[..2], [token("abc"), token("def")]);
    assert!(matches!(&ev[2], ChatEvent::Error { message, .. } if message.contains("longer than 6")), "{ev:?}");
    assert_eq!(stored(&db, &id).await[3], (MessageRole::Assistant, "abcdef".into(), false));
    // Four messages: full.
    let e = s.chat("alice", "and more", Some(&id), CancellationToken::new()).await.err().unwrap();
    assert!(matches!(e, DomainError::Invalid { field: "conversationId", .. }), "{e:?}");
}

#[tokio::test]
async fn the_provider_sees_the_latest_history_within_its_budget() {
    let settings = AssistantSettings {
        history_messages: 2,
        history_chars: 12,
        system_prompt: Some("be brief".into()),
        ..AssistantSettings::default()
    };
    let (s, source, _db) = service(settings).await;
    source.push(words(&["aaaa"]));
    let id = conversation_of(&events(&s, "alice", "q1", None).await);
    for (question, reply) in [("q2", "bbbbbbbbbbb"), ("q3", "cc"), ("a very long fourth question", "ok")] {
        source.push(words(&[reply]));
        events(&s, "alice", question, Some(&id)).await;
    }
    let sent = source.sent();
    let seen = |n: usize| sent[n].iter().map(|m| format!("{}:{}", m.role, m.content)).collect::<Vec<_>>();
    assert_eq!(seen(0), ["system:be brief", "user:q1"]);
    // Two messages at most: q1 would fit the characters but not the count.
    assert_eq!(seen(1), ["system:be brief", "assistant:aaaa", "user:q2"]);
    // 12 characters at most: the 11-character answer does not fit beside q3.
    assert_eq!(seen(2), ["system:be brief", "user:q3"]);
    // The newest always goes, however long.
    assert_eq!(seen(3), ["system:be brief", "user:a very long fourth question"]);
}

#[test]
fn titles_are_the_first_message_cut_short() {
    assert_eq!(title_of("hello", 30), "hello");
    assert_eq!(title_of("  line one\n\tline two ", 30), "line one line two");
    assert_eq!(title_of("一二三四五六", 4), "一二三四…");
    assert_eq!(title_of("abc def", 4), "abc…", "no space before the ellipsis");
}
