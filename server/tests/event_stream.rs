//! `GET /api/campaigns/{id}/events` (Server-Sent Events) against a real server: the stream
//! starts where the reader is, carries every state event once with its version as the `id:`,
//! resumes gap-free from `Last-Event-ID` after a dropped connection, refuses bad input with typed
//! errors, respects visibility, and ends with a reason when the server stops or the session ends.

mod common;

use common::{event_stream_request as request, EventReader, TestServer};
use serde_json::{json, Value};

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON");
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

/// Set the title `n` times; returns the version after the last.
async fn retitle(ws: &mut common::WsClient, campaign: &str, from: usize, n: usize) -> u64 {
    let mut version = 0;
    for i in from..from + n {
        let reply = ws
            .update(
                campaign,
                json!({"title": format!("Title {i}")}),
                &format!("t{i}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");
        version = reply["payload"]["version"].as_u64().unwrap();
    }
    version
}

#[tokio::test]
async fn a_stream_starts_with_the_state_and_carries_every_change_once_in_order() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let mut ws = server.connect_as(&token).await;
    ws.create_campaign("sse-order", "Start").await;

    let mut reader = EventReader::open(&server, "sse-order", &[]).await;
    let first = reader.next().await.unwrap();
    assert_eq!(first.data["type"], "campaign:subscribe:v1:success");
    let resume = &first.data["payload"]["resume"];
    assert_eq!(resume["kind"], "snapshot");
    let start = resume["campaign"]["version"].as_u64().unwrap();
    assert_eq!(first.id, Some(start), "the snapshot's id is its version");
    assert_eq!(
        first.data["payload"]["role"], "viewer",
        "anonymous readers view"
    );

    let last = retitle(&mut ws, "sse-order", 0, 20).await;
    for expected in start + 1..=last {
        let event = reader.next_state().await;
        assert_eq!(event.id, Some(expected), "ids are consecutive versions");
        assert_eq!(event.data["payload"]["version"], expected);
    }
    assert_eq!(last, start + 20);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_stream_resumes_from_last_event_id_without_gap_or_repeat() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let mut ws = server.connect_as(&token).await;
    ws.create_campaign("sse-resume", "Start").await;

    let mut reader = EventReader::open(&server, "sse-resume", &[]).await;
    let snapshot = reader.next().await.unwrap();
    retitle(&mut ws, "sse-resume", 0, 3).await;
    let mut seen = snapshot.id.unwrap();
    for _ in 0..3 {
        seen = reader.next_state().await.id.unwrap();
    }
    drop(reader); // the connection drops

    // Changes while nobody reads.
    let last = retitle(&mut ws, "sse-resume", 3, 10).await;
    let last_event_id = seen.to_string();
    let mut reader =
        EventReader::open(&server, "sse-resume", &[("last-event-id", &last_event_id)]).await;
    let reply = reader.next().await.unwrap();
    assert_eq!(reply.data["type"], "campaign:subscribe:v1:success");
    assert_eq!(
        reply.id, None,
        "the reply moves nobody: the events that follow do"
    );
    let resume = &reply.data["payload"]["resume"];
    assert_eq!(resume["kind"], "events");
    assert_eq!(resume["from_version"], seen + 1);
    assert_eq!(resume["to_version"], last);
    for expected in seen + 1..=last {
        let event = reader.next_state().await;
        assert_eq!(
            event.id,
            Some(expected),
            "missed events, each once, in order"
        );
    }
    // And live again after the backlog.
    let live = retitle(&mut ws, "sse-resume", 13, 1).await;
    assert_eq!(reader.next_state().await.id, Some(live));

    // A reader already up to date gets nothing again; one claiming a future version gets the
    // state to replace its own, with that version as the id.
    let current = live.to_string();
    let mut up_to_date =
        EventReader::open(&server, "sse-resume", &[("last-event-id", &current)]).await;
    let reply = up_to_date.next().await.unwrap();
    assert_eq!(reply.data["payload"]["resume"]["kind"], "events");
    assert_eq!(reply.data["payload"]["resume"]["from_version"], live + 1);
    let mut ahead = EventReader::open(&server, "sse-resume", &[("last-event-id", "999999")]).await;
    let reply = ahead.next().await.unwrap();
    assert_eq!(reply.data["payload"]["resume"]["kind"], "snapshot");
    assert_eq!(reply.data["payload"]["resume"]["reason"], "ahead");
    assert_eq!(reply.id, Some(live));

    // `since_version` in the query does what Last-Event-ID does, for a first connection.
    let query = format!(
        "/api/campaigns/sse-resume/events?since_version={}",
        live - 1
    );
    let response = reqwest::get(server.url(&query)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut by_query = EventReader::from_response(response);
    let reply = by_query.next().await.unwrap();
    assert_eq!(reply.data["payload"]["resume"]["from_version"], live);
    assert_eq!(by_query.next_state().await.id, Some(live));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_visibility_holds() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let mut ws = server.connect_as(&token).await;
    ws.create_campaign("sse-open", "Open").await;
    let reply = ws
        .request(
            "campaign:create:v1:requested",
            json!({"campaign_id": "sse-private", "title": "Private", "visibility": "private"}),
            "private",
        )
        .await;
    assert_eq!(reply["type"], "campaign:create:v1:success", "{reply}");

    let cases: &[(&str, &[(&str, &str)], u16, &str)] = &[
        ("sse-open", &[("last-event-id", "seven")], 400, "invalid"),
        ("sse-open", &[("last-event-id", "-1")], 400, "invalid"),
        ("Not A Valid Id!", &[], 400, "invalid"),
        ("sse-missing", &[], 404, "not_found"),
        // Private: anonymous readers are told it does not exist, as for a missing one.
        ("sse-private", &[], 404, "not_found"),
        (
            "sse-open",
            &[("authorization", "Bearer not-a-token")],
            401,
            "unauthorized",
        ),
    ];
    for (campaign, headers, status, code) in cases {
        let response = request(&server, campaign, headers).await;
        assert_eq!(
            error_code(response).await,
            (*status, code.to_string()),
            "{campaign} {headers:?}"
        );
    }
    let bad_query = reqwest::get(server.url("/api/campaigns/sse-open/events?since_version=x"))
        .await
        .unwrap();
    assert_eq!(error_code(bad_query).await, (400, "invalid".into()));

    // Another site's page may not follow campaigns with the visitor's cookie.
    let cookie = format!("rally_session={token}");
    let response = request(
        &server,
        "sse-open",
        &[("cookie", &cookie), ("origin", "http://elsewhere.example")],
    )
    .await;
    assert_eq!(error_code(response).await, (403, "forbidden".into()));
    let own_page = server.url("");
    let own_page = own_page.trim_end_matches('/');
    let response = request(
        &server,
        "sse-open",
        &[("cookie", &cookie), ("origin", own_page)],
    )
    .await;
    assert_eq!(response.status(), 200, "the site's own pages may");
    drop(response);

    // Its owner reads the private one.
    let bearer = format!("Bearer {token}");
    let mut owner = EventReader::open(&server, "sse-private", &[("authorization", &bearer)]).await;
    let reply = owner.next().await.unwrap();
    assert_eq!(reply.data["payload"]["role"], "owner");
    server.stop().await.unwrap();

    // A server that wants sessions refuses anonymous streams.
    let closed = TestServer::start_with(&["--allow-anonymous", "false"]).await;
    let response = request(&closed, "sse-open", &[]).await;
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));
    closed.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_ends_with_its_reason_when_the_session_ends_or_the_server_stops() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let mut ws = server.connect_as(&token).await;
    ws.create_campaign("sse-end", "Start").await;
    let (_, other) = server.sign_in("Bob").await;

    let bearer = format!("Bearer {other}");
    let mut signed = EventReader::open(&server, "sse-end", &[("authorization", &bearer)]).await;
    signed.next().await.unwrap();
    let mut anonymous = EventReader::open(&server, "sse-end", &[]).await;
    anonymous.next().await.unwrap();

    let signed_out = reqwest::Client::new()
        .delete(server.url("/api/session"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert!(signed_out.status().is_success(), "{}", signed_out.status());
    let last = loop {
        let event = signed.next().await.expect("a last frame before the end");
        if event.data["type"] == "campaign:subscription:v1:completed" {
            break event;
        }
    };
    assert_eq!(last.data["payload"]["reason"]["code"], "unauthorized");
    assert!(signed.next().await.is_none(), "then the stream ends");

    let stopping = tokio::spawn(server.stop());
    let last = loop {
        let event = anonymous.next().await.expect("a last frame before the end");
        if event.data["type"] == "campaign:subscription:v1:completed" {
            break event;
        }
    };
    assert_eq!(last.data["payload"]["reason"]["code"], "unavailable");
    assert!(anonymous.next().await.is_none(), "then the stream ends");
    stopping
        .await
        .unwrap()
        .expect("the server stops with streams open");
}

#[tokio::test]
async fn a_reader_counts_as_a_viewer_until_its_stream_drops() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ann").await;
    let mut ws = server.connect_as(&token).await;
    ws.create_campaign("sse-presence", "Start").await;
    ws.subscribe("sse-presence", None).await;
    let count_after = |frames: &[Value]| {
        frames.last().unwrap()["payload"]["presence"]["count"]
            .as_u64()
            .unwrap()
    };
    let is_presence = |f: &Value| f["type"] == "campaign:presence:v1:success";

    let (_, bob) = server.sign_in("Bob").await;
    let bearer = format!("Bearer {bob}");
    let mut reader =
        EventReader::open(&server, "sse-presence", &[("authorization", &bearer)]).await;
    reader.next().await.unwrap();
    let seen = ws
        .recv_until(|f| is_presence(f) && f["payload"]["joined"][0]["display_name"] == "Bob")
        .await;
    assert_eq!(count_after(&seen), 2, "Ann and Bob");

    drop(reader);
    let seen = ws
        .recv_until(|f| is_presence(f) && f["payload"]["left"][0]["display_name"] == "Bob")
        .await;
    assert_eq!(count_after(&seen), 1, "Bob left with his stream");
    server.stop().await.unwrap();
}
