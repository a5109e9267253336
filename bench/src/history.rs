//! `rally-bench history`: what a campaign's complete log costs. Writes `--events` changes of a
//! typical shape (titles, `ui_content` merges, features) to one campaign, then reads random past
//! versions over HTTP (`GET /api/campaigns/{id}/versions/{v}`) beside a baseline of reading the
//! current campaign (`GET /api/campaigns/{id}`) in the same run, and reports the storage the log
//! took: the redb file's growth (embedded) or Redis's `MEMORY USAGE` of the log and snapshots.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::target::{self, Servers, Session, Target};
use crate::{bar, percentile};

#[derive(Parser, Clone)]
pub struct HistoryArgs {
    #[command(flatten)]
    servers: Servers,
    /// Changes written to the campaign.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Random past versions read (and as many reads of the current campaign).
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Writes in flight before waiting for their answers.
    #[arg(long, default_value_t = 256)]
    window: u64,
}

const CAMPAIGN: &str = "history-bench";

/// The `n`th change: what a campaign's editors typically send.
fn change(n: u64) -> serde_json::Value {
    let payload = match n % 4 {
        0 => {
            json!({"campaign_id": CAMPAIGN, "updates": {"title": format!("Spring launch, draft {n}")}})
        }
        1 | 2 => json!({"campaign_id": CAMPAIGN, "section": "ui_content",
            "values": {"hero": format!("Headline number {n}"), format!("block_{}", n % 8): {"text": "Some words for a block", "n": n}}}),
        _ => json!({"campaign_id": CAMPAIGN, "op": if n % 8 == 3 { "add" } else { "remove" },
            "features": [format!("feature_{}", n % 5)]}),
    };
    let kind = match n % 4 {
        0 => "campaign:update:v1:requested",
        1 | 2 => "campaign:config:v1:requested",
        _ => "campaign:feature:v1:requested",
    };
    json!({"type": kind, "payload": payload, "request_id": format!("w{n}")})
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `MEMORY USAGE key SAMPLES 0` (every element counted), through redis-cli.
fn redis_memory(url: &str, key: &str) -> Result<u64> {
    let out = std::process::Command::new("redis-cli")
        .args(["-u", url, "MEMORY", "USAGE", key, "SAMPLES", "0"])
        .output()
        .context("redis-cli is installed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("MEMORY USAGE {key}: {text}"))
}

fn summary(name: &str, mut micros: Vec<u32>) -> serde_json::Value {
    micros.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let (p50, p99, max) = (
        percentile(&micros, 50.0),
        percentile(&micros, 99.0),
        *micros.last().unwrap_or(&0),
    );
    println!(
        "{name:<34} median {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        ms(p50),
        ms(p99),
        ms(max)
    );
    json!({"read": name, "median_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)})
}

pub async fn run(args: HistoryArgs) -> Result<()> {
    let running = target::start(Target::Rally, &args.servers).await?;
    let session = Session::new(&running).await?;
    session.create_room(CAMPAIGN).await?;
    let redb = running.data_dir().join("rally.redb");
    let size_before = file_size(&redb);

    let mut socket = session.publisher(CAMPAIGN).await?;
    let writing = bar(args.events, "writes");
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.events {
        let end = (sent + args.window).min(args.events);
        for n in sent..end {
            socket.send(Message::text(change(n).to_string())).await?;
        }
        let mut answered = sent;
        while answered < end {
            let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .context("no answer within 10 s")?
                .context("connection closed")??;
            let Message::Text(text) = frame else { continue };
            if text.contains("\"request_id\":\"w") {
                if !text.contains(":success\"") {
                    bail!("a write was refused: {text}");
                }
                answered += 1;
            }
        }
        writing.set_position(end);
        sent = end;
    }
    writing.finish();
    let write_secs = started.elapsed().as_secs_f64();

    let http = reqwest::Client::new();
    let base = format!("http://{}/api/campaigns/{CAMPAIGN}", running.addr);
    let current: serde_json::Value = http.get(&base).send().await?.json().await?;
    let newest = current["campaign"]["version"]
        .as_u64()
        .context("a version")?;
    let state_bytes = serde_json::to_string(&current["campaign"])?.len();

    let mut past = Vec::with_capacity(args.samples);
    let mut now = Vec::with_capacity(args.samples);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..args.samples {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let version = 1 + seed % newest;
        let t = Instant::now();
        let answer = http
            .get(format!("{base}/versions/{version}"))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("version {version}: {}", answer.status());
        }
        answer.bytes().await?;
        past.push(t.elapsed().as_micros() as u32);
        let t = Instant::now();
        http.get(&base).send().await?.bytes().await?;
        now.push(t.elapsed().as_micros() as u32);
    }

    println!();
    println!(
        "{} changes written in {write_secs:.1} s ({:.0}/s); the campaign is at version {newest}, its state {state_bytes} bytes of JSON",
        args.events,
        args.events as f64 / write_secs
    );
    let reads = [
        summary("read a random past version", past),
        summary("baseline: read the current campaign", now),
    ];
    let storage = match &args.servers.redis_url {
        Some(url) => {
            let log = redis_memory(url, &format!("rally:{{{CAMPAIGN}}}:events"))?;
            let snapshots = redis_memory(url, &format!("rally:{{{CAMPAIGN}}}:snapshots"))?;
            let count = (newest / 100).max(1);
            println!(
                "Redis: log {log} bytes ({:.0} per event), snapshots {snapshots} bytes ({count} of them, {:.0} each)",
                log as f64 / newest as f64,
                snapshots as f64 / count as f64
            );
            json!({"store": "redis", "log_bytes": log, "bytes_per_event": log as f64 / newest as f64,
                   "snapshot_bytes": snapshots, "bytes_per_snapshot": snapshots as f64 / count as f64})
        }
        None => {
            let grown = file_size(&redb).saturating_sub(size_before);
            println!(
                "redb file grew by {grown} bytes: {:.0} per event, snapshots included",
                grown as f64 / newest as f64
            );
            json!({"store": "embedded", "file_growth_bytes": grown, "bytes_per_event": grown as f64 / newest as f64})
        }
    };
    println!(
        "{}",
        json!({"events": newest, "state_bytes": state_bytes, "reads": reads, "storage": storage})
    );
    Ok(())
}
