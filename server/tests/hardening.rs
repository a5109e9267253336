//! The holes an adversarial pass over the release build found, each closed and checked here
//! against a real server: what a visitor may read, what a visitor can make the server hold, how
//! long a silent client keeps a socket, and what the server says when it refuses.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ChildServer, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn get_with(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Hole 1: with `--allow-anonymous false`, no path shows a campaign to a visitor without a
/// session — server-rendered pages and listings included.
///
/// Pages are rendered by a server of their own process: several servers rendering pages in one
/// test process (one runtime each) can stall a render — a Leptos race that the same stress
/// reproduces on earlier builds too, and never with one server per process.
#[tokio::test]
async fn closed_servers_show_nothing_to_anonymous_visitors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::spawn(dir.path(), &[("RALLY_ALLOW_ANONYMOUS", "false")]);
    let (_, token) = common::sign_in(server.addr, "Ada").await;
    let mut ada = common::connect(server.addr, Some(&token)).await;
    ada.create_campaign("secret-plan", "Secret plan").await;
    let reply = ada
        .update(
            "secret-plan",
            json!({"description": "the confidential part"}),
            "d",
        )
        .await;
    assert_eq!(reply["type"], "campaign:update:v1:success", "{reply}");

    let (status, _, page) = get_with(&server.url("/campaigns/secret-plan"), &[]).await;
    assert_eq!(status, 401, "{page}");
    assert!(!page.contains("confidential") && !page.contains("Secret plan"));
    let (status, _, body) = get_with(&server.url("/api/campaigns"), &[]).await;
    assert_eq!(status, 401, "{body}");
    let (_, _, landing) = get_with(&server.url("/"), &[]).await;
    assert!(
        !landing.contains("Secret plan"),
        "the landing page lists nothing"
    );

    let cookie = format!("rally_session={token}");
    let (status, _, page) = get_with(
        &server.url("/campaigns/secret-plan"),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("confidential"),
        "a signed-in reader still sees it"
    );
    let (_, _, landing) = get_with(&server.url("/"), &[("cookie", &cookie)]).await;
    assert!(landing.contains("Secret plan"));
    assert_eq!(server.terminate(), Some(0));
}

/// Hole 2: reading campaigns that do not exist starts nothing that outlives the request.
#[tokio::test]
async fn missing_campaigns_leave_nothing_loaded() {
    let server = TestServer::start().await;
    let manager = server.manager.clone().unwrap();
    let mut visitor = server.connect().await;
    for n in 0..2_000 {
        let reply = visitor
            .request(
                "campaign:snapshot:v1:requested",
                json!({"campaign_id": format!("nothing-{n}")}),
                &format!("s{n}"),
            )
            .await;
        assert_eq!(reply["payload"]["code"], "not_found", "{reply}");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !manager.loaded().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(manager.loaded(), Vec::<rally_app::model::CampaignId>::new());
    server.stop().await.unwrap();
}

/// Hole 2, the reads themselves: a connection's reads have a budget.
#[tokio::test]
async fn reads_are_rate_limited_per_connection() {
    let server = TestServer::start_with(&["--read-rate", "5"]).await;
    let mut visitor = server.connect().await;
    let mut limited = 0;
    for n in 0..30 {
        let reply = visitor
            .request(
                "campaign:snapshot:v1:requested",
                json!({"campaign_id": "nothing"}),
                &format!("s{n}"),
            )
            .await;
        if reply["payload"]["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(
        limited >= 15,
        "bursts of 10, then 5 a second: {limited} of 30 limited"
    );
    server.stop().await.unwrap();
}

/// Hole 3: history is bounded in bytes, so one subscribe cannot pull megabytes of old events,
/// and a description cannot be padded with six-byte escapes.
#[tokio::test]
async fn history_is_bounded_in_bytes() {
    let server = TestServer::start_with(&["--history-bytes", "65536"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut ada = server.connect_as(&token).await;
    ada.create_campaign("big", "Big").await;
    let padded = ada
        .update("big", json!({"description": "\u{1}".repeat(9_000)}), "pad")
        .await;
    assert_eq!(padded["payload"]["code"], "invalid", "{padded}");
    for n in 0..20 {
        let text = char::from(b'a' + n).to_string().repeat(9_000);
        let reply = ada
            .update("big", json!({"description": text}), &format!("u{n}"))
            .await;
        assert_eq!(reply["type"], "campaign:update:v1:success");
    }
    let mut reader = server.connect().await;
    let reply = reader.subscribe("big", Some(1)).await;
    assert_eq!(
        reply["payload"]["resume"]["kind"], "snapshot",
        "version 2 fell out of the 64 KiB history: {}",
        reply["payload"]["resume"]
    );
    // From a recent version, the missed events come — as many as fit in the history.
    let reply = reader.subscribe("big", Some(17)).await;
    assert_eq!(reply["payload"]["resume"]["kind"], "events");
    server.stop().await.unwrap();
}

/// Hole 4: a client that sends headers slowly, sends nothing, or keeps an idle keep-alive
/// connection holds its socket for the header timeout, not forever; one address holds at most
/// its share of connections.
#[tokio::test]
async fn slow_silent_and_crowding_clients_lose_their_sockets() {
    let server = TestServer::start_with(&[
        "--header-read-timeout-secs",
        "1",
        "--max-connections-per-ip",
        "4",
    ])
    .await;
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).await.unwrap();
    assert!(std::str::from_utf8(&first[..n])
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    // The fourth connection fits; a fifth from the same address does not.
    let _fourth = TcpStream::connect(server.addr).await.unwrap();
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(1)).await,
        "over the per-address cap"
    );
    for (what, stream) in [
        ("slow headers", &mut slow),
        ("silent", &mut silent),
        ("idle keep-alive", &mut idle),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(4)).await,
            "{what} connection closed"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await.unwrap();
}

/// Hole 5: a WebSocket that follows nothing and asks nothing is closed with 4010; one that
/// follows a campaign stays.
#[tokio::test]
async fn idle_websockets_are_closed() {
    let server = TestServer::start_with(&["--ws-idle-secs", "1"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("kept", "Kept").await;
    owner.subscribe("kept", None).await;

    let mut idle = server.connect().await;
    let started = Instant::now();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), idle.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::from(4010)));
    assert!(started.elapsed() < Duration::from_secs(4));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let reply = owner
        .update("kept", json!({"title": "Still here"}), "u")
        .await;
    assert_eq!(
        reply["type"], "campaign:update:v1:success",
        "following is not idle"
    );
    server.stop().await.unwrap();
}

/// Hole 5: a client that never answers the server's pings (it stopped reading, or its peer is
/// gone) is closed with 4009 after two ping intervals.
#[tokio::test]
async fn unresponsive_websockets_are_closed() {
    let server = TestServer::start_with(&["--ws-ping-secs", "1"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("kept", "Kept").await;
    let mut deaf = server.connect().await;
    deaf.subscribe("kept", None).await;
    // Reading nothing, it answers no ping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut code = None;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(2), deaf.socket.next()).await
    {
        match message {
            Ok(Message::Close(frame)) => {
                code = frame.map(|f| f.code);
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(CloseCode::from(4009)));
    server.stop().await.unwrap();
}

/// Hole 6: sign-ins, campaign creation and API calls have per-address and per-user quotas.
#[tokio::test]
async fn the_http_api_is_rate_limited() {
    let server = TestServer::start_with(&[
        "--sessions-per-minute",
        "2",
        "--campaigns-per-minute",
        "2",
        "--api-per-minute",
        "60",
    ])
    .await;
    let client = reqwest::Client::new();
    let (_, token) = server.sign_in("Ada").await;
    let mut codes = Vec::new();
    for n in 0..5 {
        let response = client
            .post(server.url("/api/session"))
            .json(&json!({"display_name": format!("Bot {n}")}))
            .send()
            .await
            .unwrap();
        codes.push(response.status().as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429, 429],
        "bursts of 4 sessions, then 2 a minute"
    );

    let mut created = Vec::new();
    for n in 0..6 {
        let response = client
            .post(server.url("/api/campaigns"))
            .bearer_auth(&token)
            .json(&json!({"campaign_id": format!("c{n}"), "title": "C"}))
            .send()
            .await
            .unwrap();
        created.push(response.status().as_u16());
    }
    assert_eq!(
        created.iter().filter(|c| **c == 201).count(),
        4,
        "{created:?}"
    );
    let mut socket = server.connect_as(&token).await;
    let reply = socket.create_campaign_raw("over-quota").await;
    assert_eq!(
        reply["payload"]["code"], "rate_limited",
        "the same quota on the WebSocket"
    );

    let mut limited = 0;
    for _ in 0..150 {
        let response = client
            .get(server.url("/api/campaigns"))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0, "API requests per address are limited");
    server.stop().await.unwrap();
}

/// Hole 8: other origins are refused (scheme included); `--allowed-origins` adds to the site.
#[tokio::test]
async fn websocket_origins_are_checked_with_their_scheme() {
    let server = TestServer::start_with(&["--allowed-origins", "http://app.example"]).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let open = |origin: &str| {
        let mut request = format!("ws://{}/ws", server.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let host = format!("http://{}", server.addr);
    assert!(open(&host).await.is_ok(), "the site itself");
    assert!(open("http://app.example").await.is_ok(), "an extra origin");
    assert!(
        open(&format!("https://{}", server.addr)).await.is_err(),
        "another scheme"
    );
    assert!(open("http://evil.example").await.is_err());
    server.stop().await.unwrap();
}

/// Hole 10: close frames — a client's close is echoed; text that is not UTF-8 gets 1007.
#[tokio::test]
async fn close_frames_say_why() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.socket.close(None).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(2), client.socket.next()).await;
    assert!(
        matches!(echoed, Ok(Some(Ok(Message::Close(_)))) | Ok(None)),
        "the close handshake completes: {echoed:?}"
    );

    // A raw text frame with invalid UTF-8 (masked, as clients must).
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = vec![0u8; 1024];
    let n = raw.read(&mut response).await.unwrap();
    assert!(std::str::from_utf8(&response[..n]).unwrap().contains("101"));
    let payload = [0xffu8, 0xfe];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    let mut reply = vec![0u8; 128];
    let n = tokio::time::timeout(Duration::from_secs(2), raw.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 4, "a close frame came back");
    assert_eq!(reply[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1007);
    server.stop().await.unwrap();
}

/// How many subscriber sockets `/readyz` says are stuck ("N of M subscriber sockets stuck").
async fn stuck_sockets(server: &TestServer) -> usize {
    let (_, _, body) = get_with(&server.url("/readyz"), &[]).await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "subscriber_channels")
        .unwrap_or_else(|| panic!("no subscriber_channels check in {body}"));
    let said = check
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_str())
        .find(|v| v.contains("subscriber sockets stuck"))
        .unwrap_or_else(|| panic!("no count in {check}"));
    said.split(' ').next().unwrap().parse().unwrap()
}

/// Hole 10: a slow consumer that reads again in time gets whole frames and then the 4008 close,
/// not a stream cut inside a frame.
///
/// Timed from the server's own count of stuck sockets (`/readyz`), not from the start: how soon
/// the flood fills the socket buffers depends on how fast this machine writes.
#[tokio::test]
async fn a_slow_consumer_is_told_why() {
    let server = TestServer::start_with(&["--write-rate", "1000"]).await;
    let (_, token) = server.sign_in("Ada").await;
    let mut owner = server.connect_as(&token).await;
    owner.create_campaign("flood", "Flood").await;
    let mut slow = common::connect_small_buffer(server.addr).await;
    slow.subscribe("flood", None).await;
    let flooding = Arc::new(AtomicBool::new(true));
    let writing = tokio::spawn({
        let flooding = flooding.clone();
        async move {
            let blob = "x".repeat(15_000);
            let started = Instant::now();
            let mut n = 0;
            while flooding.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let values = json!({"n": n, "blob": blob});
                let reply = owner
                    .request(
                        "campaign:config:v1:requested",
                        json!({"campaign_id": "flood", "section": "blob", "values": values, "mode": "replace"}),
                        &format!("w{n}"),
                    )
                    .await;
                assert_eq!(reply["type"], "campaign:config:v1:success");
                n += 1;
            }
            n
        }
    });
    // A send to `slow` counts as stuck one second after it began; the server cuts it four
    // seconds later and then waits up to five for the reader (CLOSE_GRACE). Read again six
    // seconds after the count shows it: two seconds after the cut.
    let started = Instant::now();
    while stuck_sockets(&server).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never found the reader stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    flooding.store(false, Ordering::Relaxed);
    let mut code = None;
    let mut frames = 0;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(5), slow.socket.next()).await
    {
        match message.expect("whole frames, no protocol error") {
            Message::Text(_) => frames += 1,
            Message::Close(frame) => {
                code = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let written = writing.await.unwrap();
    assert!(
        frames > 10 && frames < written,
        "{frames} of {written} events arrived"
    );
    assert_eq!(code, Some(4008), "after {frames} whole frames");
    server.stop().await.unwrap();
}

/// Hole 12: what the server says and shows.
#[tokio::test]
async fn refusals_and_responses_give_nothing_away() {
    let server = TestServer::start().await;
    let (_, token) = server.sign_in("Ada").await;
    let mut ada = server.connect_as(&token).await;

    // Error replies do not echo what was sent.
    let reply = ada
        .request(
            "campaign:snapshot:v1:requested",
            json!({"campaign_id": "x".repeat(60_000)}),
            "long",
        )
        .await;
    let message = reply["payload"]["message"].as_str().unwrap();
    assert!(message.len() <= 300, "{} bytes", message.len());
    // A payload is an object, not a list of positional fields.
    let reply = ada
        .request(
            "campaign:create:v1:requested",
            json!(["pos", "title"]),
            "pos",
        )
        .await;
    assert_eq!(reply["payload"]["code"], "invalid", "{reply}");

    // Cookie-carrying writes from another site are refused (CSRF).
    let response = reqwest::Client::new()
        .post(server.url("/api/campaigns"))
        .header("cookie", format!("rally_session={token}"))
        .header("origin", "http://evil.example")
        .json(&json!({"campaign_id": "csrf", "title": "CSRF"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // /metrics names no campaign; /readyz names no path.
    ada.create_campaign("named", "Named").await;
    ada.subscribe("named", None).await;
    let (_, _, metrics) = get_with(&server.url("/metrics"), &[]).await;
    assert!(!metrics.contains("campaign=\"named\""));
    let (_, _, ready) = get_with(&server.url("/readyz"), &[]).await;
    assert!(
        !ready.contains(&server.dir.path().display().to_string()),
        "{ready}"
    );

    // Pages carry a content policy and refuse framing; a missing campaign is always a 404.
    let dir = tempfile::tempdir().unwrap();
    let pages = ChildServer::spawn(dir.path(), &[]);
    for _ in 0..10 {
        let (status, headers, _) = get_with(&pages.url("/campaigns/no-such-campaign"), &[]).await;
        assert_eq!(status, 404);
        assert!(headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    assert_eq!(pages.terminate(), Some(0));
    server.stop().await.unwrap();
}

/// Hole 14: a site built for another profile is refused at start-up with one clear line.
#[tokio::test]
async fn a_site_from_another_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path(), &[]);
    let other = if cfg!(debug_assertions) {
        "release"
    } else {
        "debug  "
    };
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut body = vec![11u8];
    body.extend_from_slice(b"rally_build");
    body.extend_from_slice(other.as_bytes());
    wasm.push(0);
    wasm.push(body.len() as u8);
    wasm.extend_from_slice(&body);
    std::fs::write(dir.path().join("site/pkg/rally.wasm"), wasm).unwrap();
    let error = match rally::Rally::open(config).await {
        Ok(_) => panic!("a mismatched site must be refused"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("rebuild the site"), "{error}");
    assert!(!error.contains('\n'), "one line");
}
