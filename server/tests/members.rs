//! Members through a real server: people join through invites (a membership event everyone
//! following sees), owners change roles and remove members (`campaign:member:v1`), a removed
//! member's next write is refused and their subscription to a private campaign ends within a
//! second, and the creator always owns the campaign.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WsClient};
use serde_json::{json, Value};

/// The owner makes an invite for `campaign`; `name` signs in and accepts it.
async fn invited(
    server: &TestServer,
    owner_token: &str,
    campaign: &str,
    name: &str,
) -> (String, String) {
    let http = reqwest::Client::new();
    let invite: Value = http
        .post(server.url(&format!("/api/campaigns/{campaign}/invites")))
        .bearer_auth(owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (user_id, token) = server.sign_in(name).await;
    let accepted: Value = http
        .post(server.url(&format!(
            "/api/invites/{}/accept",
            invite["token"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["role"], "editor", "{accepted}");
    (user_id, token)
}

async fn set_role(client: &mut WsClient, user: &str, role: Option<&str>, id: &str) -> Value {
    client
        .request(
            "campaign:member:v1:requested",
            json!({"campaign_id": "crew", "user_id": user, "role": role}),
            id,
        )
        .await
}

#[tokio::test]
async fn owners_manage_members_and_a_removed_member_loses_a_private_campaign_within_a_second() {
    let server = TestServer::start_with(&["--default-visibility", "private"]).await;
    let (owner_id, owner_token) = server.sign_in("Olga").await;
    let mut owner = server.connect_as(&owner_token).await;
    owner.create_campaign("crew", "Crew").await;
    owner.subscribe("crew", None).await;

    // Joining is a change everyone following sees, made by the person who joined.
    let (bob_id, bob_token) = invited(&server, &owner_token, "crew", "Bob").await;
    let made = owner.next_state_event().await;
    assert_eq!(made["payload"]["change"]["kind"], "invite", "{made}");
    let joined = owner.next_state_event().await;
    assert_eq!(joined["payload"]["change"]["kind"], "member", "{joined}");
    assert_eq!(joined["payload"]["changed_by"]["user_id"], bob_id.as_str());
    assert_eq!(joined["payload"]["change"]["role"], "editor");
    let (carol_id, carol_token) = invited(&server, &owner_token, "crew", "Carol").await;
    owner.next_state_event().await; // her link
    owner.next_state_event().await; // her joining
    let mut bob = server.connect_as(&bob_token).await;
    let reply = bob.subscribe("crew", None).await;
    assert_eq!(reply["payload"]["role"], "editor");
    let members = &reply["payload"]["resume"]["campaign"]["members"];
    assert_eq!(
        members[&bob_id],
        json!({"display_name": "Bob", "role": "editor"})
    );
    assert_eq!(members[&carol_id]["role"], "editor");

    // Only owners manage members; nobody changes the creator; only members can be changed.
    let refused = set_role(&mut bob, &carol_id, None, "b1").await;
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    let refused = set_role(&mut owner, &owner_id, Some("viewer"), "o0").await;
    assert_eq!(refused["payload"]["code"], "invalid", "{refused}");
    let refused = set_role(&mut owner, "u-nobody", Some("editor"), "o1").await;
    assert_eq!(refused["payload"]["code"], "invalid", "{refused}");

    // An owner promotes Carol; she may now manage members too.
    let reply = set_role(&mut owner, &carol_id, Some("owner"), "o2").await;
    assert_eq!(reply["type"], "campaign:member:v1:success", "{reply}");
    let mut carol = server.connect_as(&carol_token).await;
    let reply = carol.subscribe("crew", None).await;
    assert_eq!(reply["payload"]["role"], "owner");

    // Demoted to viewer: Bob's next write is refused, he still watches the private campaign.
    let reply = set_role(&mut carol, &bob_id, Some("viewer"), "c1").await;
    assert_eq!(reply["type"], "campaign:member:v1:success", "{reply}");
    let promoted = bob.next_state_event().await;
    assert_eq!(promoted["payload"]["change"]["role"], "owner", "{promoted}");
    let demoted = bob.next_state_event().await;
    assert_eq!(demoted["payload"]["change"]["role"], "viewer", "{demoted}");
    let write = bob.update("crew", json!({"title": "Mine"}), "b2").await;
    assert_eq!(write["payload"]["code"], "forbidden", "{write}");

    // Removed: his subscription ends within a second, before the change reaches him, and the
    // campaign is to him as if it did not exist.
    let started = Instant::now();
    let reply = set_role(&mut carol, &bob_id, None, "c2").await;
    assert_eq!(reply["type"], "campaign:member:v1:success", "{reply}");
    let frames = bob
        .recv_until(|f| f["type"] == "campaign:subscription:v1:completed")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "campaign:state:v1:success"),
        "{frames:?}"
    );
    assert_eq!(
        frames.last().unwrap()["payload"]["reason"]["code"],
        "not_found"
    );
    let write = bob.update("crew", json!({"title": "Mine"}), "b3").await;
    assert_eq!(write["payload"]["code"], "not_found", "{write}");
    let removed = owner
        .recv_until(|f| {
            f["type"] == "campaign:state:v1:success" && f["payload"]["change"]["role"].is_null()
        })
        .await;
    let removed = removed.last().unwrap();
    assert_eq!(
        removed["payload"]["change"]["member"]["display_name"],
        "Bob"
    );
    assert_eq!(removed["payload"]["changed_by"]["display_name"], "Carol");

    // The membership survives a restart of the campaign's task (it is in the stored state).
    let snapshot: Value = reqwest::Client::new()
        .get(server.url("/api/campaigns/crew"))
        .bearer_auth(&carol_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["role"], "owner");
    assert!(snapshot["campaign"]["members"].get(&bob_id).is_none());
}

/// An owner chooses what an invite link gives and how long it works; anything else is refused
/// with `invalid`, and only owners make links.
#[tokio::test]
async fn invites_give_the_role_and_last_as_long_as_their_maker_chose() {
    let server = TestServer::start_with(&["--default-visibility", "private"]).await;
    let (_, owner_token) = server.sign_in("Olga").await;
    let mut owner = server.connect_as(&owner_token).await;
    owner.create_campaign("choices", "Choices").await;
    let http = reqwest::Client::new();
    let make = |token: String, body: Option<Value>| {
        let mut request = http
            .post(server.url("/api/campaigns/choices/invites"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expires_in = |invite: &Value| {
        let at: rally_app::model::Timestamp =
            invite["expires_at"].as_str().unwrap().parse().unwrap();
        (at.unix_nanos() / 1_000_000_000) as i64 - now_secs
    };

    let default: Value = make(owner_token.clone(), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(default["role"], "editor");
    assert!(
        (7 * 86400 - 5..=7 * 86400 + 5).contains(&expires_in(&default)),
        "{default}"
    );

    let viewer = make(
        owner_token.clone(),
        Some(json!({"role": "viewer", "expires_in_secs": 3600})),
    )
    .await
    .unwrap();
    assert_eq!(viewer.status(), 201);
    let viewer: Value = viewer.json().await.unwrap();
    assert_eq!(viewer["role"], "viewer");
    assert!((3595..=3605).contains(&expires_in(&viewer)), "{viewer}");
    let details: Value = http
        .get(server.url(&format!(
            "/api/invites/{}",
            viewer["token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["role"], "viewer");
    let (_, dana_token) = server.sign_in("Dana").await;
    let accepted: Value = http
        .post(server.url(&format!(
            "/api/invites/{}/accept",
            viewer["token"].as_str().unwrap()
        )))
        .bearer_auth(&dana_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["role"], "viewer");

    for (body, reason) in [
        (
            json!({"expires_in_secs": 60}),
            "expires_in_secs must be 300-2592000",
        ),
        (
            json!({"expires_in_secs": 31 * 86400}),
            "expires_in_secs must be 300-2592000",
        ),
        (json!({"role": "admin"}), "invite request"),
        (json!({"rolle": "viewer"}), "unknown field"),
    ] {
        let refused = make(owner_token.clone(), Some(body.clone())).await.unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid", "{body}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(reason),
            "{body}: {error}"
        );
    }
    // A viewer (Dana) makes no links.
    let refused = make(dana_token, None).await.unwrap();
    assert_eq!(refused.status(), 403);
    server.stop().await.unwrap();
}

/// What `method path` answers with `token` (None: no credentials): the status and the body.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Invite links are kept by their campaign: a single-use link lets one person in (who may come
/// back), a counted one as many as it says, a withdrawn one nobody; owners list them with who
/// used each, others may not; every change to them is an event everyone following sees.
#[tokio::test]
async fn invite_links_let_in_as_many_people_as_they_allow_until_an_owner_withdraws_them() {
    use reqwest::Method;
    let server = TestServer::start_with(&["--default-visibility", "private"]).await;
    let (_, olga) = server.sign_in("Olga").await;
    let mut owner = server.connect_as(&olga).await;
    owner.create_campaign("links", "Links").await;
    owner.subscribe("links", None).await;
    let invites = "/api/campaigns/links/invites";
    let make = |body: Value| call(&server, Method::POST, invites, Some(&olga), Some(body));

    let (status, once) = make(json!({"max_uses": 1})).await;
    assert_eq!(status, 201, "{once}");
    assert_eq!(
        (once["status"].as_str(), once["max_uses"].as_u64()),
        (Some("open"), Some(1))
    );
    assert_eq!(once["made_by"]["display_name"], "Olga");
    let made = owner.next_state_event().await;
    assert_eq!(made["payload"]["change"]["kind"], "invite", "{made}");
    assert_eq!(made["payload"]["change"]["terms"]["id"], once["id"]);
    assert!(
        !made.to_string().contains(once["token"].as_str().unwrap()),
        "the link itself is never broadcast"
    );
    let running = &server;
    let accept = |link: &Value, token: String| {
        let path = format!("/api/invites/{}/accept", link["token"].as_str().unwrap());
        async move { call(running, Method::POST, &path, Some(&token), None).await }
    };
    let (_, bob) = server.sign_in("Bob").await;
    let (_, cy) = server.sign_in("Cy").await;
    let (_, dee) = server.sign_in("Dee").await;
    let (status, joined) = accept(&once, bob.clone()).await;
    assert_eq!((status, joined["role"].as_str()), (200, Some("editor")));
    let used = owner.next_state_event().await;
    assert_eq!(used["payload"]["change"]["invite"], once["id"], "{used}");
    assert_eq!(
        accept(&once, bob.clone()).await.0,
        200,
        "its user may come back"
    );
    let (status, refused) = accept(&once, cy.clone()).await;
    assert_eq!(status, 400);
    assert!(
        refused.to_string().contains("used as many times"),
        "{refused}"
    );
    let details = format!("/api/invites/{}", once["token"].as_str().unwrap());
    let (status, refused) = call(&server, Method::GET, &details, Some(&dee), None).await;
    assert_eq!(status, 400, "a used-up link offers nothing: {refused}");

    let (_, twice) = make(json!({"max_uses": 2, "role": "viewer"})).await;
    owner.next_state_event().await;
    let details = format!("/api/invites/{}", twice["token"].as_str().unwrap());
    let (status, offer) = call(&server, Method::GET, &details, Some(&dee), None).await;
    assert_eq!(
        (status, offer["uses_left"].as_u64()),
        (200, Some(2)),
        "{offer}"
    );
    assert_eq!(accept(&twice, cy.clone()).await.0, 200);
    owner.next_state_event().await;
    let (status, listed) = call(&server, Method::GET, invites, Some(&olga), None).await;
    assert_eq!(status, 200, "{listed}");
    let summary: Vec<(String, String, Vec<String>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            let users = link["uses"].as_array().unwrap().iter();
            (
                link["role"].as_str().unwrap().to_owned(),
                link["status"].as_str().unwrap().to_owned(),
                users
                    .map(|u| u["display_name"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let expected = [
        (
            "viewer".to_owned(),
            "open".to_owned(),
            vec!["Cy".to_owned()],
        ),
        (
            "editor".to_owned(),
            "used_up".to_owned(),
            vec!["Bob".to_owned()],
        ),
    ];
    assert_eq!(summary, expected, "newest first, with who used each");
    assert_eq!(
        listed[0]["token"], twice["token"],
        "an owner can copy a link again"
    );

    // Only owners see and withdraw links; a campaign's stranger learns nothing of it.
    let withdraw = format!("{invites}/{}", twice["id"].as_str().unwrap());
    for (who, token, status) in [("editor", Some(&bob), 403), ("stranger", Some(&dee), 404)] {
        let listed = call(
            &server,
            Method::GET,
            invites,
            token.map(|t| t.as_str()),
            None,
        )
        .await;
        assert_eq!(listed.0, status, "{who} lists: {}", listed.1);
        let gone = call(
            &server,
            Method::DELETE,
            &withdraw,
            token.map(|t| t.as_str()),
            None,
        )
        .await;
        assert_eq!(gone.0, status, "{who} withdraws: {}", gone.1);
    }
    assert_eq!(call(&server, Method::GET, invites, None, None).await.0, 401);

    assert_eq!(
        call(&server, Method::DELETE, &withdraw, Some(&olga), None)
            .await
            .0,
        204
    );
    let withdrawn = owner.next_state_event().await;
    assert_eq!(
        withdrawn["payload"]["change"]["kind"], "invite_withdrawn",
        "{withdrawn}"
    );
    assert_eq!(
        call(&server, Method::DELETE, &withdraw, Some(&olga), None)
            .await
            .0,
        204
    );
    let (status, refused) = accept(&twice, dee.clone()).await;
    assert_eq!(status, 400);
    assert!(refused.to_string().contains("withdrawn"), "{refused}");
    let unknown = format!("{invites}/0123456789abcdef");
    assert_eq!(
        call(&server, Method::DELETE, &unknown, Some(&olga), None)
            .await
            .0,
        404
    );
    let malformed = format!("{invites}/not-hex");
    assert_eq!(
        call(&server, Method::DELETE, &malformed, Some(&olga), None)
            .await
            .0,
        400
    );
    let (status, bad) = make(json!({"max_uses": 0})).await;
    assert_eq!(status, 400);
    assert!(bad.to_string().contains("max_uses must be 1-1000"), "{bad}");
    server.stop().await.unwrap();
}

/// Per-user quotas: campaigns owned and open invite links, counted across campaigns; a link
/// withdrawn or used up no longer counts.
#[tokio::test]
async fn people_own_as_many_campaigns_and_open_links_as_the_settings_allow() {
    use reqwest::Method;
    let server = TestServer::start_with(&[
        "--max-campaigns-per-user",
        "2",
        "--max-invites-per-user",
        "2",
    ])
    .await;
    let (_, olga) = server.sign_in("Olga").await;
    let mut owner = server.connect_as(&olga).await;
    owner.create_campaign("first", "First").await;
    owner.create_campaign("second", "Second").await;
    let refused = owner.create_campaign_raw("third").await;
    assert_eq!(refused["payload"]["code"], "limit_exceeded", "{refused}");
    assert!(
        refused.to_string().contains("you own 2 campaigns"),
        "{refused}"
    );
    let (status, _) = call(
        &server,
        Method::POST,
        "/api/campaigns",
        Some(&olga),
        Some(json!({"campaign_id": "third", "title": "Third"})),
    )
    .await;
    assert_eq!(status, 429, "the same limit over HTTP");
    let (_, bob) = server.sign_in("Bob").await;
    let private = json!({"campaign_id": "bobs", "title": "Bob's", "visibility": "private"});
    let (status, _) = call(
        &server,
        Method::POST,
        "/api/campaigns",
        Some(&bob),
        Some(private),
    )
    .await;
    assert_eq!(status, 201);

    let make = |campaign: &str, body: Value| {
        let path = format!("/api/campaigns/{campaign}/invites");
        let olga = olga.clone();
        let server = &server;
        async move { call(server, Method::POST, &path, Some(&olga), Some(body)).await }
    };
    let (_, once) = make("first", json!({"max_uses": 1})).await;
    assert_eq!(make("second", json!({})).await.0, 201);
    let (status, refused) = make("second", json!({})).await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        refused.to_string().contains("2 open invite links"),
        "{refused}"
    );
    // The quota is asked only of owners: to others a private campaign stays a missing one.
    let (hidden, _) = make("bobs", json!({})).await;
    let (missing, _) = make("nowhere", json!({})).await;
    assert_eq!((hidden, missing), (404, 404));
    let path = format!("/api/invites/{}/accept", once["token"].as_str().unwrap());
    assert_eq!(
        call(&server, Method::POST, &path, Some(&bob), None).await.0,
        200
    );
    assert_eq!(
        make("first", json!({})).await.0,
        201,
        "a used-up link no longer counts"
    );
    server.stop().await.unwrap();
}
