//! Seed 003's square through the router on SQLite and PostgreSQL: sharing (own completed
//! works only, seed 001's is_public kept in step) and withdrawing; public feeds by type,
//! author, page and sort, with the works' media URLs and no storage URI; likes and favorites
//! that toggle on POST, clear on DELETE and count exactly under concurrent requests from many
//! users; plays counted in memory without a write per view and written by the flusher, once
//! more at shutdown; deleting a work takes it off the square.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use purrify_api::TaskStatus;
use purrify_store::{NewWork, WorkFile, WorkKind, now_ms};
use serde_json::{Value, json};
use support::client::*;
use support::*;

const PASSWORD: &str = "correct horse 42";

/// Registers `name` on seed 003's surface: (token, user id).
async fn register(api: &Api, name: &str) -> (String, String) {
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
    let r = api.post_json("/api/v1/auth/register", body, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["data"]["token"].as_str().unwrap().to_owned(), r.body["data"]["user"]["id"].as_str().unwrap().to_owned())
}

/// A work of `user` with id `id`: completed with a file and a thumbnail unless `done` is false.
async fn work(api: &Api, user: &str, id: &str, kind: WorkKind, done: bool) {
    let db = api.stack.state.tasks.db();
    let w = NewWork {
        id: id.into(),
        user_id: user.into(),
        task_id: format!("task-{id}"),
        kind,
        title: format!("Photo {id}"),
        status: TaskStatus::Processing,
        error_message: None,
        media_key: format!("media-{id}"),
        created_at: now_ms(),
    };
    assert!(db.insert_work(&w).await.unwrap());
    if done {
        let file =
            WorkFile { uri: format!("file:///secret/works/{id}.jpg"), content_type: "image/jpeg".into(), width: 64, height: 48, size: 99 };
        assert!(db.complete_work(id, &file).await.unwrap());
        assert!(db.set_work_thumbnail(id, &format!("file:///secret/works/{id}-thumb.jpg")).await.unwrap());
    }
}

/// A feed (anonymous without a token); its data.
async fn feed(api: &Api, query: &str, token: Option<&str>) -> Value {
    let r = api.call("GET", &format!("/api/v1/square/feeds{query}"), token, None).await;
    assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
    assert_eq!((r.body["code"].as_u64(), r.body["message"].as_str()), (Some(200), Some("success")));
    assert!(r.body["timestamp"].is_i64());
    assert!(!String::from_utf8_lossy(&r.raw).contains("file://"), "storage URIs never leak: {}", r.body);
    r.body["data"].clone()
}

fn ids(data: &Value) -> Vec<String> {
    data["list"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

/// Seed 003's error envelope with `status` and `code`.
fn assert_v1_error(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!((r.body["code"].as_u64(), r.body["error"].as_str()), (Some(u64::from(status.as_u16())), Some(code)), "{what}: {}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
}

on_both!(sharing_feeds_and_withdrawing, likes_and_favorites_toggle_and_count_exactly, plays_are_counted_in_memory_and_flushed);

async fn sharing_feeds_and_withdrawing(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = register(&api, "alice").await;
    let (bob, bob_id) = register(&api, "bob").await;
    work(&api, &alice_id, "a-img", WorkKind::Image, true).await;
    work(&api, &alice_id, "a-vid", WorkKind::Video, true).await;
    work(&api, &alice_id, "a-busy", WorkKind::Image, false).await;
    work(&api, &bob_id, "b-img", WorkKind::Image, true).await;

    // Sharing: login required; own completed works only; bad input is refused with a reason.
    let share = |token: &str, body: Value| {
        let token = token.to_owned();
        let api = &api;
        async move { api.call("POST", "/api/v1/square", Some(&token), Some(body)).await }
    };
    let r = api.call("POST", "/api/v1/square", None, Some(json!({"workId": "a-img"}))).await;
    assert_v1_error(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "anonymous share");
    assert_v1_error(&share(&bob, json!({"workId": "a-img"})).await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "someone else's work");
    assert_v1_error(
        &share(&alice, json!({"workId": "a-busy"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
        "not completed",
    );
    assert_v1_error(&share(&alice, json!({"workId": " "})).await, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "no work id");
    let long = "猫".repeat(501);
    let r = share(&alice, json!({"workId": "a-img", "description": long})).await;
    assert_v1_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "long description");
    assert_eq!(r.body["details"]["field_errors"]["description"].as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = share(&alice, json!({"workId": "a-img", "colour": "red"})).await;
    assert_v1_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "unknown field");
    assert!(feed(&api, "", None).await["list"].as_array().unwrap().is_empty(), "refused shares changed nothing");

    let r = share(&alice, json!({"workId": "a-img", "description": "  my cat  "})).await;
    assert_eq!((r.status, r.body["code"].as_u64()), (StatusCode::CREATED, Some(201)), "{}", r.body);
    let post = &r.body["data"];
    assert_eq!(
        (post["id"].as_str(), post["type"].as_str(), post["description"].as_str(), post["createdAt"].as_str().map(|s| s.ends_with('Z'))),
        (Some("a-img"), Some("image"), Some("my cat"), Some(true))
    );
    assert_eq!(
        (post["thumbnail"].as_str(), post["fileUrl"].as_str()),
        (Some("/api/works/media/media-a-img/thumbnail"), Some("/api/works/media/media-a-img/file"))
    );
    assert_eq!((post["author"]["id"].as_str(), post["author"]["username"].as_str()), (Some(alice_id.as_str()), Some("alice")));
    assert_eq!((post["playCount"].as_u64(), post["likeCount"].as_u64(), post["liked"].as_bool()), (Some(0), Some(0), Some(false)));
    // Sharing again edits the description (200).
    let r = share(&alice, json!({"workId": "a-img", "description": "my best cat"})).await;
    assert_eq!((r.status, r.body["data"]["description"].as_str()), (StatusCode::OK, Some("my best cat")), "{}", r.body);
    let r = share(&alice, json!({"workId": "a-vid"})).await;
    assert_eq!((r.status, r.body["data"]["description"].as_str()), (StatusCode::CREATED, Some("Photo a-vid")), "the title by default");

    // Seed 001's is_public is the same switch, both ways.
    let r = api.call("PUT", "/api/works/b-img", Some(&bob), Some(json!({"is_public": true}))).await;
    assert_eq!((r.status, r.body["data"]["is_public"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.body);
    let r = api.call("PUT", "/api/works/a-busy", Some(&alice), Some(json!({"is_public": true}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "an unfinished work is not made public: {}", r.body);
    let r = api.call("GET", "/api/works/a-img", Some(&alice), None).await;
    assert_eq!(r.body["data"]["is_public"].as_bool(), Some(true), "sharing sets is_public");

    // Feeds: public, newest first; by type and author; bounded pages; bad parameters refused.
    let all = feed(&api, "", None).await;
    assert_eq!(ids(&all), ["b-img", "a-vid", "a-img"]);
    assert_eq!((all["total"].as_u64(), all["page"].as_u64(), all["pageSize"].as_u64()), (Some(3), Some(1), Some(20)));
    assert!(all["list"][0].get("liked").is_none(), "anonymous callers get no liked flag");
    assert_eq!(all["list"][0]["author"]["username"].as_str(), Some("bob"));
    assert_eq!(ids(&feed(&api, "?type=video", None).await), ["a-vid"]);
    assert_eq!(ids(&feed(&api, "?type=all&sort=latest", None).await), ["b-img", "a-vid", "a-img"]);
    assert_eq!(ids(&feed(&api, &format!("?author={alice_id}&type=image"), None).await), ["a-img"]);
    assert_eq!(ids(&feed(&api, "?author=nobody", None).await), Vec::<String>::new());
    let paged = feed(&api, "?page=2&pageSize=2", None).await;
    assert_eq!((ids(&paged), paged["total"].as_u64()), (vec!["a-img".to_owned()], Some(3)));
    assert_eq!(feed(&api, "?pageSize=1000", None).await["pageSize"].as_u64(), Some(100));
    assert_eq!(feed(&api, "?sort=hot", None).await["total"].as_u64(), Some(3));
    for (q, field) in [("?type=gif", "type"), ("?sort=best", "sort")] {
        let r = api.get(&format!("/api/v1/square/feeds{q}")).await;
        assert_v1_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", q);
        assert!(r.body["details"]["field_errors"][field].is_array(), "{q}: {}", r.body);
    }
    assert_v1_error(&api.get("/api/v1/square/feeds?page=-1").await, StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR", "page");
    let r = api.call("GET", "/api/v1/square/feeds", Some("not-a-token"), None).await;
    assert_v1_error(&r, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "a bad token is refused, not ignored");
    let one = api.get("/api/v1/square/a-vid").await;
    assert_eq!((one.status, one.body["data"]["type"].as_str()), (StatusCode::OK, Some("video")), "{}", one.body);

    // Withdrawing: the owner only (others get 404); is_public follows; 001's switch withdraws too.
    let r = api.call("DELETE", "/api/v1/square/a-img", Some(&bob), None).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "someone else's post");
    let r = api.call("DELETE", "/api/v1/square/a-img", Some(&alice), None).await;
    assert_eq!((r.status, r.body["data"]["withdrawn"].as_bool()), (StatusCode::OK, Some(true)), "{}", r.body);
    let r = api.call("DELETE", "/api/v1/square/a-img", Some(&alice), None).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "withdrawn already");
    assert_eq!(api.call("GET", "/api/works/a-img", Some(&alice), None).await.body["data"]["is_public"].as_bool(), Some(false));
    let r = api.call("PUT", "/api/works/b-img", Some(&bob), Some(json!({"is_public": false}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ids(&feed(&api, "", None).await), ["a-vid"]);

    // Deleting the work takes it off the square at once.
    let r = api.call("DELETE", "/api/v1/works/a-vid", Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(feed(&api, "", None).await["total"].as_u64(), Some(0));
    assert_v1_error(&api.get("/api/v1/square/a-vid").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "deleted work");
    let r = api.call("POST", "/api/v1/square/a-vid/like", Some(&bob), None).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "like of a deleted work");
}

async fn likes_and_favorites_toggle_and_count_exactly(backend: Backend) {
    let api = api(backend).await;
    let (alice, alice_id) = register(&api, "alice").await;
    let (bob, _) = register(&api, "bob").await;
    work(&api, &alice_id, "w", WorkKind::Video, true).await;
    let r = api.call("POST", "/api/v1/square", Some(&alice), Some(json!({"workId": "w"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let react = |method: &'static str, what: &'static str, token: Option<String>| {
        let api = &api;
        async move { api.call(method, &format!("/api/v1/square/w/{what}"), token.as_deref(), None).await }
    };
    assert_v1_error(&react("POST", "like", None).await, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS", "anonymous like");
    let r = api.call("POST", "/api/v1/square/nope/like", Some(&bob), None).await;
    assert_v1_error(&r, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "unknown post");
    let steps = [
        ("POST", "like", true, 1),
        ("POST", "like", false, 0),
        ("DELETE", "like", false, 0),
        ("POST", "like", true, 1),
        ("DELETE", "like", false, 0),
        ("DELETE", "like", false, 0),
        ("POST", "like", true, 1),
    ];
    for (i, (method, what, on, count)) in steps.into_iter().enumerate() {
        let r = react(method, what, Some(bob.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "step {i}: {}", r.body);
        assert_eq!((r.body["data"]["liked"].as_bool(), r.body["data"]["likeCount"].as_u64()), (Some(on), Some(count)), "step {i}");
    }
    let r = react("POST", "favorite", Some(bob.clone())).await;
    assert_eq!((r.body["data"]["favorited"].as_bool(), r.body["data"]["favoriteCount"].as_u64()), (Some(true), Some(1)), "{}", r.body);
    let r = react("DELETE", "favorite", Some(alice.clone())).await;
    assert_eq!((r.body["data"]["favorited"].as_bool(), r.body["data"]["favoriteCount"].as_u64()), (Some(false), Some(1)), "{}", r.body);

    // The feed says what the caller did.
    let mine = feed(&api, "", Some(&bob)).await;
    assert_eq!((mine["list"][0]["liked"].as_bool(), mine["list"][0]["favorited"].as_bool()), (Some(true), Some(true)));
    let hers = feed(&api, "", Some(&alice)).await;
    assert_eq!((hers["list"][0]["liked"].as_bool(), hers["list"][0]["favorited"].as_bool()), (Some(false), Some(false)));

    // Many users at once: user i POSTs like i % 3 + 1 times concurrently (odd counts end liked)
    // and DELETEs its favorite after setting it; every request runs in parallel.
    let mut tokens = Vec::new();
    for i in 0..12 {
        tokens.push(register(&api, &format!("fan{i:02}")).await.0);
    }
    let calls = tokens.iter().enumerate().flat_map(|(i, t)| {
        let likes = (0..(i % 3 + 1)).map(move |_| ("POST", "like", t.clone()));
        likes.chain([("POST", "favorite", t.clone())])
    });
    let replies = futures::future::join_all(calls.map(|(m, w, t)| react(m, w, Some(t)))).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK), "{:?}", replies.iter().map(|r| &r.body).collect::<Vec<_>>());
    let liked_fans = (0..12).filter(|i| (i % 3 + 1) % 2 == 1).count() as u64;
    let item = &feed(&api, "", None).await["list"][0];
    assert_eq!((item["likeCount"].as_u64(), item["favoriteCount"].as_u64()), (Some(liked_fans + 1), Some(13)));
    for (i, t) in tokens.iter().enumerate() {
        let f = feed(&api, "", Some(t)).await;
        assert_eq!(f["list"][0]["liked"].as_bool(), Some((i % 3 + 1) % 2 == 1), "fan {i}");
    }
    let unfav = futures::future::join_all(tokens.iter().map(|t| react("DELETE", "favorite", Some(t.clone())))).await;
    assert!(unfav.iter().all(|r| r.status == StatusCode::OK && r.body["data"]["favorited"] == false));
    assert_eq!(feed(&api, "", None).await["list"][0]["favoriteCount"].as_u64(), Some(1), "bob's is left");
}

async fn plays_are_counted_in_memory_and_flushed(backend: Backend) {
    let api = api_with(backend, |c| c.trust_forwarded_for = true).await;
    let (alice, alice_id) = register(&api, "alice").await;
    work(&api, &alice_id, "v", WorkKind::Video, true).await;
    assert_eq!(api.call("POST", "/api/v1/square", Some(&alice), Some(json!({"workId": "v"}))).await.status, StatusCode::CREATED);
    let state = api.stack.state.clone();
    let db = state.tasks.db().clone();
    let stored = || async { db.square_item("v").await.unwrap().unwrap().post.play_count };

    let play = |addr: &'static str, id: &'static str| {
        let api = &api;
        async move { api.post_json(&format!("/api/v1/square/{id}/play"), json!({}), &[("x-forwarded-for", addr)]).await }
    };
    assert_v1_error(&play("198.51.100.1", "nope").await, StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "unknown post");
    for (addr, expect) in [("198.51.100.1", 1), ("198.51.100.2", 2), ("198.51.100.1", 2), ("2001:db8::7", 3)] {
        let r = play(addr, "v").await;
        assert_eq!((r.status, r.body["data"]["playCount"].as_u64()), (StatusCode::OK, Some(expect)), "{addr}: {}", r.body);
    }
    assert_eq!(stored().await, 0, "no write per view");
    assert_eq!(feed(&api, "", None).await["list"][0]["playCount"].as_u64(), Some(3), "the feed adds the unwritten plays");

    let flushed = state.square.flush_now().await;
    assert_eq!((flushed.posts, flushed.plays), (1, 3));
    assert_eq!(stored().await, 3);
    assert_eq!(feed(&api, "", None).await["list"][0]["playCount"].as_u64(), Some(3), "counted once");
    assert_eq!(state.square.flush_now().await.posts, 0, "nothing left to write");

    // Plays of a post withdrawn before the flush are dropped, not written to anything.
    work(&api, &alice_id, "gone", WorkKind::Video, true).await;
    assert_eq!(api.call("POST", "/api/v1/square", Some(&alice), Some(json!({"workId": "gone"}))).await.status, StatusCode::CREATED);
    assert_eq!(play("198.51.100.9", "gone").await.status, StatusCode::OK);
    assert_eq!(api.call("DELETE", "/api/v1/square/gone", Some(&alice), None).await.status, StatusCode::OK);
    let flushed = state.square.flush_now().await;
    assert_eq!((flushed.posts, flushed.dropped), (0, 1));

    // The last plays are written at shutdown.
    assert_eq!(play("203.0.113.4", "v").await.body["data"]["playCount"].as_u64(), Some(4));
    let Api { stack, _dir, _pg } = api;
    stack.shutdown(Duration::from_secs(5)).await;
    assert_eq!(db.square_item("v").await.unwrap().unwrap().post.play_count, 4);
}
