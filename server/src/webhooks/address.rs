//! Where a webhook may be sent. An endpoint's address is the integrator's to choose, so it could
//! point Rally at its own network (a metadata service, an admin port): loopback, private,
//! link-local and other non-public addresses are refused unless the operator allows that host
//! (`--webhook-allow-hosts`). The check runs when an endpoint is registered and again on every
//! delivery, against the addresses the name resolves to then, and the request goes to exactly
//! those addresses (a name that changes its answer in between cannot slip through).

use std::net::{IpAddr, SocketAddr};

use std::time::Duration;

use reqwest::Url;

/// A name lookup's deadline.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address cannot receive webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("not an http:// or https:// URL")]
    NotHttp,
    #[error("the URL names no host")]
    NoHost,
    #[error(
        "{0} is not a public address (an operator may allow its host with --webhook-allow-hosts)"
    )]
    NotPublic(IpAddr),
    #[error("cannot resolve {0}")]
    Unresolvable(String),
}

/// A parsed endpoint address.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub host: String,
    pub port: u16,
}

pub fn parse(url: &str) -> Result<Target, AddressError> {
    let url = Url::parse(url).map_err(|_| AddressError::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AddressError::NotHttp);
    }
    let host = url
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or(AddressError::NoHost)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().ok_or(AddressError::NoHost)?;
    Ok(Target { url, host, port })
}

/// Whether `ip` is reachable from the public internet (what every webhook must be, unless
/// allowed).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 192 && b == 88 && v4.octets()[2] == 99) // 6to4 relays
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that carry an IPv4 address reach it: judge that one.
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] {
                // ::a.b.c.d (IPv4-compatible), and :: and ::1.
                return !v6.is_loopback()
                    && !v6.is_unspecified()
                    && is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 (64:ff9b::/96 and 64:ff9b:1::/48).
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                // 6to4.
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            let first = s[0];
            !(v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || (first == 0x2001 && s[1] == 0x0db8) // documentation
                || (first == 0x2001 && s[1] == 0) // Teredo
                || (first == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
        }
    }
}

/// The addresses `target` resolves to now, each checked; all of them, or why not.
pub async fn resolve(target: &Target, allowed: &[String]) -> Result<Vec<SocketAddr>, AddressError> {
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| AddressError::Unresolvable(target.host.clone()))?
        .map_err(|_| AddressError::Unresolvable(target.host.clone()))?
        .collect();
    if addrs.is_empty() {
        return Err(AddressError::Unresolvable(target.host.clone()));
    }
    let host = target.host.trim_end_matches('.').to_ascii_lowercase();
    if allowed.iter().any(|allowed| *allowed == host) {
        return Ok(addrs);
    }
    match addrs.iter().find(|addr| !is_public(addr.ip())) {
        Some(addr) => Err(AddressError::NotPublic(addr.ip())),
        None => Ok(addrs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        let cases = [
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("2606:4700:4700::1111", true),
            ("::127.0.0.1", false),
            ("::8.8.8.8", true),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b::808:808", true),
            ("2002:7f00:1::", false),
            ("2001:0:4136:e378::1", false),
            ("fec0::1", false),
            ("100::1", false),
            ("192.0.0.8", false),
            ("192.88.99.1", false),
        ];
        for (ip, public) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn urls_name_an_http_host() {
        assert_eq!(parse("https://hooks.example/in").unwrap().port, 443);
        assert_eq!(parse("http://127.0.0.1:9000/in").unwrap().host, "127.0.0.1");
        assert_eq!(parse("http://[::1]:9000/").unwrap().host, "::1");
        assert_eq!(parse("ftp://x.example").unwrap_err(), AddressError::NotHttp);
        assert_eq!(parse("not a url").unwrap_err(), AddressError::NotHttp);
    }

    #[tokio::test]
    async fn a_private_address_needs_its_host_allowed() {
        let target = parse("http://127.0.0.1:9/").unwrap();
        assert!(matches!(
            resolve(&target, &[]).await,
            Err(AddressError::NotPublic(_))
        ));
        assert!(resolve(&target, &["127.0.0.1".into()]).await.is_ok());
    }
}
