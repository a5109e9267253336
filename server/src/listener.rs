//! Accepting TCP connections and serving HTTP/1.1 on them, with the limits a public server
//! needs: a cap on open connections (below the process's file limit, so `/healthz` stays
//! reachable), a cap per client address, `TCP_NODELAY` and keepalive on every socket, and a
//! header-read timeout that also closes idle keep-alive connections — so a slow or silent client
//! holds a socket for seconds, not forever.
//!
//! Connections over a cap are closed as soon as they are accepted (the kernel's backlog must not
//! fill up with them either), and counted in `rally_http_connections_refused_total`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::forwarded::TrustedProxies;
use crate::shutdown::ShutdownSignal;

/// How the listener treats connections.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Open TCP connections (HTTP and WebSocket) at most.
    pub max_connections: usize,
    /// Open TCP connections from one client address at most (0: no cap).
    pub max_per_ip: usize,
    /// Proxies: their connections are not capped per address (they carry many clients).
    pub trusted_proxies: TrustedProxies,
    /// A request's headers must arrive within this; an idle keep-alive connection is closed
    /// after it too.
    pub header_read_timeout: Duration,
    /// TCP keepalive probes start after this much silence (dead peers are found by the kernel).
    pub tcp_keepalive: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 16_384,
            max_per_ip: 256,
            trusted_proxies: TrustedProxies::default(),
            header_read_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
        }
    }
}

/// The connection cap a process can keep: `wanted`, or less when the open-file limit is lower
/// (leaving room for the store, Redis and media sockets).
pub fn connection_cap(wanted: usize) -> usize {
    const RESERVED_FILES: u64 = 256;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !known || limit.rlim_cur == libc::RLIM_INFINITY {
        return wanted;
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED_FILES).max(16);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection's place under the caps; given back when dropped.
struct Admitted {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("listener counts");
        counts.total -= 1;
        if let Some(n) = counts.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Full,
    PerIp,
}

fn admit(
    counts: &Arc<Mutex<Counts>>,
    config: &ListenerConfig,
    ip: IpAddr,
) -> Result<Admitted, Refusal> {
    let mut guard = counts.lock().expect("listener counts");
    if guard.total >= config.max_connections {
        return Err(Refusal::Full);
    }
    let from_ip = guard.by_ip.get(&ip).copied().unwrap_or(0);
    if config.max_per_ip > 0 && from_ip >= config.max_per_ip && !config.trusted_proxies.trusts(ip) {
        return Err(Refusal::PerIp);
    }
    guard.total += 1;
    *guard.by_ip.entry(ip).or_default() += 1;
    Ok(Admitted {
        counts: counts.clone(),
        ip,
    })
}

/// Serve `app` on `listener` until `stop` fires; then stop accepting and ask every open HTTP
/// connection to finish its request and close. Connection tasks are tracked in `tasks`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ListenerConfig,
    tasks: TaskTracker,
    mut stop: ShutdownSignal,
) {
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let mut make_service: IntoMakeServiceWithConnectInfo<Router, SocketAddr> =
        app.into_make_service_with_connect_info();
    loop {
        let accepted = tokio::select! {
            _ = stop.recv() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, usually: wait a moment instead of spinning.
                tracing::debug!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match admit(&counts, &config, peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::Full => "limit",
                    Refusal::PerIp => "per_ip_limit",
                };
                metrics::counter!("rally_http_connections_refused_total", "reason" => reason)
                    .increment(1);
                drop(stream);
                continue;
            }
        };
        configure(&stream, &config);
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let config = config.clone();
        let stop = stop.clone();
        tasks.spawn(serve_connection(stream, service, config, stop, admitted));
    }
}

fn configure(stream: &TcpStream, config: &ListenerConfig) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(config.tcp_keepalive)
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    config: ListenerConfig,
    mut stop: ShutdownSignal,
    _admitted: Admitted,
) where
    S: Service<
            axum::extract::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.recv() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_address() {
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let config = ListenerConfig {
            max_connections: 3,
            max_per_ip: 2,
            ..ListenerConfig::default()
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = admit(&counts, &config, a).unwrap();
        let _second = admit(&counts, &config, a).unwrap();
        assert_eq!(admit(&counts, &config, a).err(), Some(Refusal::PerIp));
        let _third = admit(&counts, &config, b).unwrap();
        assert_eq!(admit(&counts, &config, b).err(), Some(Refusal::Full));
        drop(first);
        assert!(admit(&counts, &config, a).is_ok(), "a slot came back");
        let unlimited = ListenerConfig {
            max_per_ip: 0,
            max_connections: 10,
            ..ListenerConfig::default()
        };
        let many: Vec<_> = (0..10).map(|_| admit(&counts, &unlimited, b)).collect();
        assert!(many.iter().filter(|a| a.is_ok()).count() >= 6);
    }

    #[test]
    fn a_trusted_proxy_is_not_capped_per_address() {
        let counts: Arc<Mutex<Counts>> = Arc::default();
        let proxy: IpAddr = [127, 0, 0, 1].into();
        let config = ListenerConfig {
            max_connections: 5,
            max_per_ip: 1,
            trusted_proxies: TrustedProxies::new(vec!["127.0.0.1".parse().unwrap()]),
            ..ListenerConfig::default()
        };
        let held: Vec<_> = (0..5)
            .map(|_| admit(&counts, &config, proxy).unwrap())
            .collect();
        assert_eq!(
            admit(&counts, &config, proxy).err(),
            Some(Refusal::Full),
            "the total still holds"
        );
        drop(held);
        let other: IpAddr = [10, 0, 0, 9].into();
        let _one = admit(&counts, &config, other).unwrap();
        assert_eq!(admit(&counts, &config, other).err(), Some(Refusal::PerIp));
    }

    #[test]
    fn the_cap_keeps_a_small_wish() {
        assert_eq!(connection_cap(5), 5);
    }
}
