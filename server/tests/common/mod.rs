//! Test harness: a real Rally server on `127.0.0.1:0` in this process, with its own data and site
//! directories, and real WebSocket / HTTP clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    pub dir: TestDir,
    pub manager: Option<rally::campaigns::StateManager>,
    pub media: Option<rally::media::MediaRelay>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), rally::ServerError>>>,
}

/// A config for tests: ephemeral port, fresh data dir, and a site root with an empty `pkg/`
/// (pages render on the server without the WASM being built).
/// A test's directory: owned (deleted at the end) or borrowed from a test that restarts servers.
pub enum TestDir {
    Owned(tempfile::TempDir),
    Borrowed(std::path::PathBuf),
}

impl TestDir {
    pub fn path(&self) -> &std::path::Path {
        match self {
            TestDir::Owned(dir) => dir.path(),
            TestDir::Borrowed(path) => path,
        }
    }
}

/// Settings for tests (flag, value; the environment variable is the flag's name): limits lifted
/// (every client is on loopback), and new campaigns public, so tests of other things can watch
/// each other's campaigns. tests/visibility.rs runs with the server's own default.
const LOOPBACK_LIMITS: [(&str, &str); 6] = [
    ("--default-visibility", "public"),
    ("--max-connections-per-ip", "0"),
    ("--sessions-per-minute", "1000000"),
    ("--campaigns-per-minute", "1000000"),
    ("--api-per-minute", "100000000"),
    ("--read-rate", "1000000"),
];

fn env_name(flag: &str) -> String {
    format!(
        "RALLY_{}",
        flag.trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase()
    )
}

pub fn test_config(dir: &std::path::Path, extra: &[&str]) -> Config {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    let data = dir.join("data");
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
    // Every test client is on loopback: per-address caps and quotas only where a test sets them.
    for (flag, value) in LOOPBACK_LIMITS {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), value.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::from_args_iter(args).expect("test config is valid")
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> TestServer {
        Self::start_at(TestDir::Owned(tempfile::tempdir().unwrap()), extra).await
    }

    /// A server on a directory that outlives it (to restart on the same data).
    pub async fn start_in(dir: &tempfile::TempDir, extra: &[&str]) -> TestServer {
        Self::start_at(TestDir::Borrowed(dir.path().to_owned()), extra).await
    }

    async fn start_at(dir: TestDir, extra: &[&str]) -> TestServer {
        let config = test_config(dir.path(), extra);
        let listener = rally::bind(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rally = rally::Rally::open(config).await.expect("server opens");
        let manager = Some(rally.manager().clone());
        let media = Some(rally.media().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(rally.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            dir,
            manager,
            media,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> WsClient {
        connect(self.addr, None).await
    }

    /// A WebSocket carrying `token` as `Authorization: Bearer`.
    pub async fn connect_as(&self, token: &str) -> WsClient {
        connect(self.addr, Some(token)).await
    }

    /// Sign in over HTTP; returns (user_id, token).
    pub async fn sign_in(&self, name: &str) -> (String, String) {
        sign_in(self.addr, name).await
    }

    /// Trigger shutdown and wait for `run` to return.
    pub async fn stop(mut self) -> Result<(), rally::ServerError> {
        self.manager.take();
        self.media.take();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.handle.take().unwrap())
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
    }
}

pub async fn connect(addr: SocketAddr, token: Option<&str>) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    WsClient {
        socket,
        buffer: Default::default(),
    }
}

/// A WebSocket whose receive buffer is small and fixed (no autotuning): a test that stops
/// reading makes the server's writes stall after kilobytes, not after the tens of megabytes a
/// machine's TCP settings may let the kernel buffer.
pub async fn connect_small_buffer(addr: SocketAddr) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(addr).await.expect("tcp connects");
    let (socket, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/ws"), MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket connects");
    WsClient {
        socket,
        buffer: Default::default(),
    }
}

pub async fn sign_in(addr: SocketAddr, name: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/session"))
        .json(&serde_json::json!({ "display_name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (
        body["user"]["user_id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for a reply, kept for `recv_json` in arrival order.
    buffer: std::collections::VecDeque<Value>,
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

    /// The next text frame, parsed as JSON (buffered frames first).
    pub async fn recv_json(&mut self) -> Value {
        match self.buffer.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    async fn read_frame(&mut self) -> Value {
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => {
                    return serde_json::from_str(&text).expect("server sends JSON")
                }
                // The server pings a connection that has been quiet (tungstenite answers): not
                // part of the protocol, and on a slow machine it comes in the middle of a test.
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Frames until one matches `pred` (others are returned too, in order), failing after 5 s.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let frame = self.recv_json().await;
            let done = pred(&frame);
            seen.push(frame);
            if done {
                return seen;
            }
        }
    }

    /// The next state event if one comes within `wait` (None: none came).
    pub async fn next_state_event_within(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.next_state_event())
            .await
            .ok()
    }

    /// The next `campaign:state:v1:success` event, skipping presence and other pushes.
    pub async fn next_state_event(&mut self) -> Value {
        loop {
            let frame = self.recv_json().await;
            if frame["type"] == "campaign:state:v1:success" {
                return frame;
            }
        }
    }

    /// Create a campaign; panics unless it succeeds.
    pub async fn create_campaign(&mut self, id: &str, title: &str) -> Value {
        let reply = self
            .request(
                "campaign:create:v1:requested",
                serde_json::json!({"campaign_id": id, "title": title}),
                &format!("create-{id}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:create:v1:success", "{reply}");
        reply
    }

    /// Send a create request and return the reply, whatever it is.
    pub async fn create_campaign_raw(&mut self, id: &str) -> Value {
        self.request(
            "campaign:create:v1:requested",
            serde_json::json!({"campaign_id": id, "title": id}),
            &format!("create-{id}"),
        )
        .await
    }

    /// Subscribe; panics unless it succeeds. Returns the reply.
    pub async fn subscribe(&mut self, id: &str, since_version: Option<u64>) -> Value {
        let mut payload = serde_json::json!({"campaign_id": id});
        if let Some(since) = since_version {
            payload["since_version"] = since.into();
        }
        let reply = self
            .request(
                "campaign:subscribe:v1:requested",
                payload,
                &format!("sub-{id}"),
            )
            .await;
        assert_eq!(reply["type"], "campaign:subscribe:v1:success", "{reply}");
        reply
    }

    /// Update fields; returns the reply (success or failed).
    pub async fn update(&mut self, id: &str, updates: Value, request_id: &str) -> Value {
        self.request(
            "campaign:update:v1:requested",
            serde_json::json!({"campaign_id": id, "updates": updates}),
            request_id,
        )
        .await
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
            let frame = self.read_frame().await;
            if frame["request_id"] == request_id {
                return frame;
            }
            self.buffer.push_back(frame);
        }
    }
}

/// A `rally` binary running as a child process on a free port (json logs at the default level,
/// captured line by line).
/// JSON log lines as `LEVEL message` (the raw line when it has no message), to compare a
/// server's output with the lines the log policy allows.
pub fn level_and_message<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let record: Value = serde_json::from_str(l).expect("json log line");
            format!(
                "{} {}",
                record["level"].as_str().unwrap_or("?"),
                record["message"].as_str().unwrap_or(l)
            )
        })
        .collect()
}

pub struct ChildServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildServer {
    /// Start `rally` on `dir` (data in `dir/data`), with extra environment variables.
    pub fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> ChildServer {
        use std::io::BufRead;
        let site = dir.join("site");
        std::fs::create_dir_all(site.join("pkg")).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rally"));
        for (key, _) in std::env::vars() {
            if key.starts_with("RALLY_") || key.starts_with("LEPTOS_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("RALLY_DATA_DIR", dir.join("data"))
            .env("RALLY_SITE_ROOT", site)
            .env("RALLY_ADDR", "127.0.0.1:0")
            .env("RALLY_LOG_FORMAT", "json");
        for (flag, value) in LOOPBACK_LIMITS {
            cmd.env(env_name(flag), value);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (found, addr) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in stderr.lines().map_while(Result::ok) {
                if let Ok(record) = serde_json::from_str::<Value>(&line) {
                    if record["message"] == "rally started" {
                        if let Some(found) = found.take() {
                            let _ =
                                found.send(record["addr"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        match addr.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => ChildServer {
                child,
                addr: addr.parse().unwrap(),
                log,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rally did not start within 20 s: {:?}", log.lock().unwrap());
            }
        }
    }

    /// SIGKILL and wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A `redis-server` of the test's own.
pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    pub child: Option<std::process::Child>,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = TestRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)start on the same port and data directory.
    pub fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup test)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: nothing gets flushed on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Server-Sent Event as a reader sees it.
#[derive(Debug)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub data: Value,
}

/// A reader of one event stream, parsing the wire format by hand (what a third party would do).
pub struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    pub async fn open(
        server: &TestServer,
        campaign: &str,
        headers: &[(&str, &str)],
    ) -> EventReader {
        let response = event_stream_request(server, campaign, headers).await;
        assert_eq!(response.status(), 200, "stream opens");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "served as an event stream"
        );
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        EventReader::from_response(response)
    }

    pub fn from_response(response: reqwest::Response) -> EventReader {
        EventReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments, `retry:` and keep-alives skipped), failing after 5 s; None when
    /// the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().expect("ids are versions"));
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data.join("\n")).expect("data is JSON");
                return Some(SseEvent { id, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event within 5 s")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// The next state event, skipping presence and other pushes.
    pub async fn next_state(&mut self) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if event.data["type"] == "campaign:state:v1:success" {
                return event;
            }
        }
    }
}

/// `GET /api/campaigns/{campaign}/events` with `headers`, whatever it answers.
pub async fn event_stream_request(
    server: &TestServer,
    campaign: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().get(server.url(&format!("/api/campaigns/{campaign}/events")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request sent")
}
