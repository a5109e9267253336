//! Changing campaigns over HTTP against a real server: every write the WebSocket makes, with
//! the same codes, `ETag`/`If-Match` on the version, and each accepted write reaching WebSocket
//! subscribers like any other; and the campaign list in filtered pages.

mod common;

use common::TestServer;
use serde_json::{json, Value};

struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    fn new(server: &TestServer, token: Option<&str>) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: server.url(""),
            token: token.map(str::to_owned),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("answers are JSON")
        };
        (status, headers, body)
    }

    async fn patch(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let (status, _, body) = self
            .send(reqwest::Method::PATCH, path, Some(body), headers)
            .await;
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, _, body) = self
            .send(reqwest::Method::POST, path, Some(body), &[])
            .await;
        (status, body)
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn http_writes_change_the_campaign_and_reach_websocket_subscribers() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&token));
    let (status, created) = ann
        .post(
            "/api/campaigns",
            json!({"campaign_id": "http-w", "title": "Start"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    let mut watcher = server.connect().await;
    watcher.subscribe("http-w", None).await;

    // Fields.
    let (status, headers, ack) = ann
        .send(
            reqwest::Method::PATCH,
            "/api/campaigns/http-w",
            Some(json!({"updates": {"title": "Spring", "status": "active"}})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    let v1 = ack["version"].as_u64().unwrap();
    assert_eq!(ack["unchanged"], false);
    assert_eq!(headers["etag"], format!("\"{v1}\"").as_str());
    let event = watcher.next_state_event().await;
    assert_eq!(
        event["payload"]["version"], v1,
        "the subscriber sees the HTTP write"
    );

    // Features, config, text.
    let (status, ack) = ann
        .post(
            "/api/campaigns/http-w/features",
            json!({"op": "add", "features": ["polls"]}),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    let (status, ack) = ann
        .post(
            "/api/campaigns/http-w/config",
            json!({"section": "ui_content", "values": {"headline": "Hello"}}),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    let v3 = ack["version"].as_u64().unwrap();
    let (status, ack) = ann
        .post(
            "/api/campaigns/http-w/text",
            json!({"field": "description", "edit": ["Hi"],
                   "base_version": v3, "edit_id": "http-1"}),
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    let v4 = ack["version"].as_u64().unwrap();
    for expected in v1 + 1..=v4 {
        assert_eq!(
            watcher.next_state_event().await["payload"]["version"],
            expected
        );
    }

    // The read shows it all, tagged with the version; a matching If-None-Match is 304.
    let (status, headers, read) = ann
        .send(reqwest::Method::GET, "/api/campaigns/http-w", None, &[])
        .await;
    assert_eq!(status, 200);
    let campaign = &read["campaign"];
    assert_eq!(campaign["title"], "Spring");
    assert_eq!(campaign["status"], "active");
    assert_eq!(campaign["description"], "Hi");
    assert_eq!(campaign["config"]["ui_content"]["headline"], "Hello");
    assert_eq!(campaign["features"][0], "polls");
    let tag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(tag, format!("\"{v4}\""));
    let (status, _, _) = ann
        .send(
            reqwest::Method::GET,
            "/api/campaigns/http-w",
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(status, 304);

    // The same values again: no new version.
    let (status, ack) = ann
        .patch(
            "/api/campaigns/http-w",
            json!({"updates": {"title": "Spring"}}),
            &[],
        )
        .await;
    assert_eq!((status, &ack["unchanged"]), (200, &json!(true)), "{ack}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn if_match_is_the_base_version_and_conflicts_are_409() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&token));
    let (_, created) = ann
        .post(
            "/api/campaigns",
            json!({"campaign_id": "http-c", "title": "Start"}),
        )
        .await;
    let base = created["campaign"]["version"].as_u64().unwrap();
    let tag = format!("\"{base}\"");

    let (status, _) = ann
        .patch(
            "/api/campaigns/http-c",
            json!({"updates": {"title": "Mine"}}),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(status, 200);
    // Someone else, from the same base, on the same field: conflict.
    let (status, body) = ann
        .patch(
            "/api/campaigns/http-c",
            json!({"updates": {"title": "Theirs"}}),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    // From the same base on another field: no clash, applied.
    let (status, body) = ann
        .patch(
            "/api/campaigns/http-c",
            json!({"updates": {"description": "Other"}}),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // base_version in the body does the same; both at once must agree.
    let (status, body) = ann
        .patch(
            "/api/campaigns/http-c",
            json!({"updates": {"title": "Late"}, "base_version": base}),
            &[],
        )
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let (status, body) = ann
        .patch(
            "/api/campaigns/http-c",
            json!({"updates": {"title": "Late"}, "base_version": base}),
            &[("if-match", "\"999\"")],
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_http_writes_get_the_websocket_codes() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let (_, bob_token) = server.sign_in("Bob").await;
    let ann = Http::new(&server, Some(&token));
    let bob = Http::new(&server, Some(&bob_token));
    let anonymous = Http::new(&server, None);
    ann.post(
        "/api/campaigns",
        json!({"campaign_id": "http-bad", "title": "Start"}),
    )
    .await;

    let cases: Vec<(&Http, &str, Value, &[(&str, &str)], u16, &str)> = vec![
        (
            &anonymous,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": "X"}}),
            &[],
            401,
            "unauthorized",
        ),
        (
            &bob,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": "X"}}),
            &[],
            403,
            "forbidden",
        ),
        (
            &ann,
            "/api/campaigns/http-missing",
            json!({"updates": {"title": "X"}}),
            &[],
            404,
            "not_found",
        ),
        (
            &ann,
            "/api/campaigns/Bad!",
            json!({"updates": {"title": "X"}}),
            &[],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": ""}}),
            &[],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!({"updates": {"colour": "red"}}),
            &[],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": "X"}, "campaign_id": "other"}),
            &[],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!(["not", "an", "object"]),
            &[],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": "X"}}),
            &[("if-match", "seven")],
            400,
            "invalid",
        ),
        (
            &ann,
            "/api/campaigns/http-bad",
            json!({"updates": {"title": "x".repeat(70_000)}}),
            &[],
            413,
            "too_large",
        ),
    ];
    for (who, path, body, headers, status, expected) in cases {
        let (got, answer) = who.patch(path, body.clone(), headers).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected),
            "{path} {body:.80} {headers:?}: {answer}"
        );
    }
    let (status, body) = ann
        .post(
            "/api/campaigns/http-bad/features",
            json!({"op": "explode", "features": []}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");
    let (status, body) = ann
        .post(
            "/api/campaigns/http-bad/config",
            json!({"section": "Not A Section", "values": {}}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_list_filters_and_pages_with_a_next_link() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&token));
    for (id, status) in [
        ("p-a", "draft"),
        ("p-b", "active"),
        ("p-c", "active"),
        ("p-d", "active"),
    ] {
        let (code, body) = ann
            .post(
                "/api/campaigns",
                json!({"campaign_id": id, "title": id, "status": status}),
            )
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let ids = |body: &Value| {
        body.as_array()
            .unwrap()
            .iter()
            .map(|row| row["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (status, headers, page) = ann
        .send(
            reqwest::Method::GET,
            "/api/campaigns?status=active&limit=2",
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), ["p-b", "p-c"]);
    let link = headers["link"].to_str().unwrap();
    assert_eq!(
        link,
        "</api/campaigns?limit=2&after=p-c&status=active>; rel=\"next\""
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let (_, headers, page) = ann.send(reqwest::Method::GET, next, None, &[]).await;
    assert_eq!(ids(&page), ["p-d"]);
    assert!(headers.get("link").is_none(), "the last page has no next");

    let (_, _, all) = ann
        .send(reqwest::Method::GET, "/api/campaigns", None, &[])
        .await;
    assert_eq!(ids(&all), ["p-a", "p-b", "p-c", "p-d"]);
    for bad in [
        "limit=0",
        "limit=1001",
        "status=loud",
        "after=Bad!",
        "colour=red",
    ] {
        let (status, _, body) = ann
            .send(
                reqwest::Method::GET,
                &format!("/api/campaigns?{bad}"),
                None,
                &[],
            )
            .await;
        assert_eq!((status, code(&body)), (400, "invalid"), "{bad}: {body}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_write_sent_again_with_its_idempotency_key_applies_once_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&dir, &[]).await;
    let (_, token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&token));
    ann.post(
        "/api/campaigns",
        json!({"campaign_id": "http-once", "title": "Start"}),
    )
    .await;
    let mut watcher = server.connect().await;
    watcher.subscribe("http-once", None).await;

    let named = [("idempotency-key", "2f0c6a4e-retry-1")];
    let (status, first) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "A"}}),
            &named,
        )
        .await;
    assert_eq!(
        (status, &first["unchanged"]),
        (200, &json!(false)),
        "{first}"
    );
    let landed = first["version"].as_u64().unwrap();
    // Someone changes the title after it; then the first request is sent again (its answer was
    // lost): it must not set the title back.
    let (_, other) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "B"}}),
            &[],
        )
        .await;
    let (status, again) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "A"}}),
            &named,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["version"], landed,
        "answered with the version it landed at"
    );
    assert_eq!(again["unchanged"], true);
    let events: Vec<u64> = [
        watcher.next_state_event().await,
        watcher.next_state_event().await,
    ]
    .iter()
    .map(|e| e["payload"]["version"].as_u64().unwrap())
    .collect();
    assert_eq!(events, [landed, other["version"].as_u64().unwrap()]);
    assert_eq!(
        watcher
            .next_state_event_within(std::time::Duration::from_millis(300))
            .await,
        None,
        "no third event"
    );

    // Sent twice at once (both in one batch, or one just behind the other): one change.
    let twice = [("idempotency-key", "sent-twice-at-once")];
    let body = json!({"updates": {"title": "Twice"}});
    let ((s1, one), (s2, two)) = tokio::join!(
        ann.patch("/api/campaigns/http-once", body.clone(), &twice),
        ann.patch("/api/campaigns/http-once", body.clone(), &twice)
    );
    assert_eq!((s1, s2), (200, 200), "{one} {two}");
    assert_eq!(one["version"], two["version"], "{one} {two}");
    let changed = [&one, &two]
        .iter()
        .filter(|a| a["unchanged"] == false)
        .count();
    assert_eq!(changed, 1, "exactly one of them changed it: {one} {two}");
    assert_eq!(
        watcher.next_state_event().await["payload"]["version"],
        one["version"]
    );
    // Back to B, so the rest of the test reads as before.
    let (_, back) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "B"}}),
            &[],
        )
        .await;
    assert_eq!(
        watcher.next_state_event().await["payload"]["version"],
        back["version"]
    );

    // The same key for another change is refused; a malformed key too.
    let (status, body) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "C"}}),
            &named,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");
    for bad in ["", "has space", &"k".repeat(65)] {
        let (status, body) = ann
            .patch(
                "/api/campaigns/http-once",
                json!({"updates": {"title": "D"}}),
                &[("idempotency-key", bad)],
            )
            .await;
        assert_eq!((status, code(&body)), (400, "invalid"), "{bad:?}: {body}");
    }

    // The name is kept with the event: a restarted server still knows it.
    server.stop().await.unwrap();
    let server = TestServer::start_in(&dir, &[]).await;
    let ann = Http::new(&server, Some(&token));
    let (status, again) = ann
        .patch(
            "/api/campaigns/http-once",
            json!({"updates": {"title": "A"}}),
            &named,
        )
        .await;
    assert_eq!(
        (status, &again["version"], &again["unchanged"]),
        (200, &json!(landed), &json!(true)),
        "{again}"
    );
    let (_, _, read) = ann
        .send(reqwest::Method::GET, "/api/campaigns/http-once", None, &[])
        .await;
    assert_eq!(read["campaign"]["title"], "B");
    server.stop().await.unwrap();
}

/// `DELETE` with the client's credential; the status.
async fn delete(http: &Http, path: &str) -> u16 {
    http.send(reqwest::Method::DELETE, path, None, &[]).await.0
}

async fn get(http: &Http, path: &str) -> (u16, Value) {
    let (status, _, body) = http.send(reqwest::Method::GET, path, None, &[]).await;
    (status, body)
}

#[tokio::test]
async fn an_api_key_reads_and_writes_only_where_it_reaches_until_revoked() {
    let server = TestServer::start().await;
    let (_, ann_token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&ann_token));
    let (_, bob_token) = server.sign_in("Bob").await;
    let bob = Http::new(&server, Some(&bob_token));
    for (who, id) in [(&ann, "launch"), (&ann, "sale"), (&bob, "bobs")] {
        let (status, body) = who
            .post(
                "/api/campaigns",
                json!({"campaign_id": id, "title": id, "visibility": "private"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    // Only an owner makes keys for a campaign; only an admin for all of them.
    let ask = |name: &str, access: &str, campaigns: &[&str]| json!({"name": name, "access": access, "campaigns": campaigns});
    let (status, body) = ann.post("/api/keys", ask("CMS", "write", &["bobs"])).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = bob
        .post("/api/keys", ask("CMS", "write", &["launch"]))
        .await;
    assert_eq!(status, 404, "a private campaign is missing to Bob: {body}");
    let (status, body) = ann
        .post(
            "/api/keys",
            json!({"name": "All", "access": "read", "all_campaigns": true}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = ann
        .post(
            "/api/keys",
            json!({"name": "", "access": "read", "campaigns": ["launch"]}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");
    let (status, body) = ann
        .post(
            "/api/keys",
            json!({"name": "x", "access": "admin", "campaigns": ["launch"]}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid"), "{body}");

    let (status, made) = ann
        .post("/api/keys", ask("CMS", "write", &["launch"]))
        .await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rk_"), "{token}");
    let key_id = made["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(made["key"]["campaigns"], json!(["launch"]));
    let (_, reader) = ann
        .post("/api/keys", ask("Report", "read", &["launch"]))
        .await;
    let reader = Http::new(&server, Some(reader["token"].as_str().unwrap()));
    let cms = Http::new(&server, Some(&token));

    // Where it reaches: reads a private campaign, and writes as itself, seen by subscribers.
    let mut watcher = server.connect_as(&ann_token).await;
    watcher.subscribe("launch", None).await;
    let (status, body) = get(&cms, "/api/campaigns/launch").await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("editor")),
        "{body}"
    );
    let (status, ack) = cms
        .patch(
            "/api/campaigns/launch",
            json!({"updates": {"title": "From the CMS"}}),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{ack}");
    let event = watcher.next_state_event().await;
    assert_eq!(event["payload"]["version"], ack["version"], "{event}");
    assert_eq!(
        event["payload"]["changed_by"]["display_name"], "CMS",
        "{event}"
    );
    let (_, seen) = get(&ann, "/api/campaigns/launch").await;
    assert_eq!(seen["campaign"]["title"], "From the CMS");
    let (status, list) = get(&cms, "/api/campaigns").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["launch"], "a key lists only what it reaches");
    let stream = common::event_stream_request(
        &server,
        "launch",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(stream.status(), 200);
    drop(stream);

    // A read key reads, and is refused a write.
    assert_eq!(get(&reader, "/api/campaigns/launch").await.0, 200);
    let (status, body) = reader
        .patch(
            "/api/campaigns/launch",
            json!({"updates": {"title": "No"}}),
            &[],
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");

    // Beyond its reach: 403, whether the campaign exists or not, on every door.
    for id in ["sale", "bobs", "nowhere"] {
        let (status, body) = get(&cms, &format!("/api/campaigns/{id}")).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{id}: {body}");
        let (status, body) = cms
            .patch(
                &format!("/api/campaigns/{id}"),
                json!({"updates": {"title": "x"}}),
                &[],
            )
            .await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{id}: {body}");
        let stream = common::event_stream_request(
            &server,
            id,
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(stream.status(), 403, "{id}");
    }
    // Keys read and change campaigns; nothing else.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/keys",
            Some(ask("Mine", "read", &["launch"])),
        ),
        (reqwest::Method::GET, "/api/keys", None),
        (
            reqwest::Method::POST,
            "/api/campaigns",
            Some(json!({"campaign_id": "by-key", "title": "x"})),
        ),
        (reqwest::Method::GET, "/api/sessions", None),
        (
            reqwest::Method::POST,
            "/api/campaigns/launch/invites",
            Some(json!({})),
        ),
        (reqwest::Method::GET, "/api/invites/anything", None),
        (reqwest::Method::DELETE, "/api/session", None),
    ] {
        let (status, _, body) = cms.send(method, path, body, &[]).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{path}: {body}");
    }
    // Only as a bearer header on the HTTP API and event streams: in a cookie it is no
    // credential (a private campaign is missing), and no page may hand it to a browser.
    let as_cookie = reqwest::Client::new()
        .get(server.url("/api/campaigns/launch"))
        .header("cookie", format!("rally_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_cookie.status(), 404);
    let handed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", server.url("").trim_end_matches('/'))
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(handed.status(), 401);
    assert!(handed.headers().get("set-cookie").is_none());
    let in_query = reqwest::get(server.url(&format!("/api/campaigns/launch/events?token={token}")))
        .await
        .unwrap();
    assert_eq!(in_query.status(), 401);
    let mut upgrade =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            server
                .url("")
                .trim_start_matches("http://")
                .trim_end_matches('/')
        ))
        .unwrap();
    upgrade
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(upgrade).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("a key opened a WebSocket: {:?}", other.map(|_| ())),
    }

    // Its maker lists it (never its token) with its last use; others do not see it.
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = get(&ann, "/api/keys").await.1;
        if listed[1]["last_used_at"].is_string() || listed[0]["last_used_at"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let keys = listed.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{listed}");
    let cms_row = keys.iter().find(|k| k["id"] == key_id.as_str()).unwrap();
    assert!(cms_row["last_used_at"].is_string(), "{cms_row}");
    assert!(
        !listed.to_string().contains(&token[3..]),
        "the token is never listed"
    );
    assert_eq!(get(&bob, "/api/keys").await.1, json!([]));
    let (status, _) = get(&bob, "/api/keys?campaign=launch").await;
    assert_eq!(status, 404);
    let (status, for_launch) = get(&ann, "/api/keys?campaign=launch").await;
    assert_eq!((status, for_launch.as_array().unwrap().len()), (200, 2));

    // Wrong secrets and revoked keys: 401.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    for bad in [forged.as_str(), "rk_nonsense"] {
        let (status, body) = get(&Http::new(&server, Some(bad)), "/api/campaigns/launch").await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        delete(&bob, &format!("/api/keys/{key_id}")).await,
        404,
        "not Bob's to revoke"
    );
    assert_eq!(delete(&ann, &format!("/api/keys/{key_id}")).await, 204);
    let (status, body) = get(&cms, "/api/campaigns/launch").await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    assert_eq!(delete(&ann, &format!("/api/keys/{key_id}")).await, 404);
}

#[tokio::test]
async fn keys_for_every_campaign_come_from_the_command_line_or_an_admin() {
    use rally::command::Command;
    use rally::key_command::{AccessArg, KeysCommand};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let create = Command::Keys(KeysCommand::Create {
        name: "Scheduler".into(),
        access: AccessArg::Write,
        campaigns: vec![],
        all_campaigns: true,
    });
    let printed = rally::command::run(&create, &data, None).await.unwrap();
    let token = printed.lines().next().unwrap().to_owned();
    assert!(token.starts_with("rk_"), "{printed}");

    let server = TestServer::start_in(&dir, &[]).await;
    let (ann_id, ann_token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&ann_token));
    let (status, body) = ann
        .post(
            "/api/campaigns",
            json!({"campaign_id": "anns", "title": "A", "visibility": "private"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // The operator's key reaches every campaign; campaigns are made by people (who own them).
    let scheduler = Http::new(&server, Some(&token));
    let (status, body) = get(&scheduler, "/api/campaigns/anns").await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("editor")),
        "{body}"
    );
    let (status, body) = scheduler
        .post(
            "/api/campaigns",
            json!({"campaign_id": "scheduled", "title": "S"}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    server.stop().await.unwrap();

    // Listed and revoked from the command line (the server stopped: it holds the file).
    let listed = rally::command::run(&Command::Keys(KeysCommand::List), &data, None)
        .await
        .unwrap();
    assert!(
        listed.contains("Scheduler\twrite\tall campaigns\tby Server operator"),
        "{listed}"
    );
    let id = token[3..].split('_').next().unwrap().to_owned();

    // An admin makes keys for every campaign over HTTP, and may revoke anyone's.
    let server = TestServer::start_in(&dir, &["--admins", &ann_id]).await;
    let ann = Http::new(&server, Some(&ann_token));
    let (status, body) = ann
        .post(
            "/api/keys",
            json!({"name": "Everything", "access": "read", "all_campaigns": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(get(&ann, "/api/keys").await.1.as_array().unwrap().len(), 2);
    assert_eq!(delete(&ann, &format!("/api/keys/{id}")).await, 204);
    let (status, _) = get(&Http::new(&server, Some(&token)), "/api/campaigns/anns").await;
    assert_eq!(status, 401);
    server.stop().await.unwrap();

    let revoke = Command::Keys(KeysCommand::Revoke { id });
    let refused = rally::command::run(&revoke, &data, None).await.unwrap_err();
    assert!(refused.to_string().contains("no API key"), "{refused}");
}

#[tokio::test]
async fn a_key_an_owner_made_works_only_while_they_own_the_campaign() {
    let server = TestServer::start().await;
    let (_, ann_token) = server.sign_in("Ann").await;
    let ann = Http::new(&server, Some(&ann_token));
    let (bob_id, bob_token) = server.sign_in("Bob").await;
    let bob = Http::new(&server, Some(&bob_token));
    let (status, body) = ann
        .post(
            "/api/campaigns",
            json!({"campaign_id": "handed", "title": "H", "visibility": "private"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, made) = ann
        .post(
            "/api/keys",
            json!({"name": "Site", "access": "write", "campaigns": ["handed"]}),
        )
        .await;
    let site = Http::new(&server, Some(made["token"].as_str().unwrap()));
    let (status, body) = get(&site, "/api/campaigns/handed").await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("editor")),
        "{body}"
    );
    // Ann brings Bob in as an owner.
    let (_, invite) = ann
        .post("/api/campaigns/handed/invites", json!({"role": "owner"}))
        .await;
    let accept = format!("/api/invites/{}/accept", invite["token"].as_str().unwrap());
    assert_eq!(bob.post(&accept, json!({})).await.0, 200);
    // An editor's role is all a key gets: no members, no handover, no visibility.
    for (path, body) in [
        (
            "/api/campaigns/handed/members",
            json!({"user_id": bob_id, "role": "viewer"}),
        ),
        ("/api/campaigns/handed/handover", json!({"user_id": bob_id})),
    ] {
        let (status, answer) = site.post(path, body).await;
        assert_eq!(
            (status, code(&answer)),
            (403, "forbidden"),
            "{path}: {answer}"
        );
    }
    let (status, answer) = site
        .patch(
            "/api/campaigns/handed",
            json!({"updates": {"visibility": "public"}}),
            &[],
        )
        .await;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");

    // Ann hands the campaign over; Bob makes her an editor.
    let (status, answer) = ann
        .post("/api/campaigns/handed/handover", json!({"user_id": bob_id}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        get(&site, "/api/campaigns/handed").await.0,
        200,
        "Ann still owns it with Bob"
    );
    let ann_id = get(&ann, "/api/session").await.1["user"]["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = bob
        .post(
            "/api/campaigns/handed/members",
            json!({"user_id": ann_id, "role": "editor"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // Her key rested on her ownership: it is a stranger to the private campaign now.
    let (status, body) = get(&site, "/api/campaigns/handed").await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // Bob, its owner now, sees the key for his campaign and revokes it.
    let (status, keys) = get(&bob, "/api/keys?campaign=handed").await;
    assert_eq!((status, keys.as_array().unwrap().len()), (200, 1), "{keys}");
    let id = keys[0]["id"].as_str().unwrap();
    assert_eq!(delete(&bob, &format!("/api/keys/{id}")).await, 204);
}
