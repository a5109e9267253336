//! The servers `rally-bench` measures and how its clients speak to each: Rally's own protocol,
//! the bare broadcast baseline, and Socket.IO. Every target is started by the tool as a child
//! process (so its memory can be read from /proc) and every client sends and receives frames of
//! the same size: a Rally state event.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Rally through its public protocol (real envelope, real state manager, durable commits).
    Rally,
    /// A bare tokio-tungstenite broadcast server (the stack's ceiling).
    Bare,
    /// Socket.IO 4 on Node, broadcasting to a room.
    Socketio,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rally => "rally",
            Target::Bare => "bare",
            Target::Socketio => "socket.io",
        }
    }
}

/// How to start the targets.
#[derive(Debug, Clone, clap::Args)]
pub struct Servers {
    /// The Rally server binary.
    #[arg(long, default_value = "target/release/rally")]
    pub rally_bin: PathBuf,
    /// Run Rally in Redis mode against this Redis.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// The Socket.IO baseline script (needs `npm ci` for socket.io).
    #[arg(long, default_value = "bench/socketio-server.mjs")]
    pub socketio_script: PathBuf,
}

/// A target server this tool started; killed on drop.
pub struct Running {
    pub target: Target,
    pub addr: String,
    pub pid: u32,
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Running {
    /// Rally: its data directory (the embedded store's file is in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }
}

pub async fn start(target: Target, servers: &Servers) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let mut command = match target {
        Target::Rally => {
            std::fs::create_dir_all(dir.path().join("site/pkg"))?;
            let mut command = tokio::process::Command::new(&servers.rally_bin);
            command
                .env_clear()
                .env("RALLY_ADDR", "127.0.0.1:0")
                .env("RALLY_DATA_DIR", dir.path().join("data"))
                .env("RALLY_SITE_ROOT", dir.path().join("site"))
                .env("RALLY_LOG_FORMAT", "json")
                .env("RALLY_WRITE_RATE", "1000000")
                .env("RALLY_MEDIA_IP", "127.0.0.1")
                .env("RALLY_MAX_CONNECTIONS", "100000")
                // Every client of the load tool is on loopback: no per-address caps.
                .env("RALLY_MAX_CONNECTIONS_PER_IP", "0")
                .env("RALLY_MAX_HTTP_CONNECTIONS", "1000000")
                .env("RALLY_SESSIONS_PER_MINUTE", "1000000")
                .env("RALLY_CAMPAIGNS_PER_MINUTE", "1000000")
                .env("RALLY_API_PER_MINUTE", "100000000")
                .env("RALLY_READ_RATE", "1000000")
                .env("RALLY_DEFAULT_VISIBILITY", "public");
            if let Some(url) = &servers.redis_url {
                command.env("RALLY_REDIS_URL", url);
            }
            command
        }
        Target::Bare => {
            let mut command = tokio::process::Command::new(std::env::current_exe()?);
            command.args(["bare-server", "--addr", "127.0.0.1:0"]);
            command
        }
        Target::Socketio => {
            let mut command = tokio::process::Command::new("node");
            command.arg(&servers.socketio_script).arg("0");
            command
        }
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the {} server", target.name()))?;
    let pid = child.id().context("server pid")?;
    // Rally logs its address as JSON on stderr; the baselines print `listening <addr>` on stdout.
    let stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let (found, mut addr) = tokio::sync::mpsc::unbounded_channel::<String>();
    for (lines, json_log) in [
        (
            Box::new(stdout) as Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
            false,
        ),
        (Box::new(stderr), true),
    ] {
        let found = found.clone();
        tokio::spawn(async move {
            let mut lines = lines.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let address = if json_log {
                    serde_json::from_str::<Value>(&line)
                        .ok()
                        .filter(|r| r["message"] == "rally started")
                        .and_then(|r| r["addr"].as_str().map(str::to_owned))
                } else {
                    line.strip_prefix("listening ").map(str::to_owned)
                };
                if let Some(address) = address {
                    let _ = found.send(address);
                }
            }
        });
    }
    let addr = tokio::time::timeout(Duration::from_secs(20), addr.recv())
        .await
        .with_context(|| format!("the {} server did not start within 20 s", target.name()))?
        .context("server exited before starting")?;
    Ok(Running {
        target,
        addr,
        pid,
        _child: child,
        dir,
    })
}

/// A Rally state event with `title`, as every target's subscribers receive it (same size
/// everywhere: ~450 bytes plus padding).
pub fn event_frame(room: &str, seq: u64, padding: &str) -> String {
    json!({
        "type": "campaign:state:v1:success",
        "payload": {
            "campaign_id": room,
            "version": seq + 2,
            "event_id": "0187b7f1c2a3d4e5-9f3a01c2-0000002a",
            "changed_by": {"user_id": "u0123456789abcdef", "display_name": "bench publisher"},
            "changed_at": "2026-11-27T11:08:49.123456789Z",
            "change": {"kind": "fields", "updates": {"title": format!("{seq} {padding}")}}
        },
        "metadata": {"event_id": "0187b7f1c2a3d4e5-9f3a01c2-0000002a", "timestamp": "2026-11-27T11:08:49.123456789Z"}
    })
    .to_string()
}

/// The sequence number in a received frame, if it is an event (a cheap scan, no JSON parse, so
/// the client is not the bottleneck). Works on Rally and bare frames and on Socket.IO's escaped
/// payloads alike.
pub fn sequence_of(text: &str) -> Option<u64> {
    let start = text
        .find("\"title\\\":\\\"")
        .map(|i| i + 11)
        .or_else(|| text.find("\"title\":\"").map(|i| i + 9))?;
    let digits = text[start..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

async fn open(url: &str, token: Option<&str>) -> Result<Socket> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Wait for a frame matching `pred`, answering Socket.IO pings on the way.
async fn expect(socket: &mut Socket, pred: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .context("no answer within 20 s")?;
        match message {
            Some(Ok(Message::Text(text))) => {
                if text.as_str() == "2" {
                    socket.send(Message::text("3")).await?;
                    continue;
                }
                if pred(&text) {
                    return Ok(text.to_string());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("connection closed"),
        }
    }
}

/// Everything needed to talk to one running target.
pub struct Session {
    pub target: Target,
    base: String,
    /// Rally: a signed-in token for publishers.
    token: Option<String>,
}

impl Session {
    pub async fn new(running: &Running) -> Result<Session> {
        let base = format!("ws://{}", running.addr);
        let token = if running.target == Target::Rally {
            let session: Value = reqwest::Client::new()
                .post(format!("http://{}/api/session", running.addr))
                .json(&json!({"display_name": "bench publisher"}))
                .send()
                .await?
                .json()
                .await?;
            Some(
                session["token"]
                    .as_str()
                    .context("session token")?
                    .to_owned(),
            )
        } else {
            None
        };
        Ok(Session {
            target: running.target,
            base,
            token,
        })
    }

    async fn connect(&self, room: &str, publisher: bool) -> Result<Socket> {
        match self.target {
            Target::Rally => {
                open(
                    &format!("{}/ws", self.base),
                    if publisher {
                        self.token.as_deref()
                    } else {
                        None
                    },
                )
                .await
            }
            // The bare server's room is the URL path.
            Target::Bare => open(&format!("{}/{room}", self.base), None).await,
            Target::Socketio => {
                let mut socket = open(
                    &format!("{}/socket.io/?EIO=4&transport=websocket", self.base),
                    None,
                )
                .await?;
                expect(&mut socket, |t| t.starts_with('0')).await?;
                socket.send(Message::text("40")).await?;
                expect(&mut socket, |t| t.starts_with("40")).await?;
                Ok(socket)
            }
        }
    }

    /// Rally: the signed-in publisher's session token.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Create a room (Rally: a campaign) and return its name.
    pub async fn create_room(&self, name: &str) -> Result<()> {
        if self.target != Target::Rally {
            return Ok(());
        }
        let mut socket = self.connect(name, true).await?;
        let request = json!({"type": "campaign:create:v1:requested", "payload": {"campaign_id": name, "title": "bench"}, "request_id": "create"});
        socket.send(Message::text(request.to_string())).await?;
        let reply = expect(&mut socket, |t| t.contains("\"request_id\":\"create\"")).await?;
        if !reply.contains("campaign:create:v1:success") {
            bail!("cannot create {name}: {reply}");
        }
        Ok(())
    }

    /// A connection following `room`, ready to receive its events.
    pub async fn subscriber(&self, room: &str) -> Result<Socket> {
        let mut socket = self.connect(room, false).await?;
        match self.target {
            Target::Rally => {
                let request = json!({"type": "campaign:subscribe:v1:requested", "payload": {"campaign_id": room}, "request_id": "s"});
                socket.send(Message::text(request.to_string())).await?;
                let reply = expect(&mut socket, |t| t.contains("\"request_id\":\"s\"")).await?;
                if !reply.contains("campaign:subscribe:v1:success") {
                    bail!("subscribe failed: {reply}");
                }
            }
            Target::Bare => {}
            Target::Socketio => {
                socket
                    .send(Message::text(format!("42[\"join\",\"{room}\"]")))
                    .await?;
            }
        }
        Ok(socket)
    }

    /// A connection that publishes to `room`.
    pub async fn publisher(&self, room: &str) -> Result<Socket> {
        let socket = self.connect(room, true).await?;
        if self.target == Target::Socketio {
            // Socket.IO broadcasts to the room the sender is in too; join so every target
            // delivers to the same set of connections.
            let mut socket = socket;
            socket
                .send(Message::text(format!("42[\"join\",\"{room}\"]")))
                .await?;
            return Ok(socket);
        }
        Ok(socket)
    }

    /// The frame a publisher sends for update `seq`.
    pub fn publish_frame(&self, room: &str, seq: u64, padding: &str) -> String {
        match self.target {
            Target::Rally => json!({
                "type": "campaign:update:v1:requested",
                "payload": {"campaign_id": room, "updates": {"title": format!("{seq} {padding}")}},
                "request_id": format!("u{seq}"),
            })
            .to_string(),
            Target::Bare => event_frame(room, seq, padding),
            Target::Socketio => {
                let payload = serde_json::to_string(&event_frame(room, seq, padding))
                    .expect("a string serializes");
                format!("42[\"update\",\"{room}\",{payload}]")
            }
        }
    }

    /// Is this received text an acknowledgement the publisher waits for (Rally only)?
    pub fn is_ack(&self, text: &str) -> bool {
        self.target == Target::Rally && text.contains("\"request_id\":\"u")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_found_in_every_framing() {
        let frame = event_frame("room", 41, "xx");
        assert_eq!(sequence_of(&frame), Some(41));
        let escaped = format!("42[\"event\",{}]", serde_json::to_string(&frame).unwrap());
        assert_eq!(sequence_of(&escaped), Some(41));
        assert_eq!(sequence_of("{\"type\":\"other\"}"), None);
    }
}
