//! `/ops`: one instance at a glance, updated every second over the WebSocket. Charts are SVG
//! drawn here; nothing is loaded from elsewhere.

use leptos::prelude::*;

use crate::client::{use_connection, Output};
use crate::pages::erase::Erase;
use crate::protocol::ops::OpsSample;

const KEEP: usize = 120;
const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 150.0;
const PAD_LEFT: f64 = 48.0;
const PAD_BOTTOM: f64 = 18.0;

/// The smallest "nice" axis maximum (1, 2 or 5 × 10^n) at or above `value`.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|m| *m >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A chart value, short: whole numbers stay whole ("2", not "2.00").
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 10_000.0 {
        format!("{value:.0}")
    } else if value >= 1_000_000.0 {
        format!("{:.1}M", value / 1_000_000.0)
    } else if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// An SVG path through `points` (newest on the right), scaled to `max`.
fn path(points: &[f64], max: f64) -> String {
    let plot_w = WIDTH - PAD_LEFT;
    let plot_h = HEIGHT - PAD_BOTTOM;
    let step = plot_w / (KEEP - 1) as f64;
    let offset = KEEP.saturating_sub(points.len());
    points
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = PAD_LEFT + (offset + i) as f64 * step;
            let y = plot_h - (v / max).clamp(0.0, 1.0) * (plot_h - 4.0);
            format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" })
        })
        .collect()
}

type Series = (&'static str, &'static str, fn(&OpsSample) -> f64);

#[component]
fn Chart(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    samples: RwSignal<Vec<OpsSample>>,
    series: Vec<Series>,
) -> AnyView {
    let series = StoredValue::new(series);
    let data = Memo::new(move |_| {
        samples.with(|s| {
            series.with_value(|series| {
                series
                    .iter()
                    .map(|(_, _, f)| s.iter().map(f).collect::<Vec<f64>>())
                    .collect::<Vec<_>>()
            })
        })
    });
    let max = Memo::new(move |_| {
        nice_max(data.with(|d| d.iter().flatten().copied().fold(0.0, f64::max)))
    });
    view! {
        <figure class="chart" data-chart=id>
            <figcaption>
                {title}
                {move || {
                    series.with_value(|series| {
                        series
                            .iter()
                            .enumerate()
                            .map(|(i, (name, color, _))| {
                                let latest = move || data.with(|d| d[i].last().copied().unwrap_or(0.0));
                                view! {
                                    <span class="legend" style=format!("--c:{color}")>
                                        {*name} " "
                                        <strong class="latest" data-series=*name>{move || format_value(latest())}</strong>
                                        {unit}
                                    </span>
                                }
                            })
                            .collect_view()
                    })
                }}
            </figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label=title>
                <line class="axis" x1=PAD_LEFT y1="4" x2=PAD_LEFT y2=HEIGHT - PAD_BOTTOM></line>
                <line class="axis" x1=PAD_LEFT y1=HEIGHT - PAD_BOTTOM x2=WIDTH y2=HEIGHT - PAD_BOTTOM></line>
                <line class="grid" x1=PAD_LEFT y1=(HEIGHT - PAD_BOTTOM) / 2.0 x2=WIDTH y2=(HEIGHT - PAD_BOTTOM) / 2.0></line>
                <text class="tick" x=PAD_LEFT - 4.0 y="12" text-anchor="end">{move || format_value(max.get())}</text>
                <text class="tick" x=PAD_LEFT - 4.0 y=HEIGHT - PAD_BOTTOM text-anchor="end">"0"</text>
                <text class="tick" x=WIDTH y=HEIGHT - 4.0 text-anchor="end">"now"</text>
                <text class="tick" x=PAD_LEFT y=HEIGHT - 4.0>"−2 min"</text>
                {move || {
                    let max = max.get();
                    series.with_value(|series| {
                        series
                            .iter()
                            .enumerate()
                            .map(|(i, (name, color, _))| {
                                let d = data.with(|d| path(&d[i], max));
                                view! { <path class="series" data-series=*name d=d stroke=*color></path> }
                            })
                            .collect_view()
                    })
                }}
            </svg>
        </figure>
    }
    .erase()
}

#[component]
pub fn OpsPage() -> impl IntoView {
    let samples: RwSignal<Vec<OpsSample>> = RwSignal::new(Vec::new());
    let error = RwSignal::new(None::<String>);
    if let Some(connection) = use_connection() {
        let subscriber = connection.clone();
        Effect::new(move |prev: Option<()>| {
            if prev.is_none() {
                subscriber.subscribe_ops(std::rc::Rc::new(move |output: &Output| match output {
                    Output::OpsHistory(Ok(history)) => {
                        error.set(None);
                        samples.set(history.samples.clone());
                    }
                    Output::OpsHistory(Err(refused)) => error.set(Some(refused.message.clone())),
                    Output::OpsSample(sample) => samples.update(|s| {
                        s.push((**sample).clone());
                        if s.len() > KEEP {
                            s.remove(0);
                        }
                    }),
                    _ => {}
                }));
            }
        });
        on_cleanup(move || connection.unsubscribe_ops());
    }
    let latest = Memo::new(move |_| samples.with(|s| s.last().cloned()));
    view! {
        <leptos_meta::Title text="Operations — Rally"/>
        <section class="ops" data-samples=move || samples.with(|s| s.len())>
            <h1>"Operations"</h1>
            {move || error.get().map(|e| view! { <p class="error ops-denied">{e}</p> })}
            <div class="ops-status">
                <span class="bus" data-connected=move || latest.with(|l| l.as_ref().map(|s| s.bus.connected).unwrap_or(false)).to_string()>
                    "Event bus: "
                    {move || latest.with(|l| l.as_ref().map(|s| format!("{} ({})", s.bus.kind, if s.bus.connected { "connected" } else { "DOWN" })).unwrap_or_else(|| "…".into()))}
                </span>
                <span>"Slow consumers cut: " {move || latest.with(|l| l.as_ref().map(|s| s.slow_consumers_total).unwrap_or(0))}</span>
            </div>
            <div class="charts">
                <Chart id="connections" title="WebSocket connections" unit="" samples series=vec![("open", "#1f6feb", |s: &OpsSample| s.connections as f64)]/>
                <Chart id="events" title="Events per second" unit="/s" samples series=vec![
                    ("delivered", "#1a7f37", |s: &OpsSample| s.deliveries_per_sec),
                    ("changes", "#8250df", |s: &OpsSample| s.changes_per_sec),
                ]/>
                <Chart id="latency" title="Delivery latency" unit=" ms" samples series=vec![
                    ("p50", "#1f6feb", |s: &OpsSample| s.delivery_p50_ms),
                    ("p99", "#cf222e", |s: &OpsSample| s.delivery_p99_ms),
                ]/>
                <Chart id="ack" title="Write → durable ack" unit=" ms" samples series=vec![
                    ("p50", "#1f6feb", |s: &OpsSample| s.ack_p50_ms),
                    ("p99", "#cf222e", |s: &OpsSample| s.ack_p99_ms),
                ]/>
                <Chart id="media" title="Media packets per second" unit="/s" samples series=vec![("forwarded", "#bf8700", |s: &OpsSample| s.media_packets_per_sec)]/>
            </div>
            <h2>"Top campaigns by subscribers"</h2>
            <table class="top-campaigns">
                <thead><tr><th>"Campaign"</th><th>"Subscribers"</th></tr></thead>
                <tbody>
                    {move || latest.with(|l| l.as_ref().map(|s| s.top_campaigns.clone()).unwrap_or_default())
                        .into_iter()
                        .map(|(id, n)| view! { <tr><td><a href=format!("/campaigns/{id}")>{id.to_string()}</a></td><td>{n}</td></tr> })
                        .collect_view()}
                </tbody>
            </table>
        </section>
    }
    .erase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_nice() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(4.9), 5.0);
        assert_eq!(nice_max(51.0), 100.0);
        assert_eq!(nice_max(12_000.0), 20_000.0);
    }

    #[test]
    fn paths_end_at_the_right_edge() {
        let d = path(&[0.0, 5.0, 10.0], 10.0);
        assert!(d.starts_with('M'));
        assert!(
            d.ends_with(&format!(
                "{WIDTH:.1},{:.1}",
                4.0 + 0.0 * (HEIGHT - PAD_BOTTOM)
            )),
            "{d}"
        );
    }
}
