//! `rally-bench`: measure Rally from the outside, through its public protocol only, side by side
//! with two baselines driven by the same clients in the same run: a bare tokio-tungstenite
//! broadcast server (the stack's ceiling) and Socket.IO (what many teams would pick instead).
//!
//! ```text
//! rally-bench fanout --compare --campaigns 1 --subscribers 1000 --rate 0      # unthrottled
//! rally-bench fanout --compare --campaigns 1 --subscribers 1000 --rate 50     # latency shape
//! rally-bench idle --compare --connections 5000                               # memory/connection
//! rally-bench media --subscribers 20 --video-kbps 1500                        # media relay
//! rally-bench history --events 100000                                         # the change log
//! ```
//!
//! The tool starts every server itself (`target/release/rally`, itself as `bare-server`, and
//! `node bench/socketio-server.mjs`), so it can read their memory from /proc.

mod bare;
mod history;
mod media;
mod target;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use target::{Servers, Session, Target};

#[derive(Parser)]
#[command(name = "rally-bench", about = "Load tool for Rally and its baselines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publishers update rooms (campaigns); every subscriber of a room receives every update.
    Fanout(FanoutArgs),
    /// Open idle connections and report the server's memory per connection.
    Idle(IdleArgs),
    /// One publisher to N subscribers through the media relay: forwarded packets/s, per core,
    /// and send-to-receive latency.
    Media(media::MediaArgs),
    /// Write a long campaign log, then read random past versions and report the log's storage.
    History(history::HistoryArgs),
    /// Run the bare broadcast baseline server (used by the tool itself).
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
}

#[derive(Parser, Clone)]
struct Which {
    /// The server to measure.
    #[arg(long, value_enum, default_value = "rally")]
    target: Target,
    /// Measure Rally, bare and Socket.IO one after the other, and compare.
    #[arg(long)]
    compare: bool,
    #[command(flatten)]
    servers: Servers,
    /// One JSON object per target instead of tables.
    #[arg(long)]
    json: bool,
}

impl Which {
    fn targets(&self) -> Vec<Target> {
        if self.compare {
            vec![Target::Rally, Target::Bare, Target::Socketio]
        } else {
            vec![self.target]
        }
    }
}

#[derive(Parser, Clone)]
struct FanoutArgs {
    #[command(flatten)]
    which: Which,
    /// Rooms (Rally: campaigns), each with its own publisher.
    #[arg(long, default_value_t = 1)]
    campaigns: usize,
    /// Subscribers per room.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Updates per second per room; 0 = as fast as the target takes them.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds to measure after everyone is connected.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Extra bytes in each update (the frame is ~450 bytes plus this).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Unthrottled Rally: updates each publisher keeps in flight before waiting for replies.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Rally in Redis mode only: start a second instance for the subscribers, so every delivery
    /// crosses Redis.
    #[arg(long, requires = "redis_url")]
    cross_instance: bool,
}

#[derive(Parser, Clone)]
struct IdleArgs {
    #[command(flatten)]
    which: Which,
    #[arg(long, default_value_t = 5000)]
    connections: usize,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} {msg:<22} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Open `count` connections with `make`, `concurrency` at a time; returns them and conns/s.
async fn open_many<F, Fut>(
    count: usize,
    concurrency: usize,
    progress: &ProgressBar,
    make: F,
) -> Result<(Vec<target::Socket>, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<target::Socket>>,
{
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    let mut pending =
        futures_util::stream::iter((0..count).map(&make)).buffer_unordered(concurrency.max(1));
    while let Some(socket) = pending.next().await {
        sockets.push(socket?);
        progress.inc(1);
    }
    let rate = count as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((sockets, rate))
}

/// Send timestamps per room, indexed by sequence number (nanoseconds since `epoch`, 0 = unsent).
struct SendTimes {
    epoch: Instant,
    rooms: Vec<Vec<AtomicU64>>,
}

impl SendTimes {
    fn new(rooms: usize, capacity: usize) -> Self {
        SendTimes {
            epoch: Instant::now(),
            rooms: (0..rooms)
                .map(|_| (0..capacity).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        }
    }

    fn mark(&self, room: usize, seq: u64) {
        if let Some(slot) = self.rooms[room].get(seq as usize) {
            slot.store(
                self.epoch.elapsed().as_nanos() as u64 + 1,
                Ordering::Relaxed,
            );
        }
    }

    fn latency_us(&self, room: usize, seq: u64, at: Instant) -> Option<u32> {
        let sent = self.rooms[room].get(seq as usize)?.load(Ordering::Relaxed);
        if sent == 0 {
            return None;
        }
        let received = at.duration_since(self.epoch).as_nanos() as u64 + 1;
        Some((received.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32)
    }
}

async fn fanout_one(target: Target, args: &FanoutArgs) -> Result<Value> {
    let running = target::start(target, &args.which.servers).await?;
    let session = Arc::new(Session::new(&running).await?);
    // With --cross-instance, subscribers connect to a second Rally sharing the Redis.
    let second = if args.cross_instance && target == Target::Rally {
        Some(target::start(target, &args.which.servers).await?)
    } else {
        None
    };
    let subscriber_session = match &second {
        Some(second) => Arc::new(Session::new(second).await?),
        None => session.clone(),
    };
    let prefix = target.name();
    let rooms: Vec<String> = (0..args.campaigns)
        .map(|i| format!("bench-{}-{i}", std::process::id()))
        .collect();
    for room in &rooms {
        session.create_room(room).await?;
    }
    let rss_before = running.rss_bytes();

    let total = args.campaigns * args.subscribers;
    let progress = bar(total as u64, "connecting subscribers");
    progress.set_prefix(prefix);
    let (subscribers, connect_rate) = open_many(total, args.connect_concurrency, &progress, |i| {
        let session = subscriber_session.clone();
        let room = rooms[i % rooms.len()].clone();
        async move { session.subscriber(&room).await }
    })
    .await?;
    progress.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = running.rss_bytes();

    let capacity = if args.rate == 0 {
        4_000_000 / args.campaigns.max(1)
    } else {
        (args.rate as usize * (args.duration as usize + 5)).max(16)
    };
    let times = Arc::new(SendTimes::new(rooms.len(), capacity));
    // Publishers stop first; readers a moment later, so in-flight deliveries are counted.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Publishers connect one after another but start together, when the window opens: with many
    // rooms (and a slow-to-connect target) the first ones would otherwise publish for a while
    // before the measurement begins.
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let (stop_readers_tx, stop_readers_rx) = tokio::sync::watch::channel(false);
    // Throughput counts deliveries while publishing; completeness counts them all.
    let publishing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let mut readers = Vec::new();
    for (i, mut socket) in subscribers.into_iter().enumerate() {
        let room = i % rooms.len();
        let times = times.clone();
        let mut stop = stop_readers_rx.clone();
        let publishing = publishing.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut delivered = 0u64;
            let mut in_window = 0u64;
            loop {
                let message = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    m = socket.next() => m,
                };
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let at = Instant::now();
                        if text.as_str() == "2" {
                            let _ = socket.send(Message::text("3")).await;
                            continue;
                        }
                        if let Some(seq) = target::sequence_of(&text) {
                            delivered += 1;
                            if publishing.load(Ordering::Relaxed) {
                                in_window += 1;
                            }
                            if let Some(us) = times.latency_us(room, seq, at) {
                                latencies.push(us);
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            (delivered, in_window, latencies)
        }));
    }

    let padding = "x".repeat(args.payload_bytes);
    let published = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for (room_index, room) in rooms.iter().enumerate() {
        let socket = session.publisher(room).await?;
        let (mut sink, mut stream) = socket.split();
        let session = session.clone();
        let times = times.clone();
        let room = room.clone();
        let padding = padding.clone();
        let published = published.clone();
        let failed = failed.clone();
        let mut stop = stop_rx.clone();
        let mut go = go_rx.clone();
        let (rate, window) = (args.rate, args.window);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
        // Reads the publisher's own socket: Rally's replies release the window; the baselines'
        // echoes are drained so the publisher never blocks on them.
        let acks = {
            let in_flight = in_flight.clone();
            let session = session.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    if let Message::Text(text) = message {
                        if session.is_ack(&text) {
                            if text.contains(":failed") {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            in_flight.add_permits(1);
                        }
                    }
                }
            })
        };
        publishers.push(tokio::spawn(async move {
            if go.wait_for(|go| *go).await.is_err() {
                acks.abort();
                return;
            }
            let mut seq = 0u64;
            let mut ticker = (rate > 0).then(|| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            loop {
                if *stop.borrow() {
                    break;
                }
                match ticker.as_mut() {
                    Some(ticker) => {
                        tokio::select! {
                            _ = ticker.tick() => {}
                            _ = stop.wait_for(|s| *s) => break,
                        }
                    }
                    None if session.target == Target::Rally => {
                        tokio::select! {
                            permit = in_flight.acquire() => permit.expect("open").forget(),
                            _ = stop.wait_for(|s| *s) => break,
                        }
                    }
                    None => {}
                }
                times.mark(room_index, seq);
                let frame = session.publish_frame(&room, seq, &padding);
                if sink.send(Message::text(frame)).await.is_err() {
                    break;
                }
                published.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                if ticker.is_none() && seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            acks.abort();
        }));
    }

    let _ = go_tx.send(true);
    let progress = bar(args.duration, "publishing");
    progress.set_prefix(prefix);
    let started = Instant::now();
    for _ in 0..args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress.inc(1);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    publishing.store(false, Ordering::Relaxed);
    for publisher in publishers {
        let _ = publisher.await;
    }
    // Events published just before the stop are still on their way on a saturated machine (p99
    // can be half a second with 10,000 connections); give them time before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_readers_tx.send(true);
    progress.finish_and_clear();
    let rss_loaded = running.rss_bytes();
    let mut latencies = Vec::new();
    let mut delivered = 0u64;
    let mut delivered_in_window = 0u64;
    for reader in readers {
        let (count, in_window, mut samples) = reader.await?;
        delivered += count;
        delivered_in_window += in_window;
        latencies.append(&mut samples);
    }
    latencies.sort_unstable();
    let published = published.load(Ordering::Relaxed);
    let expected = published * args.subscribers as u64;
    let ms = |us: u32| f64::from(us) / 1000.0;
    Ok(json!({
        "target": target.name(),
        "campaigns": args.campaigns,
        "subscribers_per_campaign": args.subscribers,
        "rate_per_campaign": args.rate,
        "published": published,
        "failed": failed.load(Ordering::Relaxed),
        "delivered": delivered,
        "expected": expected,
        "delivered_per_sec": delivered_in_window as f64 / publish_secs,
        "latency_ms": {
            "p50": ms(percentile(&latencies, 50.0)),
            "p90": ms(percentile(&latencies, 90.0)),
            "p99": ms(percentile(&latencies, 99.0)),
            "max": ms(latencies.last().copied().unwrap_or(0)),
        },
        "connects_per_sec": connect_rate,
        "rss_bytes": {"before": rss_before, "connected": rss_connected, "loaded": rss_loaded},
        "rss_per_connection_bytes": (rss_connected.saturating_sub(rss_before)) as f64 / total.max(1) as f64,
    }))
}

fn print_fanout_table(results: &[Value]) {
    println!(
        "{:<10} {:>12} {:>14} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "target",
        "published",
        "delivered/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "conns/s",
        "KiB/conn"
    );
    for r in results {
        let latency = &r["latency_ms"];
        println!(
            "{:<10} {:>12} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>10.0} {:>9.1}",
            r["target"].as_str().unwrap_or("?"),
            r["published"],
            r["delivered_per_sec"].as_f64().unwrap_or(0.0),
            latency["p50"].as_f64().unwrap_or(0.0),
            latency["p90"].as_f64().unwrap_or(0.0),
            latency["p99"].as_f64().unwrap_or(0.0),
            latency["max"].as_f64().unwrap_or(0.0),
            r["connects_per_sec"].as_f64().unwrap_or(0.0),
            r["rss_per_connection_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        );
    }
    let get = |name: &str| results.iter().find(|r| r["target"] == name);
    if let (Some(rally), Some(bare)) = (get("rally"), get("bare")) {
        let ratio = |key: &str| {
            rally[key].as_f64().unwrap_or(0.0) / bare[key].as_f64().unwrap_or(1.0).max(1e-9)
        };
        println!(
            "rally / bare: delivered/s {:.2}×, p99 {:.2}×",
            ratio("delivered_per_sec"),
            rally["latency_ms"]["p99"].as_f64().unwrap_or(0.0)
                / bare["latency_ms"]["p99"].as_f64().unwrap_or(1.0).max(1e-9)
        );
    }
    if let (Some(rally), Some(socketio)) = (get("rally"), get("socket.io")) {
        println!(
            "rally / socket.io: delivered/s {:.2}×, p99 {:.2}×",
            rally["delivered_per_sec"].as_f64().unwrap_or(0.0)
                / socketio["delivered_per_sec"]
                    .as_f64()
                    .unwrap_or(1.0)
                    .max(1e-9),
            rally["latency_ms"]["p99"].as_f64().unwrap_or(0.0)
                / socketio["latency_ms"]["p99"]
                    .as_f64()
                    .unwrap_or(1.0)
                    .max(1e-9),
        );
    }
}

async fn fanout(args: FanoutArgs) -> Result<()> {
    let mut results = Vec::new();
    for target in args.which.targets() {
        let result = fanout_one(target, &args).await?;
        if args.which.json {
            println!("{result}");
        }
        results.push(result);
    }
    if !args.which.json {
        println!(
            "fanout: {} campaign(s) × {} subscribers, {} updates/s per campaign, {} s, 2 cores shared with the tool",
            args.campaigns,
            args.subscribers,
            if args.rate == 0 { "unthrottled".to_owned() } else { args.rate.to_string() },
            args.duration
        );
        print_fanout_table(&results);
    }
    if args.rate > 0 {
        for r in &results {
            if r["target"] == "rally" && r["delivered"] != r["expected"] {
                bail!(
                    "rally lost deliveries: {} of {}",
                    r["delivered"],
                    r["expected"]
                );
            }
        }
    }
    Ok(())
}

async fn idle_one(target: Target, args: &IdleArgs) -> Result<Value> {
    let running = target::start(target, &args.which.servers).await?;
    let session = Arc::new(Session::new(&running).await?);
    let room = format!("idle-{}", std::process::id());
    session.create_room(&room).await?;
    // Let the server settle (allocator, lazy statics) before the baseline reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = running.rss_bytes();
    let progress = bar(args.connections as u64, "opening idle connections");
    progress.set_prefix(target.name());
    let (sockets, rate) = open_many(args.connections, 64, &progress, |_| {
        let session = session.clone();
        let room = room.clone();
        async move { session.subscriber(&room).await }
    })
    .await?;
    progress.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = running.rss_bytes();
    drop(sockets);
    Ok(json!({
        "target": target.name(),
        "connections": args.connections,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_connection": after.saturating_sub(before) as f64 / args.connections as f64,
        "connects_per_sec": rate,
    }))
}

async fn idle(args: IdleArgs) -> Result<()> {
    let mut results = Vec::new();
    for target in args.which.targets() {
        let result = idle_one(target, &args).await?;
        if args.which.json {
            println!("{result}");
        }
        results.push(result);
    }
    if !args.which.json {
        println!(
            "idle: {} connections (each subscribed/joined to one room)",
            args.connections
        );
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>10}",
            "target", "RSS before", "RSS after", "KiB/conn", "conns/s"
        );
        for r in &results {
            println!(
                "{:<10} {:>10.1}MB {:>10.1}MB {:>12.2} {:>10.0}",
                r["target"].as_str().unwrap_or("?"),
                r["rss_before_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["rss_after_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["bytes_per_connection"].as_f64().unwrap_or(0.0) / 1024.0,
                r["connects_per_sec"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match Cli::parse().command {
            Command::Fanout(args) => fanout(args).await,
            Command::Idle(args) => idle(args).await,
            Command::Media(args) => media::run(args).await,
            Command::History(args) => history::run(args).await,
            Command::BareServer { addr } => bare::serve(addr).await,
        }
    })
}
