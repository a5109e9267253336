//! `rally-bench media`: one publisher, N subscribers through Rally's media relay, all headless
//! `webrtc` peers on loopback. Measures what the relay forwards (packets/s, from its own
//! `/metrics`), the relay process's CPU (from /proc), packets/s per core, and the latency from
//! the publisher's send to each subscriber's receipt.
//!
//! The latency is end to end: it includes the publisher's and the subscriber's WebRTC stacks
//! (SRTP, interceptors, sockets) as well as the relay, all on the same 2 cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rally_testkit::{now_ns, sent_at_ns, PacketSink, Publisher, Signaling, Stream, Viewer};
use serde_json::{json, Value};

use crate::target::{self, Servers, Session, Target};

#[derive(clap::Parser, Clone)]
pub struct MediaArgs {
    #[command(flatten)]
    servers: Servers,
    /// Subscribers receiving the one publisher.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Video bitrate of the publisher, in kbit/s (1,200-byte packets; plus 50 audio packets/s).
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    /// Seconds to measure once every subscriber receives.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Also measure the same stream sent straight from the publisher to as many receivers
    /// without the relay (a mesh), and report the latency the relay adds.
    #[arg(long)]
    direct: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

const VIDEO_BYTES: usize = 1200;

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat: 12 and 13 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

async fn forwarded_total(addr: &str) -> Result<f64> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    Ok(body
        .lines()
        .find_map(|l| {
            l.strip_prefix("rally_media_rtp_packets_forwarded_total ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn video_per_frame(kbps: u32) -> usize {
    ((kbps as usize * 1000 / 8) / VIDEO_BYTES / 50).max(1)
}

/// Latencies (µs) of packets received while `measuring` is set.
#[derive(Clone, Default)]
struct Recorder {
    measuring: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn sink(&self) -> PacketSink {
        let this = self.clone();
        Arc::new(move |kind, payload: &[u8], _at| {
            if !this.measuring.load(Ordering::Relaxed) {
                return;
            }
            this.received.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = sent_at_ns(kind, payload) {
                let latency = now_ns().saturating_sub(sent) / 1000;
                this.latencies_us.lock().expect("lock").push(latency);
            }
        })
    }

    fn sorted(&self) -> Vec<u64> {
        let mut latencies = std::mem::take(&mut *self.latencies_us.lock().expect("lock"));
        latencies.sort_unstable();
        latencies
    }
}

fn latency_json(sorted: &[u64]) -> Value {
    json!({
        "p50": percentile(sorted, 50.0),
        "p90": percentile(sorted, 90.0),
        "p99": percentile(sorted, 99.0),
        "max": sorted.last().map_or(0.0, |v| *v as f64 / 1000.0),
    })
}

/// The same stream from the publisher straight to as many receivers, no relay (a mesh: the
/// publisher sends each packet to every receiver itself).
async fn direct(args: &MediaArgs) -> Result<Value> {
    let recorder = Recorder::default();
    let (publisher, receivers) = Publisher::direct(
        Stream {
            video_per_frame: video_per_frame(args.video_kbps),
            video_bytes: VIDEO_BYTES,
        },
        Arc::new(|_| {}),
        recorder.sink(),
        args.subscribers,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(Duration::from_secs(2)).await; // settle, as for the relay
    recorder.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    recorder.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    publisher.stop().await;
    for receiver in receivers {
        let _ = receiver.pc.close().await;
    }
    let sorted = recorder.sorted();
    if sorted.is_empty() {
        bail!("the direct receiver got nothing");
    }
    Ok(json!({
        "received_packets_per_sec": recorder.received.load(Ordering::Relaxed) as f64 / elapsed,
        "latency_ms": latency_json(&sorted),
    }))
}

pub async fn run(args: MediaArgs) -> Result<()> {
    let running = target::start(Target::Rally, &args.servers).await?;
    let session = Session::new(&running).await?;
    let room = format!("media-{}", std::process::id());
    session.create_room(&room).await?;
    let addr: std::net::SocketAddr = running.addr.parse()?;

    // Subscribers first, so everyone receives from the first packet on.
    let recorder = Recorder::default();
    let receiving: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.subscribers).map(|_| AtomicU64::new(0)).collect());
    let progress = crate::bar(args.subscribers as u64, "joining subscribers");
    progress.set_prefix("media");
    let mut viewers = Vec::new();
    for n in 0..args.subscribers {
        let (signal, pushes) = Signaling::connect(addr, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let joined = signal
            .request("media:join:v1:requested", json!({"campaign_id": room}))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if joined["type"] != "media:join:v1:success" {
            bail!("join refused: {joined}");
        }
        let (record, receiving) = (recorder.sink(), receiving.clone());
        viewers.push(Viewer::start(
            signal,
            pushes,
            &room,
            Arc::new(move |kind, payload: &[u8], at| {
                receiving[n].fetch_add(1, Ordering::Relaxed);
                record(kind, payload, at);
            }),
        ));
        progress.inc(1);
    }
    progress.finish_and_clear();

    let (publisher_signal, _pushes) = Signaling::connect(addr, session.token())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let joined = publisher_signal
        .request("media:join:v1:requested", json!({"campaign_id": room}))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if joined["payload"]["can_publish"] != true {
        bail!("the publisher may not publish: {joined}");
    }
    let video_per_frame = video_per_frame(args.video_kbps);
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let publisher = Publisher::go_live(
        &publisher_signal,
        &room,
        Stream {
            video_per_frame,
            video_bytes: VIDEO_BYTES,
        },
        Arc::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        }),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let deadline = Instant::now() + Duration::from_secs(30);
    while receiving.iter().any(|r| r.load(Ordering::Relaxed) == 0) {
        if Instant::now() > deadline {
            bail!("not every subscriber receives after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // settle

    let forwarded_before = forwarded_total(&running.addr).await?;
    let cpu_before = cpu_seconds(running.pid);
    let sent_before = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    recorder.measuring.store(true, Ordering::Relaxed);
    let bar = crate::bar(args.duration, "measuring");
    bar.set_prefix("media");
    for _ in 0..args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    recorder.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cpu = cpu_seconds(running.pid) - cpu_before;
    let rss = running.rss_bytes();
    let forwarded = forwarded_total(&running.addr).await? - forwarded_before;
    let sent = sent.load(Ordering::Relaxed) - sent_before;
    publisher.stop().await;
    for viewer in &viewers {
        viewer.task.abort();
    }

    let latencies = recorder.sorted();
    let cores = cpu / elapsed;
    let forwarded_per_sec = forwarded / elapsed;
    drop(running);
    let direct = if args.direct {
        Some(direct(&args).await?)
    } else {
        None
    };
    let mut result = json!({
        "mode": "media",
        "subscribers": args.subscribers,
        "video_kbps": args.video_kbps,
        "publisher_packets_per_sec": sent as f64 / elapsed,
        "forwarded_packets_per_sec": forwarded_per_sec,
        "received_packets_per_sec": recorder.received.load(Ordering::Relaxed) as f64 / elapsed,
        "relay_cpu_cores": cores,
        "forwarded_per_core_per_sec": if cores > 0.0 { forwarded_per_sec / cores } else { 0.0 },
        "latency_ms": latency_json(&latencies),
        "relay_rss_bytes": rss,
    });
    if let Some(direct) = direct {
        let added = |p: &str| {
            result["latency_ms"][p].as_f64().unwrap_or(0.0)
                - direct["latency_ms"][p].as_f64().unwrap_or(0.0)
        };
        let added = json!({"p50": added("p50"), "p99": added("p99")});
        result["direct"] = direct;
        result["relay_added_latency_ms"] = added;
    }
    if args.json {
        println!("{result}");
    } else {
        print_table(&result);
    }
    Ok(())
}

fn print_table(r: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "media: 1 publisher ({} kbit/s video + audio) → {} subscribers, 2 cores shared with the tool",
        r["video_kbps"], r["subscribers"]
    );
    println!(
        "{:>12} {:>12} {:>12} {:>10} {:>12} {:>9} {:>9} {:>9}",
        "sent pkt/s",
        "fwd pkt/s",
        "recv pkt/s",
        "relay CPU",
        "fwd/s/core",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    println!(
        "{:>12.0} {:>12.0} {:>12.0} {:>9.2}c {:>12.0} {:>9.2} {:>9.2} {:>9.2}",
        f(&r["publisher_packets_per_sec"]),
        f(&r["forwarded_packets_per_sec"]),
        f(&r["received_packets_per_sec"]),
        f(&r["relay_cpu_cores"]),
        f(&r["forwarded_per_core_per_sec"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"]),
    );
    if r.get("direct").is_some() {
        println!(
            "direct (no relay, the publisher sends to all {} receivers): p50 {:.2} ms, p99 {:.2} ms → relay adds p50 {:.2} ms, p99 {:.2} ms",
            r["subscribers"],
            f(&r["direct"]["latency_ms"]["p50"]),
            f(&r["direct"]["latency_ms"]["p99"]),
            f(&r["relay_added_latency_ms"]["p50"]),
            f(&r["relay_added_latency_ms"]["p99"]),
        );
    }
}
