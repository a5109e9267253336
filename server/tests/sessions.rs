//! Server-side sessions: listed, ended everywhere at once (open connections close within 1 s, on
//! one instance and across instances sharing a real Redis), durable across restarts.

mod common;

use std::time::{Duration, Instant};

use common::{TestRedis, TestServer, WsClient};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "sessions-test-secret-of-enough-length-32";

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Wait for the server to close `client`'s socket; the close code and how long it took.
async fn close_code(client: &mut WsClient, started: Instant) -> (u16, Duration) {
    loop {
        match client.next_message().await {
            Some(Message::Close(Some(frame))) => return (u16::from(frame.code), started.elapsed()),
            Some(Message::Close(None)) | None => panic!("closed without a code"),
            Some(_) => continue,
        }
    }
}

/// A connection that is doing something (following a campaign), so only its session's end can
/// close it.
async fn following(server: &TestServer, token: &str, campaign: &str) -> WsClient {
    let mut client = server.connect_as(token).await;
    client.subscribe(campaign, None).await;
    client
}

#[tokio::test]
async fn signing_out_ends_the_session_at_once_and_for_good() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let signed_in: Value = http
        .post(server.url("/api/session"))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .json(&json!({"display_name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["token"].as_str().unwrap().to_owned();

    let list: Value = http
        .get(server.url("/api/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sessions = list.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    assert_eq!(sessions[0]["device"], "Firefox on Linux");
    assert_eq!(sessions[0]["current"], true);
    assert!(sessions[0]["id"].as_str().unwrap().len() >= 32);

    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("spring", "Spring").await;
    let mut watching = following(&server, &token, "spring").await;
    // Someone else's connection stays up.
    let (_, other) = server.sign_in("Grace").await;
    let mut bystander = following(&server, &other, "spring").await;

    let started = Instant::now();
    let out = http
        .delete(server.url("/api/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let (code, took) = close_code(&mut watching, started).await;
    assert_eq!(code, 4011, "session ended");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let (code, _) = close_code(&mut owner, started).await;
    assert_eq!(code, 4011);
    println!("signed-out connection closed {took:?} after the sign-out");

    let (status, code, message) = error_of(
        http.get(server.url("/api/session"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(message.contains("session has ended"), "{message}");
    let (status, _, _) = error_of(
        http.post(server.url("/api/campaigns"))
            .bearer_auth(&token)
            .json(&json!({"campaign_id": "late", "title": "Late"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "an ended session writes nothing");
    let refused = http
        .get(server.url("/ws"))
        .bearer_auth(&token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "no new connection with it either");

    // The other person's connection still works.
    bystander
        .send_json(json!({"type": "system:ping:v1:requested", "request_id": "p", "payload": {}}))
        .await;
    let pong = bystander.recv_until(|f| f["request_id"] == "p").await;
    assert_eq!(pong.last().unwrap()["type"], "system:ping:v1:success");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nobody_can_list_or_end_someone_elses_sessions() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let (_, ada) = server.sign_in("Ada").await;
    let (_, grace) = server.sign_in("Grace").await;
    let graces: Value = http
        .get(server.url("/api/sessions"))
        .bearer_auth(&grace)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let grace_session = graces[0]["id"].as_str().unwrap().to_owned();
    let adas: Value = http
        .get(server.url("/api/sessions"))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(adas.as_array().unwrap().len(), 1, "only your own: {adas}");
    assert_ne!(adas[0]["id"], graces[0]["id"]);

    for id in [grace_session.as_str(), "0123456789abcdef0123456789abcdef"] {
        let (status, code, _) = error_of(
            http.delete(server.url(&format!("/api/sessions/{id}")))
                .bearer_auth(&ada)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (404, "not_found"),
            "someone else's session answers like a missing one"
        );
    }
    let still: Value = http
        .get(server.url("/api/session"))
        .bearer_auth(&grace)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["user"]["display_name"], "Grace");
    let (status, _, _) =
        error_of(http.get(server.url("/api/sessions")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_and_renames_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&dir, &[]).await;
    let (user_id, token) = server.sign_in("Ada").await;
    let http = reqwest::Client::new();
    let renamed = http
        .post(server.url("/api/session"))
        .bearer_auth(&token)
        .json(&json!({"display_name": "Ada L."}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    server.stop().await.unwrap();

    let server = TestServer::start_in(&dir, &[]).await;
    let me: Value = http
        .get(server.url("/api/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["user_id"], user_id.as_str());
    assert_eq!(me["user"]["display_name"], "Ada L.", "the rename is kept");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_on_one_instance_closes_connections_on_another() {
    let redis = TestRedis::start();
    let url = redis.url();
    let args = ["--redis-url", &url, "--session-secret", SECRET];
    let a = TestServer::start_with(&args).await;
    let b = TestServer::start_with(&args).await;
    let (_, token) = a.sign_in("Ada").await;
    let mut owner = b.connect_as(&token).await;
    owner.create_campaign("shared", "Shared").await;
    let mut on_b = following(&b, &token, "shared").await;

    let started = Instant::now();
    let out = reqwest::Client::new()
        .delete(a.url("/api/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let (code, took) = close_code(&mut on_b, started).await;
    assert_eq!(code, 4011);
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    println!("connection on the other instance closed {took:?} after the sign-out");
    let (status, _, message) = error_of(
        reqwest::Client::new()
            .get(b.url("/api/session"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(message.contains("session has ended"), "{message}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_lists_renames_and_ends_sessions_for_good() {
    use rally::sessions::{SessionSettings, Sessions};
    use rally::store::sessions::SessionStore;
    use rally_app::model::DisplayName;
    let redis = TestRedis::start();
    let link = rally::redis::RedisLink::connect(&redis.url())
        .await
        .unwrap();
    let store = rally::store::redis::RedisStore::new(link);
    let sessions = Sessions::new(
        rally::auth::Keys::new(SECRET.as_bytes()),
        std::sync::Arc::new(store.clone()),
        std::sync::Arc::new(rally::bus::InProcessBus),
        SessionSettings {
            lifetime: Duration::from_secs(3600),
            idle: Duration::from_secs(600),
        },
        None,
        rally::api_keys::ApiKeys::new(std::sync::Arc::new(store.clone())),
        true,
    );
    let now = rally::clock::now();
    let ada = DisplayName::parse("Ada").unwrap();
    let (laptop, laptop_token) = sessions
        .start(None, &ada, "Firefox on Linux".into(), now)
        .await
        .unwrap();
    let user = laptop.actor.user_id.clone();
    // The user's set of sessions lives until the last lifetime ends, not the (moving) idle end.
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let set_expiry: i64 = redis::cmd("PEXPIRETIME")
        .arg(format!("rally:user:{user}:sessions"))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    let lifetime_end = laptop.session.as_ref().unwrap().expires_at.unix_millis() as i64;
    assert_eq!(set_expiry, lifetime_end);
    let (phone, phone_token) = sessions
        .start(Some(user.clone()), &ada, "Safari on iOS".into(), now)
        .await
        .unwrap();
    let renamed = sessions
        .rename(&phone, &DisplayName::parse("Ada L.").unwrap())
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Ada L.");
    let listed = sessions.list(&user, now).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|s| s.display_name == "Ada L."),
        "renamed everywhere"
    );

    assert!(sessions
        .end(&phone.session.as_ref().unwrap().id)
        .await
        .unwrap()
        .is_some());
    assert!(
        sessions
            .end(&phone.session.as_ref().unwrap().id)
            .await
            .unwrap()
            .is_none(),
        "ends once"
    );
    assert!(sessions.verify(&phone_token, now).await.is_err());
    assert!(
        !store
            .update_session(phone.session.clone().unwrap())
            .await
            .unwrap(),
        "an ended session is never written back"
    );
    assert_eq!(
        sessions
            .verify(&laptop_token, now)
            .await
            .unwrap()
            .actor
            .display_name,
        "Ada L."
    );
    let listed = sessions.list(&user, now).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, laptop.session.as_ref().unwrap().id);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_user() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let (_, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("everywhere", "Everywhere").await;
    let mut watching = following(&server, &token, "everywhere").await;
    let started = Instant::now();
    let answer: Value = http
        .delete(server.url("/api/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["ended"], 1);
    let (code, took) = close_code(&mut watching, started).await;
    assert_eq!(code, 4011);
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    let (status, _, _) = error_of(
        http.get(server.url("/api/session"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_keeps_api_keys_and_forgets_revoked_ones_for_good() {
    use rally::api_keys::{ApiKeys, KeyRefused, MadeAs};
    use rally::auth::TokenError;
    use rally_app::model::{Actor, CampaignId, UserId};
    use rally_app::protocol::api_keys::{KeyAccess, KeyReach};
    let redis = TestRedis::start();
    let link = rally::redis::RedisLink::connect(&redis.url())
        .await
        .unwrap();
    let keys = ApiKeys::new(std::sync::Arc::new(rally::store::redis::RedisStore::new(
        link,
    )));
    let ada = Actor {
        user_id: UserId::parse("ada").unwrap(),
        display_name: "Ada".into(),
    };
    let now = rally::clock::now();
    let reach = KeyReach::Campaigns([CampaignId::parse("launch").unwrap()].into());
    let made = keys
        .create(
            "CMS".into(),
            KeyAccess::Read,
            reach,
            (ada, MadeAs::Owner),
            now,
        )
        .await
        .unwrap();
    let all = keys.all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].summary(), made.key);
    assert!(keys.verify(&made.token, now).await.is_ok());
    assert!(keys.touch(&made.key.id, now).await.unwrap());
    assert_eq!(
        keys.get(&made.key.id).await.unwrap().unwrap().last_used_at,
        Some(now),
        "the use is kept to the nanosecond"
    );
    let revoked = keys.revoke(&made.key.id).await.unwrap().unwrap();
    assert_eq!(revoked.last_used_at, Some(now));
    assert!(!keys.touch(&made.key.id, now).await.unwrap());
    assert!(keys.get(&made.key.id).await.unwrap().is_none());
    assert!(
        keys.all().await.unwrap().is_empty(),
        "nothing of it is left"
    );
    assert!(matches!(
        keys.verify(&made.token, now).await,
        Err(KeyRefused::Rejected(TokenError::Revoked))
    ));
}
