//! Clients behind a reverse proxy. nginx or Caddy in front of Rally makes every TCP connection
//! come from the proxy's address, so per-address quotas would count all clients as one. For a
//! connection from a proxy the operator trusts (`--trusted-proxies`), the client is the address
//! the proxy appended to `X-Forwarded-For`: the rightmost entry that is not itself a trusted
//! proxy. Entries further left were written by the client and prove nothing. A connection from
//! anywhere else keeps its TCP peer address, whatever headers it sends.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`), or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxies` entry is not an address range.
#[derive(Debug, thiserror::Error)]
#[error("expected an IP address or a CIDR range like 10.0.0.0/8, got {0:?}")]
pub struct AddressRangeError(String);

impl FromStr for AddressRange {
    type Err = AddressRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || AddressRangeError(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| error())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(error)?,
            None => bits,
        };
        Ok(AddressRange { network, prefix })
    }
}

impl AddressRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => leading_equal(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                leading_equal(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` agree.
fn leading_equal(a: u128, b: u128, prefix: u8) -> bool {
    prefix == 0 || (a ^ b) >> (128 - u32::from(prefix)) == 0
}

/// An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`; judge it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` Rally believes. Empty (the default): none.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[AddressRange]>);

impl TrustedProxies {
    pub fn new(ranges: Vec<AddressRange>) -> Self {
        TrustedProxies(ranges.into())
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(ip))
    }

    /// The client behind `peer`: the peer itself unless it is a trusted proxy, else the
    /// rightmost untrusted address of `X-Forwarded-For` (every header line, in order), read
    /// from the right. What lies left of it was written by the client and is never looked at; a
    /// hop on the way that is not an address, or a chain of trusted proxies only, leaves the
    /// peer.
    pub fn client(&self, peer: SocketAddr, forwarded_for: &[&str]) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let hops = forwarded_for.iter().rev().flat_map(|line| line.rsplit(','));
        for hop in hops {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return SocketAddr::new(canonical(ip), peer.port()),
                Err(_) => return peer,
            }
        }
        peer
    }
}

/// Middleware: the request's `ConnectInfo` becomes the client's address (see the module doc),
/// so every per-address quota counts clients, not the proxy.
pub async fn client_address(
    State(proxies): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    {
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let client = proxies.client(peer, &forwarded);
        if client != peer {
            request.extensions_mut().insert(ConnectInfo(client));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn ranges_parse_and_contain() {
        for (range, ip, inside) in [
            ("10.0.0.0/8", "10.200.3.4", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("192.168.1.128/25", "192.168.1.200", true),
            ("192.168.1.128/25", "192.168.1.100", false),
            ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("::1", "127.0.0.1", false),
        ] {
            let range: AddressRange = range.parse().unwrap();
            assert_eq!(
                range.contains(ip.parse().unwrap()),
                inside,
                "{range:?} {ip}"
            );
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_address_no_trusted_proxy_wrote() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        for (who, peer, forwarded, client) in [
            ("one proxy", peer, vec!["203.0.113.5"], "203.0.113.5:5000"),
            (
                "a client's forged entry is left of the proxy's",
                peer,
                vec!["1.2.3.4, 203.0.113.5"],
                "203.0.113.5:5000",
            ),
            (
                "two trusted proxies",
                peer,
                vec!["203.0.113.5, 10.1.2.3"],
                "203.0.113.5:5000",
            ),
            (
                "several header lines",
                peer,
                vec!["1.2.3.4", "203.0.113.5"],
                "203.0.113.5:5000",
            ),
            ("no header", peer, vec![], "127.0.0.1:5000"),
            (
                "only trusted hops",
                peer,
                vec!["10.0.0.1"],
                "127.0.0.1:5000",
            ),
            (
                "garbage on the proxy's side",
                peer,
                vec!["203.0.113.5, nonsense"],
                "127.0.0.1:5000",
            ),
            (
                "garbage a client wrote is never read",
                peer,
                vec!["x, 203.0.113.5"],
                "203.0.113.5:5000",
            ),
            (
                "behind a trusted hop",
                peer,
                vec!["x, 203.0.113.5, 10.0.0.2"],
                "203.0.113.5:5000",
            ),
            (
                "an untrusted peer's header is ignored",
                stranger,
                vec!["203.0.113.5"],
                "198.51.100.7:5000",
            ),
        ] {
            assert_eq!(
                trusted.client(peer, &forwarded),
                client.parse::<SocketAddr>().unwrap(),
                "{who}"
            );
        }
        assert_eq!(
            TrustedProxies::default().client(peer, &["203.0.113.5"]),
            peer,
            "nobody is trusted by default"
        );
    }
}
