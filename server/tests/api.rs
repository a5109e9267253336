//! The HTTP API: sessions, campaigns, JSON errors with proper status codes.

mod common;

use common::TestServer;
use serde_json::{json, Value};

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn sessions_are_signed_cookies_or_bearer_tokens() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let response = http
        .post(server.url("/api/session"))
        .json(&json!({"display_name": "  Ada  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("rally_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["display_name"], "Ada", "names are trimmed");
    let token = body["token"].as_str().unwrap();

    let cookie_value = cookie.split(';').next().unwrap();
    let me: Value = http
        .get(server.url("/api/session"))
        .header("cookie", cookie_value)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["user_id"], body["user"]["user_id"]);
    let me: Value = http
        .get(server.url("/api/session"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["display_name"], "Ada");

    // Renaming keeps the user id.
    let renamed: Value = http
        .post(server.url("/api/session"))
        .bearer_auth(token)
        .json(&json!({"display_name": "Ada L."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["user"]["user_id"], body["user"]["user_id"]);
    assert_eq!(renamed["user"]["display_name"], "Ada L.");

    assert_eq!(
        error_of(http.get(server.url("/api/session")).send().await.unwrap()).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        error_of(
            http.get(server.url("/api/session"))
                .bearer_auth("forged.token")
                .send()
                .await
                .unwrap()
        )
        .await,
        (401, "unauthorized".into())
    );
    // A stale cookie is treated as no session, not an error, so browsers can still watch.
    let list = http
        .get(server.url("/api/campaigns"))
        .header("cookie", "rally_session=stale.value")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);

    for bad in [
        json!({"display_name": ""}),
        json!({"display_name": "x".repeat(41)}),
        json!({"name": "Ada"}),
        json!({"display_name": 5}),
    ] {
        assert_eq!(
            error_of(
                http.post(server.url("/api/session"))
                    .json(&bad)
                    .send()
                    .await
                    .unwrap()
            )
            .await,
            (400, "invalid".into()),
            "{bad}"
        );
    }
    let no_type = http
        .post(server.url("/api/session"))
        .body("{\"display_name\":\"A\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(no_type).await, (400, "invalid".into()));
    let signed_out = http
        .delete(server.url("/api/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 204);
    assert!(signed_out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn campaigns_can_be_created_listed_and_read() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let (user_id, token) = server.sign_in("Owner").await;

    let unauthenticated = http
        .post(server.url("/api/campaigns"))
        .json(&json!({"campaign_id": "a", "title": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(unauthenticated).await,
        (401, "unauthorized".into())
    );

    let created = http
        .post(server.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "summer-sale", "title": "Summer sale", "features": ["chat"], "config": {"ui_content": {"banner": "Hi"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["role"], "owner");
    assert_eq!(created["campaign"]["version"], 1);
    assert_eq!(
        created["campaign"]["created_by"]["user_id"],
        user_id.as_str()
    );
    assert_eq!(created["campaign"]["features"], json!(["chat"]));

    let duplicate = http
        .post(server.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "summer-sale", "title": "Again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(duplicate).await, (409, "conflict".into()));
    let bad_id = http
        .post(server.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "Summer Sale", "title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(bad_id).await, (400, "invalid".into()));
    let too_big = http
        .post(server.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "big", "title": "x", "description": "d".repeat(70_000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(too_big).await, (413, "too_large".into()));
    let long = http
        .post(server.url("/api/campaigns"))
        .bearer_auth(&token)
        .json(&json!({"campaign_id": "long", "title": "t".repeat(300)}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(long).await, (413, "too_large".into()));

    let list: Value = http
        .get(server.url("/api/campaigns"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "summer-sale");
    assert_eq!(list[0]["owner"], "Owner");
    assert!(
        list[0].get("your_role").is_none(),
        "a visitor is no member: {list}"
    );

    let snapshot: Value = http
        .get(server.url("/api/campaigns/summer-sale"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["campaign"]["title"], "Summer sale");
    assert_eq!(snapshot["role"], "viewer", "anonymous readers are viewers");
    assert_eq!(
        error_of(
            http.get(server.url("/api/campaigns/nope"))
                .send()
                .await
                .unwrap()
        )
        .await,
        (404, "not_found".into())
    );
    assert_eq!(
        error_of(
            http.get(server.url("/api/campaigns/Bad_Id"))
                .send()
                .await
                .unwrap()
        )
        .await,
        (400, "invalid".into())
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn anonymous_reads_can_be_switched_off() {
    let server = TestServer::start_with(&["--allow-anonymous", "false"]).await;
    let (_, token) = server.sign_in("Owner").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("private", "Private").await;
    let http = reqwest::Client::new();
    assert_eq!(
        error_of(
            http.get(server.url("/api/campaigns/private"))
                .send()
                .await
                .unwrap()
        )
        .await,
        (401, "unauthorized".into())
    );
    let mut anonymous = server.connect().await;
    let reply = anonymous
        .request(
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": "private"}),
            "s",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "unauthorized");
    owner.subscribe("private", None).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn websockets_from_foreign_origins_are_refused() {
    let server = TestServer::start().await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", format!("http://{}", server.addr).parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_ok(),
        "same-origin pages may connect"
    );
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer forged".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    server.stop().await.unwrap();
}
