//! `rally-bench`: measure Rally from the outside, through its public protocol only.
//!
//! `fanout` opens N subscriber WebSockets on one campaign, publishes updates at a fixed rate from
//! one more connection, and measures the time from sending each update to each subscriber
//! receiving its state event (p50/p90/p99/max), plus delivered events per second.
//!
//! By default it starts the server itself (`--server-bin`, on a free port with a throwaway data
//! directory) so one command measures a fresh instance; `--url` targets a running one instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(name = "rally-bench", about = "Load tool for Rally")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One publisher, N subscribers on one campaign: end-to-end delivery latency.
    Fanout(FanoutArgs),
}

#[derive(Parser)]
struct FanoutArgs {
    /// Subscribers on the campaign.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Updates per second from the publisher.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds to measure (after connecting everyone).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Extra bytes in each update's title (the event frame is ~450 bytes plus this).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// A running server's base URL (`http://127.0.0.1:3000`); otherwise one is started.
    #[arg(long)]
    url: Option<String>,
    /// The server binary to start when no --url is given.
    #[arg(long, default_value = "target/release/rally")]
    server_bin: PathBuf,
    /// Start the server(s) in Redis mode against this Redis.
    #[arg(long)]
    redis_url: Option<String>,
    /// Start two servers sharing --redis-url: the publisher on one, the subscribers on the
    /// other, so every delivery crosses Redis.
    #[arg(long, requires = "redis_url")]
    cross_instance: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// A server this tool started; killed on drop.
struct Spawned {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn spawn_server(bin: &PathBuf, redis_url: Option<&str>) -> Result<(Spawned, String)> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("site/pkg"))?;
    let mut command = tokio::process::Command::new(bin);
    command.env_clear();
    if let Some(url) = redis_url {
        command.env("RALLY_REDIS_URL", url);
    }
    let mut child = command
        .env("RALLY_ADDR", "127.0.0.1:0")
        .env("RALLY_DATA_DIR", dir.path().join("data"))
        .env("RALLY_SITE_ROOT", dir.path().join("site"))
        .env("RALLY_LOG_FORMAT", "json")
        .env("RALLY_WRITE_RATE", "1000000")
        .env("RALLY_MAX_CONNECTIONS", "100000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p rally`)",
                bin.display()
            )
        })?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(line) = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??
        else {
            bail!("server exited before starting");
        };
        let record: Value = serde_json::from_str(&line).unwrap_or_default();
        if record["message"] == "rally started" {
            let addr = record["addr"]
                .as_str()
                .context("startup line has addr")?
                .to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((
                Spawned {
                    _child: child,
                    _dir: dir,
                },
                format!("http://{addr}"),
            ));
        }
    }
    bail!("server did not start within 20 s")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, token: Option<&str>) -> Result<Socket> {
    let url = format!("{}/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Send a request and wait for its reply, skipping pushes.
async fn request(socket: &mut Socket, event_type: &str, payload: Value, id: &str) -> Result<Value> {
    socket
        .send(Message::text(
            json!({"type": event_type, "payload": payload, "request_id": id}).to_string(),
        ))
        .await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text)?;
                if frame["request_id"] == id {
                    return Ok(frame);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => bail!("connection closed"),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn fanout(args: FanoutArgs) -> Result<()> {
    let mut servers = Vec::new();
    let (base, subscriber_base) = match &args.url {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            url.trim_end_matches('/').to_owned(),
        ),
        None => {
            let (spawned, base) = spawn_server(&args.server_bin, args.redis_url.as_deref()).await?;
            servers.push(spawned);
            let subscriber_base = if args.cross_instance {
                let (spawned, other) =
                    spawn_server(&args.server_bin, args.redis_url.as_deref()).await?;
                servers.push(spawned);
                other
            } else {
                base.clone()
            };
            (base, subscriber_base)
        }
    };
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/api/session"))
        .json(&json!({"display_name": "bench publisher"}))
        .send()
        .await?
        .json()
        .await?;
    let token = session["token"]
        .as_str()
        .context("session token")?
        .to_owned();
    let campaign = format!("bench-{}", std::process::id());
    let mut publisher = connect(&base, Some(&token)).await?;
    let created = request(
        &mut publisher,
        "campaign:create:v1:requested",
        json!({"campaign_id": campaign, "title": "bench"}),
        "create",
    )
    .await?;
    if created["type"] != "campaign:create:v1:success" {
        bail!("cannot create the campaign: {created}");
    }

    // Sequence number → send instant, shared with the subscribers.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let connect_started = Instant::now();
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let mut socket = connect(&subscriber_base, None).await?;
        let reply = request(
            &mut socket,
            "campaign:subscribe:v1:requested",
            json!({"campaign_id": campaign}),
            &format!("s{i}"),
        )
        .await?;
        if reply["type"] != "campaign:subscribe:v1:success" {
            bail!("subscribe failed: {reply}");
        }
        subscribers.push(socket);
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();

    // Level-triggered: a reader busy when stop is signalled still sees it at its next await.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for mut socket in subscribers {
        let sent = sent.clone();
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies: Vec<u64> = Vec::new();
            loop {
                let message = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    m = socket.next() => m,
                };
                let Some(Ok(Message::Text(text))) = message else {
                    if message.is_none() {
                        break;
                    } else {
                        continue;
                    }
                };
                let received = Instant::now();
                // A cheap scan instead of a JSON parse, so the client is not the bottleneck.
                if !text.starts_with("{\"type\":\"campaign:state:v1:success\"") {
                    continue;
                }
                let seq = text
                    .find("\"title\":\"")
                    .map(|i| &text[i + 9..])
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|digits| digits.parse::<u64>().ok());
                if let Some(at) = seq.and_then(|s| sent.lock().unwrap().get(&s).copied()) {
                    latencies.push(received.duration_since(at).as_micros() as u64);
                }
            }
            latencies
        }));
    }

    // Publish at a fixed rate; acknowledgements are read by a separate task.
    let (mut writer, mut reader) = publisher.split();
    let acks = tokio::spawn(async move {
        let mut ok = 0u64;
        let mut failed = 0u64;
        while let Some(Ok(message)) = reader.next().await {
            if let Message::Text(text) = message {
                if text.contains("campaign:update:v1:success") {
                    ok += 1;
                } else if text.contains(":failed") {
                    failed += 1;
                }
            }
        }
        (ok, failed)
    });
    let padding = "x".repeat(args.payload_bytes);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut seq = 0u64;
    while started.elapsed() < Duration::from_secs(args.duration) {
        ticker.tick().await;
        let title = format!("{seq} {padding}");
        sent.lock().unwrap().insert(seq, Instant::now());
        let frame = json!({"type": "campaign:update:v1:requested",
            "payload": {"campaign_id": campaign, "updates": {"title": title}},
            "request_id": format!("u{seq}")});
        writer.send(Message::text(frame.to_string())).await?;
        seq += 1;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // let the tail arrive
    let _ = stop_tx.send(true);
    let _ = writer.close().await;
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await?);
    }
    let (acked, failed) = tokio::time::timeout(Duration::from_secs(2), acks)
        .await
        .unwrap_or(Ok((0, 0)))?;
    all.sort_unstable();
    let expected = seq * args.subscribers as u64;
    let summary = json!({
        "subscribers": args.subscribers,
        "rate_per_sec": args.rate,
        "published": seq,
        "acknowledged": acked,
        "failed": failed,
        "delivered": all.len(),
        "expected_deliveries": expected,
        "delivered_per_sec": all.len() as f64 / publish_secs,
        "connect_secs": connect_secs,
        "latency_us": {
            "p50": percentile(&all, 50.0),
            "p90": percentile(&all, 90.0),
            "p99": percentile(&all, 99.0),
            "max": all.last().copied().unwrap_or(0),
        }
    });
    if args.json {
        println!("{summary}");
    } else {
        let ms = |key: &str| summary["latency_us"][key].as_u64().unwrap_or(0) as f64 / 1000.0;
        let mode = match (&args.redis_url, args.cross_instance) {
            (Some(_), true) => "Redis mode, publisher and subscribers on different instances",
            (Some(_), false) => "Redis mode, one instance",
            (None, _) => "embedded store",
        };
        println!(
            "rally-bench fanout ({mode}): {} subscribers, {} updates/s for {} s",
            args.subscribers, args.rate, args.duration
        );
        println!("  published {seq}, acknowledged {acked}, failed {failed}");
        println!(
            "  delivered {} of {} ({:.0} events/s)",
            all.len(),
            expected,
            summary["delivered_per_sec"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  latency send→receive: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms("p50"),
            ms("p90"),
            ms("p99"),
            ms("max")
        );
        println!(
            "  connected {} subscribers in {:.2} s",
            args.subscribers, connect_secs
        );
    }
    if all.len() as u64 != expected {
        bail!("{} deliveries missing", expected - all.len() as u64);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Fanout(args) => fanout(args).await,
    }
}
