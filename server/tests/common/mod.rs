//! Test harness: a real Rally server on `127.0.0.1:0` in this process, with its own data and site
//! directories, and real WebSocket / HTTP clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rally::config::Config;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), rally::ServerError>>>,
}

/// A config for tests: ephemeral port, fresh data dir, and a site root with an empty `pkg/`
/// (pages render on the server without the WASM being built).
pub fn test_config(dir: &tempfile::TempDir, extra: &[&str]) -> Config {
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    let data = dir.path().join("data");
    let mut args = vec![
        "rally".to_string(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--site-root".into(),
        site.display().to_string(),
        "--shutdown-grace-secs".into(),
        "5".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::from_iter(args).expect("test config is valid")
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir, extra);
        let listener = rally::bind(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(rally::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> WsClient {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", self.addr))
            .await
            .expect("websocket connects");
        WsClient { socket }
    }

    /// Trigger shutdown and wait for `run` to return.
    pub async fn stop(mut self) -> Result<(), rally::ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle.take().unwrap())
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
    }
}

pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// The next message of any kind, failing the test after 5 s.
    pub async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), self.socket.next())
            .await
            .expect("a message within 5 s")
            .map(|m| m.expect("websocket stream error"))
    }

    /// The next text frame, parsed as JSON.
    pub async fn recv_json(&mut self) -> Value {
        match self.next_message().await {
            Some(Message::Text(text)) => serde_json::from_str(&text).expect("server sends JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Send a request and return the reply carrying the same request id.
    pub async fn request(&mut self, event_type: &str, payload: Value, request_id: &str) -> Value {
        self.send_json(serde_json::json!({
            "type": event_type,
            "payload": payload,
            "request_id": request_id,
        }))
        .await;
        loop {
            let reply = self.recv_json().await;
            if reply["request_id"] == request_id {
                return reply;
            }
        }
    }
}
