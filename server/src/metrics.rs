//! Prometheus metrics: the `metrics` facade everywhere, rendered at `GET /metrics` by
//! `metrics-exporter-prometheus`.
//!
//! Names follow Prometheus conventions (`_total` counters, base units: `_seconds`, `_bytes`).
//! Per-campaign series are the one place where labels could explode, and they name campaigns
//! (`/metrics` is unauthenticated), so they are off unless `--metrics-campaigns` turns them on;
//! then [`render`] appends them at scrape time for loaded public campaigns only (a private or
//! unlisted campaign is never named there), the busiest
//! [`TOP_CAMPAIGNS`] first.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::campaigns::StateManager;

/// Most campaigns listed in `rally_campaign_subscribers`.
pub const TOP_CAMPAIGNS: usize = 100;

/// Latency buckets, in seconds: 0.25 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder. Installed on first use; every server in the process (tests run
/// several) shares it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("rally_update_fields".into()),
                    &[1.0, 2.0, 3.0],
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("rally_subscriber_buffer_used".into()),
                    &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 31.0, 32.0],
                )
            })
            .expect("bucket lists are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Only fails if a recorder is already installed; then ours just stays unused.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "rally_websocket_connections_total",
        "WebSocket connections accepted"
    );
    describe_counter!(
        "rally_websocket_disconnects_total",
        "WebSocket connections ended, by reason"
    );
    describe_gauge!(
        "rally_websocket_connections_open",
        "WebSocket connections open now"
    );
    describe_counter!(
        "rally_changes_applied_total",
        "Campaign changes made durable and broadcast"
    );
    describe_histogram!(
        "rally_update_fields",
        Unit::Count,
        "Fields set by one applied write"
    );
    describe_histogram!(
        "rally_write_ack_seconds",
        Unit::Seconds,
        "Write request received to durable acknowledgement"
    );
    describe_histogram!(
        "rally_delivery_seconds",
        Unit::Seconds,
        "Change made durable to written to a subscriber's socket"
    );
    describe_histogram!(
        "rally_subscriber_buffer_used",
        Unit::Count,
        "Events waiting in a subscriber's 32-slot buffer when it is served"
    );
    describe_counter!(
        "rally_subscriber_lagged_total",
        "Times a subscriber overflowed its buffer and was caught up from history"
    );
    describe_counter!(
        "rally_slow_consumer_disconnects_total",
        "Subscribers disconnected because their socket took nothing for 5 s"
    );
    describe_counter!(
        "rally_panics_caught_total",
        "Panics caught and recovered from, by place"
    );
    describe_counter!(
        "rally_bus_published_total",
        "Events published on the event bus"
    );
    describe_counter!(
        "rally_bus_received_total",
        "Events received from the event bus"
    );
    describe_counter!("rally_bus_errors_total", "Event bus operations that failed");
    describe_counter!("rally_bus_reconnects_total", "Event bus reconnections");
    describe_gauge!(
        "rally_bus_connected",
        "1 while the event bus is reachable (always 1 in single-instance mode)"
    );
    describe_gauge!(
        "rally_media_participants",
        "Participants in media sessions on this instance"
    );
    describe_gauge!(
        "rally_media_tracks",
        "Tracks published to this instance's media relay"
    );
    describe_counter!(
        "rally_media_tracks_published_total",
        "Tracks publishers sent to the media relay"
    );
    describe_counter!(
        "rally_media_rtp_packets_received_total",
        "RTP packets the media relay received from publishers"
    );
    describe_counter!(
        "rally_media_rtp_packets_forwarded_total",
        "RTP packets the media relay sent to subscribers"
    );
    describe_counter!(
        "rally_media_rtp_bytes_forwarded_total",
        Unit::Bytes,
        "RTP bytes (header and payload) the media relay sent to subscribers"
    );
    describe_counter!(
        "rally_media_rtcp_feedback_total",
        "Feedback from media peers, by kind (pli, fir, nack); NACKs are answered from the relay's retransmission buffer"
    );
    describe_counter!(
        "rally_media_keyframe_requests_total",
        "Keyframe requests (PLI) the media relay sent to publishers, after rate limiting"
    );
    describe_gauge!(
        "rally_media_relay_saturation",
        "Share of the media UDP port range (--media-udp-ports) in use; each peer connection holds one port"
    );
    describe_gauge!(
        "rally_tokio_alive_tasks",
        "Tasks alive in the server's runtime (a leak shows as steady growth)"
    );
}

/// What `/metrics` reads (an axum sub-state).
#[derive(Clone)]
pub struct MetricsState {
    pub manager: StateManager,
    /// List subscribers per campaign (with campaign ids as labels).
    pub per_campaign: bool,
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn scrape(State(state): State<MetricsState>) -> Response {
    let body = render(&state.manager, state.per_campaign).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The scrape body: everything recorded, plus per-campaign subscriber counts.
pub async fn render(manager: &StateManager, per_campaign: bool) -> String {
    let handle = handle();
    handle.run_upkeep();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        metrics::gauge!("rally_tokio_alive_tasks").set(runtime.metrics().num_alive_tasks() as f64);
    }
    let mut out = handle.render();
    let mut counts = manager.subscriber_counts();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let _ = writeln!(
        out,
        "# HELP rally_campaigns_loaded Campaigns held in memory"
    );
    let _ = writeln!(out, "# TYPE rally_campaigns_loaded gauge");
    let _ = writeln!(out, "rally_campaigns_loaded {}", counts.len());
    if !per_campaign {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP rally_campaign_subscribers Subscribers per loaded public campaign (the {TOP_CAMPAIGNS} busiest)"
    );
    let _ = writeln!(out, "# TYPE rally_campaign_subscribers gauge");
    let public = counts.iter().filter(|(_, _, public)| *public);
    for (campaign, subscribers, _) in public.take(TOP_CAMPAIGNS) {
        // Campaign ids are [a-z0-9-]: nothing to escape in a label value.
        let _ = writeln!(
            out,
            "rally_campaign_subscribers{{campaign=\"{campaign}\"}} {subscribers}"
        );
    }
    out
}
