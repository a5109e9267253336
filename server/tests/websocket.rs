//! The WebSocket gateway with a real client: replies, typed rejections, limits, shutdown.

mod common;

use common::TestServer;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_is_answered_with_the_request_id_and_server_time() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let reply = client
        .request("system:ping:v1:requested", json!({}), "p1")
        .await;
    assert_eq!(reply["type"], "system:ping:v1:success");
    assert_eq!(reply["request_id"], "p1");
    let server_time: rally_app::model::Timestamp =
        serde_json::from_value(reply["payload"]["server_time"].clone()).unwrap();
    assert!(server_time.unix_nanos() > 0);
    assert!(reply["metadata"]["timestamp"].is_string());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_frames_get_typed_failed_replies_and_the_connection_survives() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;

    client.send_text("this is not json").await;
    let reply = client.recv_json().await;
    assert_eq!(reply["type"], "system:frame:v1:failed");
    assert_eq!(reply["payload"]["code"], "invalid");

    client
        .send_json(json!({"type": "campaign:update:v1", "payload": {}, "request_id": "b1"}))
        .await;
    let reply = client.recv_json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["request_id"].as_str()),
        (Some("system:frame:v1:failed"), Some("b1"))
    );

    let reply = client
        .request("nosuch:thing:v1:requested", json!({}), "b2")
        .await;
    assert_eq!(reply["type"], "nosuch:thing:v1:failed");
    assert_eq!(reply["payload"]["code"], "invalid");

    let reply = client
        .request(
            "system:ping:v1:requested",
            json!({"unexpected": true}),
            "b3",
        )
        .await;
    assert_eq!(reply["type"], "system:ping:v1:failed");
    assert!(reply["payload"]["message"]
        .as_str()
        .unwrap()
        .contains("unexpected"));

    client.socket.send_binary_frame().await;
    let reply = client.recv_json().await;
    assert_eq!(reply["type"], "system:frame:v1:failed");

    // Still usable after all of that.
    let reply = client
        .request("system:ping:v1:requested", json!({}), "b4")
        .await;
    assert_eq!(reply["type"], "system:ping:v1:success");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_over_64_kib_close_with_1009() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let padding = "x".repeat(64 * 1024);
    client
        .send_json(
            json!({"type": "system:ping:v1:requested", "payload": {}, "request_id": padding}),
        )
        .await;
    match client.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    // The server itself is unaffected.
    let mut other = server.connect().await;
    assert_eq!(
        other
            .request("system:ping:v1:requested", json!({}), "ok")
            .await["type"],
        "system:ping:v1:success"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = server.connect().await;
        client
            .request("system:ping:v1:requested", json!({}), "warm")
            .await;
        clients.push(client);
    }
    let stopping = tokio::spawn(server.stop());
    for client in &mut clients {
        match client.next_message().await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    drop(clients);
    stopping
        .await
        .unwrap()
        .expect("run returns Ok after a graceful shutdown");
}

trait SendBinary {
    async fn send_binary_frame(&mut self);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_binary_frame(&mut self) {
        use futures_util::SinkExt;
        self.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    }
}
