//! The accounts tables on SQLite and on PostgreSQL: unique identities, refresh-token rotation
//! and replay detection under concurrency, password changes and deactivation revoking
//! sessions, the last-admin rule, the admin's list, and a user's task totals.

use std::time::Duration;

use purrify_api::{EnhanceParams, TaskStatus};
use purrify_store::testing::TestDb;
use purrify_store::users::{Taken, duplicate_field};
use purrify_store::{
    AdminChange, NewRefreshToken, NewTask, NewUser, PageRequest, ProfileChange, Role, Rotation, UserFilter, WeChatIdentity, now_ms,
};

fn email_user(id: &str, email: &str, username: Option<&str>) -> NewUser {
    NewUser {
        id: id.into(),
        email: Some(email.into()),
        password_hash: Some(format!("$argon2id$hash-of-{id}")),
        wechat: None,
        username: username.map(Into::into),
        full_name: None,
        role: Role::User,
    }
}

fn wechat_user(id: &str, openid: &str) -> NewUser {
    NewUser {
        id: id.into(),
        email: None,
        password_hash: None,
        wechat: Some(WeChatIdentity { appid: "wx-app".into(), openid: openid.into(), unionid: None }),
        username: None,
        full_name: None,
        role: Role::User,
    }
}

fn token(id: &str, user: &str, family: &str) -> NewRefreshToken {
    NewRefreshToken {
        id: id.into(),
        user_id: user.into(),
        family_id: family.into(),
        token_hash: format!("hash-{id}"),
        expires_at: now_ms() + 3_600_000,
    }
}

async fn identities_are_unique(t: TestDb) {
    let db = &t.db;
    let alice = db.create_user(&email_user("u1", "alice@example.com", Some("Alice"))).await.unwrap();
    assert_eq!((alice.role, alice.active, alice.token_version, alice.balance), (Role::User, true, 0, 0));
    let e = db.create_user(&email_user("u2", "alice@example.com", None)).await.unwrap_err();
    assert_eq!(duplicate_field(&e), Some(Taken::Email));
    let e = db.create_user(&email_user("u3", "bob@example.com", Some("ALICE"))).await.unwrap_err();
    assert_eq!(duplicate_field(&e), Some(Taken::Username), "usernames are unique regardless of case");
    assert!(db.user("u2").await.unwrap().is_none() && db.user("u3").await.unwrap().is_none(), "nothing half-written");
    db.create_user(&wechat_user("w1", "openid-1")).await.unwrap();
    let e = db.create_user(&wechat_user("w2", "openid-1")).await.unwrap_err();
    assert_eq!(duplicate_field(&e), Some(Taken::WeChat));
    // Several accounts without an email or username coexist (NULLs are not duplicates).
    db.create_user(&wechat_user("w3", "openid-3")).await.unwrap();
    assert_eq!(db.user_by_email("alice@example.com").await.unwrap().unwrap().id, "u1");
    assert_eq!(db.user_by_wechat("wx-app", "openid-3").await.unwrap().unwrap().id, "w3");
    let taken = db.update_profile("w3", &ProfileChange { username: Some("alice".into()), ..Default::default() }).await.unwrap_err();
    assert_eq!(duplicate_field(&taken), Some(Taken::Username));
    let renamed = db
        .update_profile("w3", &ProfileChange { username: Some("喵喵".into()), full_name: Some("Mimi".into()), avatar_url: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((renamed.username.as_deref(), renamed.full_name.as_deref()), (Some("喵喵"), Some("Mimi")));
}

async fn first_wechat_logins_race_to_one_account(t: TestDb) {
    let db = t.db.clone();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move { db.user_for_wechat(&wechat_user(&format!("w{i}"), "same-openid")).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for h in tasks {
        let (u, new) = h.await.unwrap();
        ids.push(u.id);
        created += usize::from(new);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every racer ends with the same account: {ids:?}");
    assert_eq!(created, 1, "exactly one racer created it");
}

async fn refresh_tokens_rotate_and_replays_revoke_the_family(t: TestDb) {
    let db = &t.db;
    db.create_user(&email_user("u1", "a@example.com", None)).await.unwrap();
    db.store_refresh_token(&token("t1", "u1", "fam")).await.unwrap();
    db.store_refresh_token(&token("other", "u1", "fam-2")).await.unwrap();
    let r = db.rotate_refresh_token("hash-t1", &token("t2", "", "")).await.unwrap();
    assert_eq!(r, Rotation::Rotated { user_id: "u1".into(), family_id: "fam".into() });
    let r = db.rotate_refresh_token("hash-t2", &token("t3", "", "")).await.unwrap();
    assert!(matches!(r, Rotation::Rotated { .. }));
    // t1 was copied: presenting it again revokes t3, the family's live token.
    assert_eq!(db.rotate_refresh_token("hash-t1", &token("t4", "", "")).await.unwrap(), Rotation::Replayed { user_id: "u1".into() });
    assert_eq!(db.rotate_refresh_token("hash-t3", &token("t5", "", "")).await.unwrap(), Rotation::Invalid);
    assert_eq!(db.rotate_refresh_token("nope", &token("t6", "", "")).await.unwrap(), Rotation::Invalid);
    assert_eq!(db.live_refresh_tokens("u1").await.unwrap(), 1, "the other login is untouched");
    assert!(db.revoke_refresh_family("hash-other").await.unwrap());
    assert_eq!(db.live_refresh_tokens("u1").await.unwrap(), 0);
    let mut expired = token("old", "u1", "fam-3");
    expired.expires_at = now_ms() - 1;
    db.store_refresh_token(&expired).await.unwrap();
    assert_eq!(db.rotate_refresh_token("hash-old", &token("t7", "", "")).await.unwrap(), Rotation::Invalid);
    assert!(db.purge_refresh_tokens(0).await.unwrap() >= 1);
}

async fn one_token_used_twice_at_once_rotates_once(t: TestDb) {
    let db = t.db.clone();
    db.create_user(&email_user("u1", "a@example.com", None)).await.unwrap();
    db.store_refresh_token(&token("t0", "u1", "fam")).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move { db.rotate_refresh_token("hash-t0", &token(&format!("n{i}"), "", "")).await.unwrap() })
        })
        .collect();
    let mut rotated = 0;
    for h in racers {
        match h.await.unwrap() {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Replayed { .. } | Rotation::Invalid => {}
        }
    }
    assert_eq!(rotated, 1);
    assert_eq!(db.live_refresh_tokens("u1").await.unwrap(), 0, "the racing copies revoked the family, the winner's new token too");
}

async fn password_changes_and_deactivation_end_sessions(t: TestDb) {
    let db = &t.db;
    let u = db.create_user(&email_user("u1", "a@example.com", None)).await.unwrap();
    db.store_refresh_token(&token("t1", "u1", "fam")).await.unwrap();
    let stored = u.password_hash.clone().unwrap();
    assert_eq!(db.change_password("u1", "$argon2id$stale", "$argon2id$new").await.unwrap(), None, "a stale expectation changes nothing");
    assert_eq!(db.change_password("u1", &stored, "$argon2id$new").await.unwrap(), Some(1));
    assert_eq!(db.live_refresh_tokens("u1").await.unwrap(), 0);
    assert_eq!(db.token_state("u1").await.unwrap().unwrap().token_version, 1);
    db.store_refresh_token(&token("t2", "u1", "fam-2")).await.unwrap();
    let admin = db.create_user(&NewUser { role: Role::Admin, ..email_user("a1", "root@example.com", None) }).await.unwrap();
    assert_eq!(admin.role, Role::Admin);
    let off = db.admin_update_user("u1", AdminChange { role: None, active: Some(false) }).await.unwrap().unwrap();
    assert_eq!((off.active, off.token_version), (false, 2));
    assert_eq!(db.live_refresh_tokens("u1").await.unwrap(), 0);
    let state = db.token_state("u1").await.unwrap().unwrap();
    assert!(!state.active);
    let on = db.admin_update_user("u1", AdminChange { role: Some(Role::Admin), active: Some(true) }).await.unwrap().unwrap();
    assert_eq!((on.role, on.active, on.token_version), (Role::Admin, true, 2), "reactivation does not resurrect old tokens");
    assert!(db.admin_update_user("missing", AdminChange::default()).await.unwrap().is_none());
    assert_eq!(db.revoke_all_sessions("u1").await.unwrap(), Some(3));
}

async fn the_last_admin_stays_even_when_two_demotions_race(t: TestDb) {
    let db = t.db.clone();
    assert!(!db.has_admin().await.unwrap());
    for (id, email) in [("a1", "one@example.com"), ("a2", "two@example.com")] {
        db.create_user(&NewUser { role: Role::Admin, ..email_user(id, email, None) }).await.unwrap();
    }
    assert!(db.has_admin().await.unwrap());
    let demote = |id: &'static str| {
        let db = db.clone();
        tokio::spawn(async move { db.admin_update_user(id, AdminChange { role: Some(Role::User), active: None }).await })
    };
    let (a, b) = (demote("a1"), demote("a2"));
    let outcomes = [a.await.unwrap(), b.await.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(db.has_admin().await.unwrap(), "one admin is left");
}

async fn the_admin_list_filters_and_pages(t: TestDb) {
    let db = &t.db;
    for i in 0..25 {
        let mut u = email_user(&format!("u{i:02}"), &format!("user{i:02}@example.com"), Some(&format!("name_{i:02}")));
        if i % 5 == 0 {
            u.role = Role::Admin;
        }
        db.create_user(&u).await.unwrap();
    }
    db.admin_update_user("u01", AdminChange { role: None, active: Some(false) }).await.unwrap();
    let page = db.list_users(&UserFilter::default(), PageRequest::new(Some(2), Some(10))).await.unwrap();
    assert_eq!((page.total, page.items.len(), page.total_pages()), (25, 10, 3));
    let admins = db.list_users(&UserFilter { role: Some(Role::Admin), ..Default::default() }, PageRequest::default()).await.unwrap();
    assert_eq!(admins.total, 5);
    let inactive = db.list_users(&UserFilter { active: Some(false), ..Default::default() }, PageRequest::default()).await.unwrap();
    assert_eq!(inactive.items.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["u01"]);
    let search = db.list_users(&UserFilter { search: Some("USER1".into()), ..Default::default() }, PageRequest::default()).await.unwrap();
    assert_eq!(search.total, 10, "user10..user19, case-insensitive");
    let underscore = db.list_users(&UserFilter { search: Some("_1".into()), ..Default::default() }, PageRequest::default()).await.unwrap();
    assert_eq!(underscore.total, 10, "name_10..name_19: `_` is literal (as a wildcard it would match user01 and user21 too)");
    let percent = db.list_users(&UserFilter { search: Some("%".into()), ..Default::default() }, PageRequest::default()).await.unwrap();
    assert_eq!(percent.total, 0);
}

async fn task_totals_come_from_the_task_table(t: TestDb) {
    let db = &t.db;
    db.create_user(&email_user("u1", "a@example.com", None)).await.unwrap();
    assert_eq!(db.user_task_stats("u1").await.unwrap().total, 0);
    for (i, owner) in [Some("u1"), Some("u1"), Some("u1"), None].into_iter().enumerate() {
        let mut task = NewTask::new(format!("t{i}"), "file:///in", "file:///out", EnhanceParams::default());
        task.user_id = owner.map(Into::into);
        task.fair_group = Some("anon:10.0.0.1".into());
        db.insert_task_at(&task, Duration::from_secs(300), 1_000 + i as i64).await.unwrap();
    }
    assert!(db.fail_task("t1", purrify_store::Guard::Queued, purrify_api::FailReason::BadInput, "bad").await.unwrap());
    assert!(db.cancel_task("t2", purrify_store::Guard::Queued).await.unwrap());
    let s = db.user_task_stats("u1").await.unwrap();
    assert_eq!((s.total, s.completed, s.failed, s.cancelled, s.total_cost, s.last_task_at), (3, 0, 1, 1, 0, Some(1_002)));
    assert_eq!(db.get_task("t0").await.unwrap().unwrap().status, TaskStatus::Queued);
}

purrify_store::on_both_databases!(
    identities_are_unique,
    first_wechat_logins_race_to_one_account,
    refresh_tokens_rotate_and_replays_revoke_the_family,
    one_token_used_twice_at_once_rotates_once,
    password_changes_and_deactivation_end_sessions,
    the_last_admin_stays_even_when_two_demotions_race,
    the_admin_list_filters_and_pages,
    task_totals_come_from_the_task_table,
);
