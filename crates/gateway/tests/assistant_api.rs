//! Seed 003's AI assistant through the real router on SQLite and PostgreSQL, answering from
//! a fake OpenAI-compatible server configured as the assistant provider: the SSE token/done
//! sequence exactly as the seed shows it, a conversation continued with its history sent
//! upstream, lists and details that are the user's own, a provider failing mid-answer (an
//! error event, then the stream closes), a client that disconnects (the upstream request is
//! closed: the fake sees its stream abandoned), the gateway draining, and the refusals that
//! come before any stream (no provider, bad messages).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use purrify_gateway::app;
use purrify_testkit::eventually;
use purrify_testkit::providers::openai::{ChatEnd, ChatReply, FakeOpenAi};
use serde_json::{Value, json};
use support::client::*;
use support::*;
use tower::ServiceExt;

on_both!(
    an_answer_streams_as_the_seed_shows_and_is_kept,
    a_conversation_continues_with_its_history,
    conversations_are_listed_newest_first_and_only_to_their_owner,
    a_provider_failing_mid_answer_ends_the_stream_with_an_error,
    a_client_that_disconnects_stops_the_upstream_request,
    draining_ends_open_streams,
    refusals_come_before_any_stream,
);

const PASSWORD: &str = "correct horse 42";

/// A gateway whose assistant provider is a fake OpenAI-compatible server, configured by an
/// admin as seed 003 has it: a custom provider of protocol openai at the fake's URL with its
/// key, then chosen as `assistantProvider`.
async fn assistant_api(backend: Backend) -> (Api, FakeOpenAi) {
    let fake = FakeOpenAi::start("sk-test-assistant").await;
    let api = api_with(backend, |c| {
        c.allow_private_workers = true;
        c.providers.provider_key = Some("7a".repeat(32));
        c.bootstrap_admin_email = Some("root@example.com".into());
        c.bootstrap_admin_password = Some("root password 1".into());
    })
    .await;
    let login = api.post_json("/api/auth/admin/login", json!({"email": "root@example.com", "password": "root password 1"}), &[]).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let admin = login.body["data"]["access_token"].as_str().unwrap().to_owned();
    let custom = json!({
        "type": "assistant", "name": "Fake chat", "apiUrl": fake.base_url(), "apiKey": fake.key(),
        "config": {"protocol": "openai", "models": ["gpt-4o-mini"]},
    });
    let r = api.call("POST", "/api/v1/config/providers/custom", Some(&admin), Some(custom)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["data"]["id"].as_str().unwrap().to_owned();
    let r = api
        .call("PUT", "/api/v1/config/providers", Some(&admin), Some(json!({"assistantProvider": id, "assistantModel": "gpt-4o-mini"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["data"]["assistantProvider"], id);
    (api, fake)
}

/// A seed-003 user's access token.
async fn user(api: &Api, name: &str) -> String {
    let r = api
        .post_json("/api/v1/auth/register", json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}), &[])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["data"]["token"].as_str().unwrap().to_owned()
}

/// A chat request's response, its body not yet read.
async fn start_chat(api: &Api, token: &str, body: Value) -> axum::response::Response {
    let req = Request::post("/api/v1/assistant/chat")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    app::router(api.stack.state.clone()).oneshot(req).await.unwrap()
}

/// Reads SSE events off a body: each `data:` line's JSON, in order; comments (keep-alives)
/// are skipped. Events are taken as they arrive, so a caller can stop reading midway.
struct Events {
    body: Body,
    buffer: String,
}

impl Events {
    fn new(resp: axum::response::Response) -> Self {
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self { body: resp.into_body(), buffer: String::new() }
    }

    /// The next event's data; `None` once the stream has closed.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end).collect();
                self.buffer.drain(..2);
                let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                for l in block.lines() {
                    assert!(l.starts_with("data:") || l.starts_with(':'), "only data lines and comments are sent: {l:?}");
                }
                if data.is_empty() {
                    continue;
                }
                return Some(serde_json::from_str(&data.join("\n")).unwrap_or_else(|e| panic!("{e}: {block:?}")));
            }
            match self.body.frame().await {
                None => {
                    assert!(self.buffer.trim().is_empty(), "the stream ended inside an event: {:?}", self.buffer);
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("the stream reads").into_data() {
                        self.buffer.push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
                    }
                }
            }
        }
    }

    /// Every event up to the end of the stream.
    async fn all(mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

async fn chat(api: &Api, token: &str, body: Value) -> Vec<Value> {
    Events::new(start_chat(api, token, body).await).all().await
}

fn tokens(events: &[Value]) -> Vec<Value> {
    events.iter().filter(|e| e["type"] == "token").cloned().collect()
}

/// The conversation id a done (or error) event names.
fn conversation_of(events: &[Value]) -> String {
    events.last().and_then(|e| e["conversationId"].as_str()).unwrap_or_else(|| panic!("no conversation id: {events:?}")).to_owned()
}

fn assert_v1_error(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.body["code"], status.as_u16(), "{what}");
    assert_eq!(r.body["error"], code, "{what}: {}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    assert!(r.body["timestamp"].is_i64(), "{what}");
}

/// The chat requests the fake received, as JSON.
fn chat_requests(fake: &FakeOpenAi) -> Vec<Value> {
    fake.requests_to("/chat/completions").iter().map(|r| r.json().expect("a JSON request")).collect()
}

/// `(role, content)` of a request's messages.
fn roles(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

async fn an_answer_streams_as_the_seed_shows_and_is_kept(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["你", "好", "！"], ChatEnd::Done));
    let resp = start_chat(&api, &alice, json!({"message": "请用中文向我问好，谢谢你的帮助，这是一条相当长的第一条消息啊再见"})).await;
    assert_eq!(resp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-cache"));
    let events = Events::new(resp).all().await;
    let id = conversation_of(&events);
    assert_eq!(
        events,
        [
            json!({"type": "token", "content": "你"}),
            json!({"type": "token", "content": "好"}),
            json!({"type": "token", "content": "！"}),
            json!({"type": "done", "conversationId": id}),
        ]
    );
    let sent = chat_requests(&fake);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(roles(&sent[0]), [("user".to_owned(), "请用中文向我问好，谢谢你的帮助，这是一条相当长的第一条消息啊再见".to_owned())]);

    let d = api.call("GET", &format!("/api/v1/assistant/conversations/{id}"), Some(&alice), None).await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    assert_eq!(d.body["code"], 200);
    let c = &d.body["data"];
    assert_eq!(c["id"], id);
    assert_eq!(c["title"], "请用中文向我问好，谢谢你的帮助，这是一条相当长的第一条消息啊…", "the first 30 characters");
    let messages = c["messages"].as_array().unwrap();
    let seen: Vec<(&str, &str, bool)> =
        messages.iter().map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap(), m["complete"].as_bool().unwrap())).collect();
    assert_eq!(seen, [("user", "请用中文向我问好，谢谢你的帮助，这是一条相当长的第一条消息啊再见", true), ("assistant", "你好！", true)]);
    assert!(messages.iter().all(|m| m["createdAt"].as_str().is_some_and(|t| t.ends_with('Z'))), "{messages:?}");
}

async fn a_conversation_continues_with_its_history(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["Paris", "."], ChatEnd::Done));
    let id = conversation_of(&chat(&api, &alice, json!({"message": "What is the capital of France?"})).await);
    fake.script_chat(ChatReply::new(&["About ", "2.1 million", "."], ChatEnd::Done));
    let second = chat(&api, &alice, json!({"message": "And its population?", "conversationId": id})).await;
    assert_eq!(tokens(&second).len(), 3);
    assert_eq!(second.last().unwrap(), &json!({"type": "done", "conversationId": id}), "the same conversation");

    let sent = chat_requests(&fake);
    let history = roles(&sent[1]);
    let history: Vec<(&str, &str)> = history.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
    assert_eq!(
        history,
        [("user", "What is the capital of France?"), ("assistant", "Paris."), ("user", "And its population?")],
        "the earlier turn goes upstream"
    );
    let d = api.call("GET", &format!("/api/v1/assistant/conversations/{id}"), Some(&alice), None).await;
    let contents: Vec<&str> = d.body["data"]["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["What is the capital of France?", "Paris.", "And its population?", "About 2.1 million."]);
}

async fn conversations_are_listed_newest_first_and_only_to_their_owner(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    let bob = user(&api, "bob").await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        fake.script_chat(ChatReply::new(&[&format!("answer {n}")], ChatEnd::Done));
        ids.push(conversation_of(&chat(&api, &alice, json!({"message": format!("question {n}")})).await));
    }
    // The first conversation becomes the most recently active.
    fake.script_chat(ChatReply::new(&["again"], ChatEnd::Done));
    chat(&api, &alice, json!({"message": "follow-up", "conversationId": ids[0]})).await;
    fake.script_chat(ChatReply::new(&["hi bob"], ChatEnd::Done));
    let bobs = conversation_of(&chat(&api, &bob, json!({"message": "bob here"})).await);

    let list = api.call("GET", "/api/v1/assistant/conversations?page=1&pageSize=2", Some(&alice), None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let data = &list.body["data"];
    assert_eq!((data["total"].as_u64(), data["page"].as_u64(), data["pageSize"].as_u64()), (Some(3), Some(1), Some(2)));
    let items = data["list"].as_array().unwrap();
    assert_eq!(items[0]["id"], ids[0], "the continued conversation first: {items:?}");
    assert_eq!(
        (items[0]["title"].as_str(), items[0]["messageCount"].as_u64(), items[0]["lastMessage"].as_str()),
        (Some("question 1"), Some(4), Some("again"))
    );
    for key in ["createdAt", "updatedAt"] {
        assert!(items[0][key].as_str().is_some_and(|t| t.ends_with('Z')), "{key}");
    }
    let page2 = api.call("GET", "/api/v1/assistant/conversations?page=2&pageSize=2", Some(&alice), None).await;
    let mut all: Vec<&str> =
        items.iter().chain(page2.body["data"]["list"].as_array().unwrap()).map(|c| c["id"].as_str().unwrap()).collect();
    all.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(all, expected, "alice's three, bob's not among them");

    // Bob's list is his; alice's conversation is missing to him, to read or to continue.
    let list = api.call("GET", "/api/v1/assistant/conversations", Some(&bob), None).await;
    assert_eq!(list.body["data"]["list"].as_array().unwrap().iter().map(|c| c["id"].clone()).collect::<Vec<_>>(), [json!(bobs)]);
    let other = api.call("GET", &format!("/api/v1/assistant/conversations/{}", ids[0]), Some(&bob), None).await;
    assert_v1_error(&other, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "someone else's conversation");
    let requests = fake.request_count();
    let r = api.call("POST", "/api/v1/assistant/chat", Some(&bob), Some(json!({"message": "hijack", "conversationId": ids[0]}))).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "continuing someone else's conversation");
    assert_eq!(fake.request_count(), requests, "nothing went upstream");
    let missing = api.call("GET", "/api/v1/assistant/conversations/nope", Some(&alice), None).await;
    assert_v1_error(&missing, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "no such conversation");
    let anonymous = api.call("GET", "/api/v1/assistant/conversations", None, None).await;
    assert_v1_error(&anonymous, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "login required");
}

async fn a_provider_failing_mid_answer_ends_the_stream_with_an_error(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    for (end, what) in [
        (ChatEnd::Error("The server had an error processing your request.".into()), "an error event"),
        (ChatEnd::Break, "a broken connection"),
    ] {
        fake.script_chat(ChatReply::new(&["Once", " upon"], end));
        let events = chat(&api, &alice, json!({"message": format!("a story, ended by {what}")})).await;
        assert_eq!(tokens(&events), [json!({"type": "token", "content": "Once"}), json!({"type": "token", "content": " upon"})], "{what}");
        let last = events.last().unwrap();
        assert_eq!(last["type"], "error", "{what}: {events:?}");
        assert!(last["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        assert_eq!(events.len(), 3, "{what}: the stream closed after the error");
        let id = conversation_of(&events);
        let d = api.call("GET", &format!("/api/v1/assistant/conversations/{id}"), Some(&alice), None).await;
        let answer = &d.body["data"]["messages"][1];
        assert_eq!(
            (answer["content"].as_str(), answer["complete"].as_bool()),
            (Some("Once upon"), Some(false)),
            "{what}: kept, incomplete"
        );
    }
}

async fn a_client_that_disconnects_stops_the_upstream_request(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["I will ", "go on ", "for ever"], ChatEnd::Hang));
    let mut events = Events::new(start_chat(&api, &alice, json!({"message": "talk"})).await);
    for expected in ["I will ", "go on ", "for ever"] {
        assert_eq!(events.next().await.unwrap(), json!({"type": "token", "content": expected}));
    }
    assert_eq!(fake.disconnects(), 0, "the upstream stream is open while the client reads");
    drop(events);
    fake.wait_disconnects(1).await;
    // What the client saw is kept, marked incomplete.
    let list = api.call("GET", "/api/v1/assistant/conversations", Some(&alice), None).await;
    let id = list.body["data"]["list"][0]["id"].as_str().unwrap().to_owned();
    let answer = eventually(30, "the partial answer stored", || async {
        let d = api.call("GET", &format!("/api/v1/assistant/conversations/{id}"), Some(&alice), None).await;
        let m = d.body["data"]["messages"][1].clone();
        (!m.is_null()).then_some(m)
    })
    .await;
    assert_eq!((answer["content"].as_str(), answer["complete"].as_bool()), (Some("I will go on for ever"), Some(false)));
}

async fn draining_ends_open_streams(backend: Backend) {
    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    fake.script_chat(ChatReply::new(&["thinking"], ChatEnd::Hang));
    let mut events = Events::new(start_chat(&api, &alice, json!({"message": "take your time"})).await);
    assert_eq!(events.next().await.unwrap()["content"], "thinking");
    api.stack.state.draining.cancel();
    let last = events.next().await.unwrap();
    assert_eq!(last["type"], "error");
    assert!(last["message"].as_str().unwrap().contains("shutting down"), "{last}");
    assert_eq!(events.next().await, None, "the stream closed");
    fake.wait_disconnects(1).await;
    // New questions are refused while draining.
    let r = api.call("POST", "/api/v1/assistant/chat", Some(&alice), Some(json!({"message": "still there?"}))).await;
    assert_v1_error(&r, StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE", "draining");
}

async fn refusals_come_before_any_stream(backend: Backend) {
    // No assistant provider configured.
    let api = api(backend).await;
    let alice = user(&api, "alice").await;
    let r = api.call("POST", "/api/v1/assistant/chat", Some(&alice), Some(json!({"message": "hello?"}))).await;
    assert_v1_error(&r, StatusCode::SERVICE_UNAVAILABLE, "SERVER_UNAVAILABLE", "no provider");
    let list = api.call("GET", "/api/v1/assistant/conversations", Some(&alice), None).await;
    assert_eq!(list.body["data"]["total"], 0, "a refused request leaves no conversation");

    let (api, fake) = assistant_api(backend).await;
    let alice = user(&api, "alice").await;
    let anonymous = api.call("POST", "/api/v1/assistant/chat", None, Some(json!({"message": "hi"}))).await;
    assert_v1_error(&anonymous, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "login required");
    let too_long = api.call("POST", "/api/v1/assistant/chat", Some(&alice), Some(json!({"message": "字".repeat(8001)}))).await;
    assert_v1_error(&too_long, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "8,001 characters");
    assert!(too_long.body["message"].as_str().unwrap().contains("8000"), "{}", too_long.body);
    for (body, what) in [(json!({"message": "  "}), "blank"), (json!({}), "no message"), (json!({"message": 7}), "not text")] {
        let r = api.call("POST", "/api/v1/assistant/chat", Some(&alice), Some(body)).await;
        assert_v1_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", what);
    }
    let r = api.call("POST", "/api/v1/assistant/chat", Some(&alice), Some(json!({"message": "hi", "conversationId": "nope"}))).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "no such conversation");
    assert_eq!(fake.request_count(), 0, "nothing refused went upstream");
    // Exactly 8,000 characters are accepted.
    fake.script_chat(ChatReply::new(&["ok"], ChatEnd::Done));
    let events = chat(&api, &alice, json!({"message": "字".repeat(8000)})).await;
    assert_eq!(events.last().unwrap()["type"], "done");
}
