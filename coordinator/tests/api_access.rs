//! Access to the people API under abuse, against a real coordinator on a
//! fresh SQLite store: throttled sign-ins and registrations, bounded
//! password hashing, logout, sessions listed and revoked, password changes,
//! expiring single-use invites.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{TestServer, ADMIN_EMAIL};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlarena_common::Role;
use sqlarena_coordinator::auth;
use sqlarena_coordinator::store::Invite;
use sqlarena_e2e::client::Reply;

/// Asserts a refusal that says when to try again, in the header and in
/// the envelope, and returns the seconds.
fn retry_after(reply: &Reply, status: StatusCode) -> u64 {
    reply.expect_error(status);
    let header: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(header >= 1, "Retry-After: {header}");
    assert_eq!(reply.body["retry_after"], json!(header), "{}", reply.text);
    header
}

async fn bogus_login(server: &TestServer, email: &str) -> Reply {
    server
        .post(
            "/api/v1/login",
            None,
            json!({"email": email, "password": "not-the-password"}),
        )
        .await
}

#[tokio::test]
async fn one_client_is_throttled_on_logins_and_registrations() {
    let server = TestServer::start_with(|config| {
        config.auth_client_burst = 3;
        config.auth_client_per_minute = 1;
        config.auth_refusal_delay_ms = 300;
    })
    .await;
    for index in 0..3 {
        // Different accounts: only the client limit applies.
        let reply = bogus_login(&server, &format!("nobody{index}@example.com")).await;
        reply.expect_error(StatusCode::UNAUTHORIZED);
    }
    let sent = std::time::Instant::now();
    let refused = bogus_login(&server, "someone-else@example.com").await;
    let wait = retry_after(&refused, StatusCode::TOO_MANY_REQUESTS);
    assert!(wait <= 60, "one token a minute: {wait}");
    assert!(
        sent.elapsed() >= std::time::Duration::from_millis(300),
        "a refusal is held for the refusal delay"
    );

    let register = server
        .post(
            "/api/v1/register",
            None,
            json!({"email": "new@example.com", "full_name": "New", "password": "password-123"}),
        )
        .await;
    retry_after(&register, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        server
            .store()
            .get_user_by_email("new@example.com")
            .await
            .unwrap()
            .is_none(),
        "a refused registration creates nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_and_successes_do_not_count() {
    let server = TestServer::start_with(|config| {
        config.auth_account_burst = 3;
        config.auth_account_per_minute = 1;
    })
    .await;
    let (_, _) = server.user("ada@example.com", None, None).await;
    for _ in 0..5 {
        // Right passwords give their token back.
        server.login("ada@example.com", "password-123").await;
    }
    for _ in 0..3 {
        bogus_login(&server, "ada@example.com")
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    // The account is held now, even with the right password, in any case.
    let refused = server
        .post(
            "/api/v1/login",
            None,
            json!({"email": "ADA@example.com", "password": "password-123"}),
        )
        .await;
    retry_after(&refused, StatusCode::TOO_MANY_REQUESTS);
    // Other accounts are not.
    server.admin_token().await;
    server.stop().await;
}

#[tokio::test]
async fn password_hashing_beyond_the_gate_is_refused_at_once() {
    let server = TestServer::start_with(|config| {
        config.max_concurrent_hashes = 1;
        config.max_queued_hashes = 0;
    })
    .await;
    // Occupy the only hashing slot until told to stop.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let gate = server.state.hashing.clone();
    let holder = tokio::spawn(async move {
        gate.run(move |_| {
            let _ = started.send(());
            held.recv().ok()
        })
        .await
    });
    running.await.unwrap();

    let refused = bogus_login(&server, ADMIN_EMAIL).await;
    retry_after(&refused, StatusCode::SERVICE_UNAVAILABLE);
    let register = server
        .post(
            "/api/v1/register",
            None,
            json!({"email": "new@example.com", "full_name": "New", "password": "password-123"}),
        )
        .await;
    retry_after(&register, StatusCode::SERVICE_UNAVAILABLE);

    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    server.admin_token().await;
    server.stop().await;
}

#[tokio::test]
async fn logout_revokes_only_the_callers_token() {
    let server = TestServer::start().await;
    let (id, first) = server.user("ada@example.com", None, None).await;
    let second = server.login("ada@example.com", "password-123").await;
    let reply = server.post("/api/v1/logout", Some(&first), json!({})).await;
    assert_eq!(reply.data()["signed_out"], json!(true));
    server
        .get(&format!("/api/v1/users/{id}"), Some(&first))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    server
        .post("/api/v1/logout", Some(&first), json!({}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    let still = server
        .get(&format!("/api/v1/users/{id}"), Some(&second))
        .await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.text);
    server
        .post("/api/v1/logout", None, json!({}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn admins_list_and_revoke_a_users_sessions() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let (id, first) = server.user("ada@example.com", None, None).await;
    let second = server.login("ada@example.com", "password-123").await;
    let (_, stranger) = server.user("eve@example.com", None, None).await;
    let path = format!("/api/v1/users/{id}/sessions");

    let listed = server.get(&path, Some(&admin)).await;
    let sessions = listed.data().as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{}", listed.text);
    assert!(
        !listed.text.contains(&first) && !listed.text.contains(&auth::token_hash(&first)),
        "no token or token hash is shown"
    );
    assert!(sessions
        .iter()
        .all(|session| session["current"] == json!(false)));
    server
        .get(&path, Some(&stranger))
        .await
        .expect_error(StatusCode::FORBIDDEN);

    // The user's own list marks the session in use; revoke the other one.
    let own = server.get(&path, Some(&first)).await;
    let other_id = own
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|session| session["current"] == json!(false))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = server
        .call(
            Method::DELETE,
            &format!("{path}/{other_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.data()["revoked"], json!(true));
    server
        .get(&format!("/api/v1/users/{id}"), Some(&second))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    let again = server
        .call(
            Method::DELETE,
            &format!("{path}/{other_id}"),
            Some(&admin),
            None,
        )
        .await;
    again.expect_error(StatusCode::NOT_FOUND);
    server
        .call(
            Method::DELETE,
            &format!("{path}/not-a-uuid"),
            Some(&admin),
            None,
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);

    let all = server.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(all.data()["revoked"], json!(1));
    server
        .get(&format!("/api/v1/users/{id}"), Some(&first))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    server
        .get("/api/v1/users/999999/sessions", Some(&admin))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn changing_a_password_revokes_the_other_sessions() {
    let server = TestServer::start().await;
    let (id, current) = server.user("ada@example.com", None, None).await;
    let other = server.login("ada@example.com", "password-123").await;
    let (_, stranger) = server.user("eve@example.com", None, None).await;
    let path = format!("/api/v1/users/{id}/password");
    let me = format!("/api/v1/users/{id}");

    // Refusals change nothing.
    server
        .post(&path, Some(&current), json!({"password": "new-password-1"}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    server
        .post(
            &path,
            Some(&current),
            json!({"password": "new-password-1", "current_password": "wrong-password"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    server
        .post(
            &path,
            Some(&current),
            json!({"password": "short", "current_password": "password-123"}),
        )
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    server
        .post(
            &path,
            Some(&stranger),
            json!({"password": "new-password-1", "current_password": "password-123"}),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert_eq!(server.get(&me, Some(&other)).await.status, StatusCode::OK);

    let changed = server
        .post(
            &path,
            Some(&current),
            json!({"password": "new-password-1", "current_password": "password-123"}),
        )
        .await;
    assert_eq!(changed.data()["password_changed"], json!(true));
    assert_eq!(
        server.get(&me, Some(&current)).await.status,
        StatusCode::OK,
        "the session that changed it stays"
    );
    server
        .get(&me, Some(&other))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    bogus_login(&server, "ada@example.com")
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    server
        .post(
            "/api/v1/login",
            None,
            json!({"email": "ada@example.com", "password": "password-123"}),
        )
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    let fresh = server.login("ada@example.com", "new-password-1").await;

    // An admin resets it without the current one and signs every session out.
    let admin = server.admin_token().await;
    let reset = server
        .post(&path, Some(&admin), json!({"password": "reset-password-1"}))
        .await;
    assert_eq!(reset.data()["password_changed"], json!(true));
    for token in [&current, &fresh] {
        server
            .get(&me, Some(token))
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    server.login("ada@example.com", "reset-password-1").await;
    server
        .post(
            "/api/v1/users/999999/password",
            Some(&admin),
            json!({"password": "reset-password-1"}),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Registers with `invite` and returns the reply.
async fn register_invited(server: &TestServer, email: &str, invite: &str) -> Reply {
    server
        .post(
            "/api/v1/register",
            None,
            json!({"email": email, "full_name": "Invited", "password": "password-123", "invite": invite}),
        )
        .await
}

#[tokio::test]
async fn used_or_expired_invites_are_refused_and_create_nobody() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let made = server
        .post("/api/v1/invites", Some(&admin), json!({"role": "PROF"}))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let code = made.data()["code"].as_str().unwrap().to_string();
    let expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(made.data()["expires_at"].clone()).unwrap();
    let week = Utc::now() + Duration::days(7);
    assert!(
        (expires_at - week).num_minutes().abs() < 5,
        "invites last 7 days by default: {expires_at}"
    );

    // A registration refused for its email leaves the invite usable.
    register_invited(&server, ADMIN_EMAIL, &code)
        .await
        .expect_error(StatusCode::CONFLICT);
    let professor = register_invited(&server, "prof@example.com", &code).await;
    assert_eq!(professor.status, StatusCode::CREATED, "{}", professor.text);
    assert_eq!(professor.data()["role"], "PROF");

    let used = register_invited(&server, "second@example.com", &code).await;
    let message = used.expect_error(StatusCode::FORBIDDEN);
    assert!(message.contains("invite"), "{message}");

    let expired_code = "sqi_expired-invite-code";
    let admin_id = server
        .store()
        .get_user_by_email(ADMIN_EMAIL)
        .await
        .unwrap()
        .unwrap()
        .id;
    server
        .store()
        .create_invite(Invite {
            code_hash: auth::token_hash(expired_code),
            role: Role::Admin,
            created_by: admin_id,
            created_at: Utc::now() - Duration::days(8),
            expires_at: Utc::now() - Duration::days(1),
            used_by: None,
        })
        .await
        .unwrap();
    register_invited(&server, "late@example.com", expired_code)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    for email in ["second@example.com", "late@example.com"] {
        assert!(
            server
                .store()
                .get_user_by_email(email)
                .await
                .unwrap()
                .is_none(),
            "{email} was created"
        );
    }
    server.stop().await;
}

/// Many concurrent registrations with one invite: exactly one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_invite_registers_one_user_under_concurrency() {
    let server = Arc::new(TestServer::start().await);
    let admin = server.admin_token().await;
    let code = server
        .post("/api/v1/invites", Some(&admin), json!({}))
        .await
        .data()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut registrations = tokio::task::JoinSet::new();
    for index in 0..8 {
        let server = server.clone();
        let code = code.clone();
        registrations.spawn(async move {
            register_invited(&server, &format!("p{index}@example.com"), &code)
                .await
                .status
        });
    }
    let mut created = 0;
    while let Some(status) = registrations.join_next().await {
        match status.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
}

/// Admins list invites (never their codes) and revoke open ones; a revoked
/// code registers no one, a used invite cannot be revoked, and professors
/// and students may neither list nor revoke.
#[tokio::test]
async fn admins_list_and_revoke_invites_and_no_one_else_may() {
    let server = TestServer::start().await;
    let admin = server.admin_token().await;
    let mut made = Vec::new();
    for _ in 0..2 {
        let reply = server
            .post("/api/v1/invites", Some(&admin), json!({"role": "PROF"}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let data = reply.data();
        assert_eq!(
            data["id"].as_str().unwrap(),
            auth::token_hash(data["code"].as_str().unwrap()),
            "the id is the code's hash"
        );
        made.push((
            data["id"].as_str().unwrap().to_string(),
            data["code"].as_str().unwrap().to_string(),
        ));
    }
    let (used_id, used_code) = &made[0];
    let (open_id, open_code) = &made[1];
    let professor = register_invited(&server, "lister@example.com", used_code).await;
    assert_eq!(professor.status, StatusCode::CREATED, "{}", professor.text);
    let professor_id = professor.data()["id"].as_i64().unwrap();
    let professor = server.login("lister@example.com", "password-123").await;
    let (_, student) = server.user("student-lister@example.com", None, None).await;

    for token in [&professor, &student] {
        server
            .get("/api/v1/invites", Some(token))
            .await
            .expect_error(StatusCode::FORBIDDEN);
        server
            .call(
                Method::DELETE,
                &format!("/api/v1/invites/{open_id}"),
                Some(token),
                None,
            )
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }

    let listed = server.get("/api/v1/invites", Some(&admin)).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert!(
        !listed.text.contains(used_code.as_str()) && !listed.text.contains(open_code.as_str()),
        "codes are never listed: {}",
        listed.text
    );
    let state_of = |reply: &Reply, id: &str| {
        reply
            .data()
            .as_array()
            .unwrap()
            .iter()
            .find(|invite| invite["id"] == id)
            .cloned()
    };
    let used = state_of(&listed, used_id).expect("the used invite is listed");
    assert_eq!(used["state"], "USED");
    assert_eq!(used["used_by"], professor_id);
    let open = state_of(&listed, open_id).expect("the open invite is listed, after the refusals");
    assert_eq!(open["state"], "OPEN");

    let refused = server
        .call(
            Method::DELETE,
            &format!("/api/v1/invites/{used_id}"),
            Some(&admin),
            None,
        )
        .await;
    let message = refused.expect_error(StatusCode::CONFLICT);
    assert!(message.contains("used"), "{message}");
    let revoked = server
        .call(
            Method::DELETE,
            &format!("/api/v1/invites/{open_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert_eq!(revoked.data(), &json!({"id": open_id, "revoked": true}));
    server
        .call(
            Method::DELETE,
            &format!("/api/v1/invites/{open_id}"),
            Some(&admin),
            None,
        )
        .await
        .expect_error(StatusCode::NOT_FOUND);
    register_invited(&server, "too-late@example.com", open_code)
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert!(server
        .store()
        .get_user_by_email("too-late@example.com")
        .await
        .unwrap()
        .is_none());
    let listed = server.get("/api/v1/invites", Some(&admin)).await;
    assert!(state_of(&listed, open_id).is_none(), "{}", listed.text);
    assert!(state_of(&listed, used_id).is_some(), "{}", listed.text);
    server.stop().await;
}
