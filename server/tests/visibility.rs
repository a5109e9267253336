//! Campaign visibility, through a real server: a private campaign answers exactly as a missing
//! one on every path a non-member can reach (WebSocket reads and writes, media, HTTP API, pages,
//! listings, `/metrics`); unlisted ones are watched through their address but listed only to
//! members; making a campaign private ends the subscriptions of those who may no longer see it.
//! The server runs with its own default (`private`) unless a test says otherwise.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WsClient};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "the-backend-and-rally-share-this-secret";

async fn private_default_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--default-visibility", "private"];
    args.extend_from_slice(extra);
    TestServer::start_with(&args).await
}

/// The owner's signed-in client, with `id` created at the server's default visibility.
async fn owner_with(server: &TestServer, id: &str) -> (WsClient, String) {
    let (_, token) = server.sign_in("Owner").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign(id, "Secret plans").await;
    (owner, token)
}

/// An error reply's payload with the campaign id written as `ID`, to compare a hidden campaign's
/// answer with a missing one's.
fn answer_for(reply: &Value, id: &str) -> Value {
    let text = reply["payload"].to_string().replace(id, "ID");
    serde_json::from_str(&text).unwrap()
}

/// Status and body, with one retry if they do not arrive within 5 s. Rarely (about one run in 30
/// with four servers in this process) a server-rendered page never finishes streaming: a Leptos
/// SSR hang (leptos-rs/leptos#4647, #4698), not an answer about the campaign. Whatever does
/// answer is checked.
async fn fetch(request: reqwest::RequestBuilder) -> (u16, String) {
    let retry = request.try_clone().unwrap();
    let first = async {
        let response = request.timeout(Duration::from_secs(5)).send().await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    };
    match first.await {
        Ok(answer) => answer,
        Err(error) if error.is_timeout() => {
            let response = retry.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
        Err(error) => panic!("{error}"),
    }
}

/// The answer with the campaign id written as `ID` and the page's per-response script nonce
/// taken out.
fn normalized((status, body): (u16, String), id: &str) -> (u16, String) {
    let mut body = body.replace(id, "ID");
    if let Some(start) = body.find("nonce=\"") {
        let value = &body[start + 7..];
        let nonce = value[..value.find('"').unwrap()].to_owned();
        body = body.replace(&nonce, "NONCE");
    }
    (status, body)
}

async fn set_visibility(
    client: &mut WsClient,
    id: &str,
    visibility: &str,
    request_id: &str,
) -> Value {
    client
        .update(id, json!({ "visibility": visibility }), request_id)
        .await
}

#[tokio::test]
async fn a_private_campaign_answers_non_members_exactly_as_a_missing_one_on_every_path() {
    let server = private_default_server(&["--metrics-campaigns", "true"]).await;
    let (_owner, owner_token) = owner_with(&server, "hidden").await;
    let (_, stranger_token) = server.sign_in("Stranger").await;
    let http = reqwest::Client::new();

    // The snapshot says what the campaign is; the default came from the setting.
    let snapshot: Value = http
        .get(server.url("/api/campaigns/hidden"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["campaign"]["visibility"], "private", "{snapshot}");

    for token in [Some(stranger_token.as_str()), None] {
        let who = if token.is_some() {
            "stranger"
        } else {
            "anonymous"
        };
        let mut client = match token {
            Some(token) => server.connect_as(token).await,
            None => server.connect().await,
        };
        // WebSocket: subscribe, write, media join.
        let requests = [
            (
                "campaign:subscribe:v1:requested",
                json!({"campaign_id": "CAMPAIGN"}),
            ),
            (
                "campaign:snapshot:v1:requested",
                json!({"campaign_id": "CAMPAIGN"}),
            ),
            (
                "campaign:update:v1:requested",
                json!({"campaign_id": "CAMPAIGN", "updates": {"title": "mine"}}),
            ),
            (
                "campaign:feature:v1:requested",
                json!({"campaign_id": "CAMPAIGN", "op": "add", "features": ["x"]}),
            ),
            (
                "media:join:v1:requested",
                json!({"campaign_id": "CAMPAIGN"}),
            ),
        ];
        for (n, (event_type, payload)) in requests.iter().enumerate() {
            let ask = |id: &str| {
                serde_json::from_str::<Value>(&payload.to_string().replace("CAMPAIGN", id)).unwrap()
            };
            let hidden = client
                .request(event_type, ask("hidden"), &format!("h{n}"))
                .await;
            let missing = client
                .request(event_type, ask("nowhere"), &format!("m{n}"))
                .await;
            assert_eq!(
                hidden["type"], missing["type"],
                "{who} {event_type}: {hidden}"
            );
            assert_eq!(
                answer_for(&hidden, "hidden"),
                answer_for(&missing, "nowhere"),
                "{who} {event_type}"
            );
            assert_eq!(hidden["payload"]["code"], "not_found", "{who} {event_type}");
        }

        // HTTP API and the server-rendered page.
        for path in ["/api/campaigns/ID", "/campaigns/ID"] {
            let get = |id: &str| {
                let request = http.get(server.url(&path.replace("ID", id)));
                match token {
                    Some(token) => request.bearer_auth(token),
                    None => request,
                }
            };
            let hidden = normalized(fetch(get("hidden")).await, "hidden");
            let missing = normalized(fetch(get("nowhere")).await, "nowhere");
            assert_eq!(hidden.0, 404, "{who} {path}");
            assert_eq!(hidden, missing, "{who} {path}");
            assert!(!hidden.1.contains("Secret plans"), "{who} {path}");
        }

        // Listings.
        let request = http.get(server.url("/api/campaigns"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let listed: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(listed, json!([]), "{who}");
        let (_, landing) = fetch(http.get(server.url("/"))).await;
        assert!(!landing.contains("Secret plans"));
    }

    // The owner is subscribed elsewhere; /metrics names public campaigns only.
    let mut watcher = server.connect_as(&owner_token).await;
    watcher.subscribe("hidden", None).await;
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("hidden"),
        "a private campaign is named in /metrics"
    );
    let mut owner = server.connect_as(&owner_token).await;
    owner
        .request(
            "campaign:create:v1:requested",
            json!({"campaign_id": "open-day", "title": "Open day", "visibility": "public"}),
            "create-public",
        )
        .await;
    owner.subscribe("open-day", None).await;
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rally_campaign_subscribers{campaign=\"open-day\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn members_and_holders_of_a_grant_see_a_private_campaign() {
    let server = private_default_server(&["--jwt-secret", SECRET]).await;
    let (_owner, owner_token) = owner_with(&server, "team").await;
    let http = reqwest::Client::new();

    // An invite shows the campaign as its maker sees it; accepting makes a member.
    let invite: Value = http
        .post(server.url("/api/campaigns/team/invites"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invite = invite["token"].as_str().unwrap();
    let details: Value = http
        .get(server.url(&format!("/api/invites/{invite}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["title"], "Secret plans", "{details}");
    let (_, editor_token) = server.sign_in("Editor").await;
    let mut editor = server.connect_as(&editor_token).await;
    let refused = editor
        .request(
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "team"}),
            "s0",
        )
        .await;
    assert_eq!(refused["payload"]["code"], "not_found");
    let accepted = http
        .post(server.url(&format!("/api/invites/{invite}/accept")))
        .bearer_auth(&editor_token)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    editor.subscribe("team", None).await;
    let listed: Value = http
        .get(server.url("/api/campaigns"))
        .bearer_auth(&editor_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], "team", "{listed}");
    assert_eq!(listed[0]["visibility"], "private", "{listed}");
    assert_eq!(
        listed[0]["your_role"], "editor",
        "a member's row says their role: {listed}"
    );

    // A backend token granting a role on the campaign makes its holder a member while carried.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mint = |claims: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let granted =
        mint(json!({"sub": "u-42", "aud": "rally", "exp": exp, "campaigns": {"team": "viewer"}}));
    let plain = mint(json!({"sub": "u-42", "aud": "rally", "exp": exp}));
    let mut with_grant = server.connect_as(&granted).await;
    with_grant.subscribe("team", None).await;
    let mut without = server.connect_as(&plain).await;
    let refused = without
        .request(
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "team"}),
            "s1",
        )
        .await;
    assert_eq!(refused["payload"]["code"], "not_found");
}

#[tokio::test]
async fn making_a_campaign_private_ends_non_members_subscriptions_within_a_second() {
    let server = TestServer::start_with(&["--default-visibility", "public"]).await;
    let (mut owner, owner_token) = owner_with(&server, "launch").await;
    owner.subscribe("launch", None).await;
    let (_, stranger_token) = server.sign_in("Stranger").await;
    let mut stranger = server.connect_as(&stranger_token).await;
    stranger.subscribe("launch", None).await;
    let mut anonymous = server.connect().await;
    anonymous.subscribe("launch", None).await;

    // Only the owner decides who may see it.
    let http = reqwest::Client::new();
    let invite: Value = http
        .post(server.url("/api/campaigns/launch/invites"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, editor_token) = server.sign_in("Editor").await;
    http.post(server.url(&format!(
        "/api/invites/{}/accept",
        invite["token"].as_str().unwrap()
    )))
    .bearer_auth(&editor_token)
    .send()
    .await
    .unwrap();
    let mut editor = server.connect_as(&editor_token).await;
    editor.subscribe("launch", None).await;
    let refused = set_visibility(&mut editor, "launch", "private", "e1").await;
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");

    // Unlisted: still watched through the address, no longer listed to strangers.
    let reply = set_visibility(&mut owner, "launch", "unlisted", "o1").await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    for client in [&mut stranger, &mut anonymous, &mut editor] {
        let mut event = client.next_state_event().await;
        // The owner's invite link and the editor joining, seen by those already following.
        while ["invite", "member"].contains(&event["payload"]["change"]["kind"].as_str().unwrap()) {
            event = client.next_state_event().await;
        }
        assert_eq!(
            event["payload"]["change"]["updates"]["visibility"],
            "unlisted"
        );
    }
    let listed: Value = http
        .get(server.url("/api/campaigns"))
        .bearer_auth(&stranger_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));

    // Private: the stranger's and the anonymous subscriptions end with the missing-campaign
    // answer, before the change is delivered to them; members keep following.
    // The stranger is in the live room too (any media on the public campaign flows to them).
    let joined = stranger
        .request(
            "media:join:v1:requested",
            json!({"campaign_id": "launch"}),
            "mj",
        )
        .await;
    assert_eq!(joined["type"], "media:join:v1:success", "{joined}");
    let started = Instant::now();
    let reply = set_visibility(&mut owner, "launch", "private", "o2").await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
    for client in [&mut stranger, &mut anonymous] {
        let frames = client
            .recv_until(|f| f["type"] == "campaign:subscription:v1:completed")
            .await;
        assert!(
            frames
                .iter()
                .all(|f| f["type"] != "campaign:state:v1:success"),
            "the change was delivered to someone who may no longer see it: {frames:?}"
        );
        let frame = frames.last().unwrap();
        assert_eq!(frame["payload"]["reason"]["code"], "not_found", "{frame}");
        assert_eq!(
            frame["payload"]["reason"]["message"],
            "campaign launch does not exist"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // ... and out of the live room at once, told why.
    let media = stranger
        .recv_until(|f| f["type"] == "media:session:v1:completed")
        .await;
    assert_eq!(
        media.last().unwrap()["payload"]["reason"],
        "campaign launch does not exist"
    );
    let again = stranger
        .request(
            "media:leave:v1:requested",
            json!({"campaign_id": "launch"}),
            "ml",
        )
        .await;
    assert_eq!(
        again["type"], "media:leave:v1:failed",
        "no longer in it: {again}"
    );
    let event = editor.next_state_event().await;
    assert_eq!(
        event["payload"]["change"]["updates"]["visibility"],
        "private"
    );
    // The stranger's next write is answered as for a missing campaign.
    let write = stranger.update("launch", json!({"title": "x"}), "s1").await;
    assert_eq!(write["payload"]["code"], "not_found", "{write}");
    let activity = editor
        .update("launch", json!({"title": "Still here"}), "e2")
        .await;
    assert_eq!(activity["type"], "campaign:update:v1:success", "{activity}");
}

#[tokio::test]
async fn new_campaigns_take_the_configured_default_unless_their_creator_chooses() {
    let server = TestServer::start_with(&["--default-visibility", "unlisted"]).await;
    let (_, token) = server.sign_in("Owner").await;
    let mut owner = server.connect_as(&token).await;
    let reply = owner.create_campaign("plain", "Plain").await;
    assert_eq!(
        reply["payload"]["campaign"]["visibility"], "unlisted",
        "{reply}"
    );
    let reply = owner
        .request(
            "campaign:create:v1:requested",
            json!({"campaign_id": "chosen", "title": "Chosen", "visibility": "private"}),
            "c2",
        )
        .await;
    assert_eq!(
        reply["payload"]["campaign"]["visibility"], "private",
        "{reply}"
    );
    let reply = owner
        .request(
            "campaign:create:v1:requested",
            json!({"campaign_id": "odd", "title": "Odd", "visibility": "secret"}),
            "c3",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "invalid", "{reply}");
    let refused =
        rally::config::Config::from_args_iter(["rally", "--default-visibility", "secret"]);
    assert!(refused.is_err());
}
