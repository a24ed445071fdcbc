//! The client's IP address, which the rate limit, the audit log and the logs
//! all use.
//!
//! Without trusted proxies it is the TCP peer's address. When the peer is in
//! one of the `[network] trusted_proxies` networks, the address comes from
//! `X-Forwarded-For` instead. Every proxy appends the address it received
//! the request from, so the list is read from the right, past the addresses
//! of trusted proxies, up to the first address that no trusted network
//! contains. Entries left of that one were written by the client or by
//! untrusted proxies, so they are never read.
//!
//! The standard `Forwarded` header (RFC 7239) is ignored on purpose. A proxy
//! appends to one of the two headers and passes the other through as the
//! client sent it, so reading both would let a client behind a trusted
//! proxy choose its own address.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::{IpNet, Ipv4Net};

use crate::state::AppState;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Unusable `X-Forwarded-For` headers from trusted proxies seen by this
/// process, so that a misconfigured proxy is logged without a line per
/// request.
static REJECTED_HEADERS: AtomicU64 = AtomicU64::new(0);
/// A rejected header is logged the first time and then once per this many.
const LOG_EVERY_REJECTED: u64 = 1000;
/// Characters of a rejected entry that the warning includes.
const MAX_LOGGED_ENTRY_CHARS: usize = 100;

/// The client's address, stored in the request extensions by [`record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The networks whose proxies may state the client's address.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses the `[network] trusted_proxies` entries: CIDR blocks, or single
    /// addresses, which stand for one host.
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        let mut networks = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let network = parse_network(entry).map_err(|problem| {
                anyhow::anyhow!(
                    "network.trusted_proxies[{index}] = {entry:?} is invalid: {problem}"
                )
            })?;
            networks.push(network);
        }
        Ok(Self { networks })
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Returns the configured blocks with a zero-length prefix, which trust
    /// every peer of their address family.
    pub fn trusting_everyone(&self) -> Vec<IpNet> {
        self.networks
            .iter()
            .filter(|network| network.prefix_len() == 0)
            .copied()
            .collect()
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// Returns the address of the client behind `peer`, the TCP peer of the
    /// request whose headers are `headers`.
    ///
    /// Falls back to `peer` when the peer is not trusted, when the header is
    /// absent or empty, and when the walk reaches an entry that is not an IP
    /// address before it reaches an untrusted one. When every entry is
    /// trusted, the left-most one is the farthest known hop, so it is the
    /// result.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        match self.walk_forwarded_for(headers) {
            Ok(Some(client)) => client,
            Ok(None) => peer,
            Err(entry) => {
                let rejected = REJECTED_HEADERS.fetch_add(1, Ordering::Relaxed) + 1;
                if rejected == 1 || rejected.is_multiple_of(LOG_EVERY_REJECTED) {
                    // A header line may be many kilobytes long, so the log
                    // keeps the start of the entry only.
                    let entry: String = entry.chars().take(MAX_LOGGED_ENTRY_CHARS).collect();
                    tracing::warn!(
                        peer.ip = %peer,
                        entry,
                        rejected_total = rejected,
                        "X-Forwarded-For from a trusted proxy contains an entry that is not an IP address, \
                         so the proxy's own address is used"
                    );
                }
                peer
            }
        }
    }

    /// Walks the combined `X-Forwarded-For` list from the right. Returns the
    /// first untrusted address, or the left-most address when all are
    /// trusted, or `None` when the list is empty. An entry that does not
    /// parse is returned as the error.
    fn walk_forwarded_for(&self, headers: &HeaderMap) -> Result<Option<IpAddr>, String> {
        // RFC 9110, section 5.3: several field lines with one name form one
        // comma-separated list, in the order they were received.
        let mut values = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            let text = value
                .to_str()
                .map_err(|_| String::from_utf8_lossy(value.as_bytes()).into_owned())?;
            values.push(text);
        }
        let entries: Vec<&str> = values
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();

        let mut farthest = None;
        for entry in entries.iter().rev() {
            let address = parse_forwarded_address(entry).ok_or_else(|| (*entry).to_owned())?;
            if !self.contains(address) {
                return Ok(Some(address));
            }
            farthest = Some(address);
        }
        Ok(farthest)
    }
}

/// Parses one `trusted_proxies` entry, or returns what is wrong with it. A
/// CIDR block must have no bits set after its prefix, because "10.1.2.3/8"
/// more likely contains a typo than means all of 10.0.0.0/8.
fn parse_network(entry: &str) -> Result<IpNet, String> {
    const EXPECTED: &str = "expected a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\", \
                            or a single address such as \"192.0.2.10\"";
    let entry = entry.trim();
    if !entry.contains('/') {
        let address: IpAddr = entry
            .parse()
            .map_err(|_| format!("not an IP address; {EXPECTED}"))?;
        return Ok(IpNet::from(address.to_canonical()));
    }
    let network: IpNet = entry
        .parse()
        .map_err(|_| format!("not a CIDR block; {EXPECTED}"))?;
    if network.trunc() != network {
        return Err(format!(
            "bits are set after the /{} prefix, so write \"{}\" for that network",
            network.prefix_len(),
            network.trunc()
        ));
    }
    Ok(ipv4_form(network))
}

/// Returns an IPv4-mapped block (inside `::ffff:0:0/96`) as the IPv4 block
/// it stands for, because peers and forwarded entries are compared in their
/// IPv4 form.
fn ipv4_form(network: IpNet) -> IpNet {
    let IpNet::V6(v6) = network else {
        return network;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(address), Some(prefix)) => Ipv4Net::new(address, prefix)
            .map(IpNet::V4)
            .unwrap_or(network),
        _ => network,
    }
}

/// Parses one `X-Forwarded-For` entry. Some proxies append the client's
/// port, as `192.0.2.1:5000` or `[2001:db8::1]:5000`, so a socket address
/// is accepted too and its port dropped.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let address = match entry.parse::<IpAddr>() {
        Ok(address) => address,
        Err(_) => entry.parse::<SocketAddr>().ok()?.ip(),
    };
    Some(address.to_canonical())
}

/// Middleware that stores the [`ClientAddress`] of each request, when the
/// listener records the TCP peer (`serve` does, in-process tests may not).
pub async fn record(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    if let Some(peer) = peer {
        let client = state
            .trusted_proxies
            .client_address(peer, request.headers());
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|entry| (*entry).to_owned()).collect();
        TrustedProxies::parse(&entries).unwrap()
    }

    fn forwarded_for(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.5";

    #[test]
    fn untrusted_peer_ignores_header() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn no_trusted_proxies_ignores_header() {
        let proxies = trusted(&[]);
        assert!(proxies.is_empty());
        let headers = forwarded_for(&["198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &headers),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_uses_right_most_entry() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn chain_skips_trusted_hops() {
        let proxies = trusted(&["10.0.0.0/8", "192.0.2.0/24"]);
        let headers = forwarded_for(&["198.51.100.7, 192.0.2.20, 10.1.2.3"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn spoofed_left_entries_are_not_read() {
        // The client sent "203.0.113.1, 10.9.9.9" itself; the proxy appended
        // the address it saw, 198.51.100.7.
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["203.0.113.1, 10.9.9.9, 198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_left_of_client_is_not_read() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["not-an-address, 198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn several_headers_combine_in_order() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["203.0.113.1", "198.51.100.7, 10.0.0.9"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );

        let headers = forwarded_for(&["203.0.113.1, 10.0.0.8", "10.0.0.9"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("203.0.113.1")
        );
    }

    #[test]
    fn all_entries_trusted_takes_left_most() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["10.0.0.7, 10.0.0.8"]);
        assert_eq!(proxies.client_address(ip(PROXY), &headers), ip("10.0.0.7"));
    }

    #[test]
    fn missing_or_empty_header_falls_back_to_peer() {
        let proxies = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &HeaderMap::new()),
            ip(PROXY)
        );
        for empty in ["", " ", " , ,"] {
            let headers = forwarded_for(&[empty]);
            assert_eq!(
                proxies.client_address(ip(PROXY), &headers),
                ip(PROXY),
                "header {empty:?}"
            );
        }
    }

    #[test]
    fn garbage_falls_back_to_peer() {
        let proxies = trusted(&["10.0.0.0/8"]);
        for garbage in [
            "unknown",
            "198.51.100.7, unknown",
            "198.51.100.7, 10.0.0.9, _hidden",
            "198.51.100.7 10.0.0.9",
            "198.51.100.256",
            "198.51.100.7/24",
        ] {
            let headers = forwarded_for(&[garbage]);
            assert_eq!(
                proxies.client_address(ip(PROXY), &headers),
                ip(PROXY),
                "header {garbage:?}"
            );
        }
    }

    #[test]
    fn non_ascii_header_falls_back_to_peer() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        assert_eq!(proxies.client_address(ip(PROXY), &headers), ip(PROXY));
    }

    #[test]
    fn entries_with_ports_are_accepted() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["198.51.100.7:51234"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("198.51.100.7")
        );
        let headers = forwarded_for(&["[2001:db8::7]:443"]);
        assert_eq!(
            proxies.client_address(ip(PROXY), &headers),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn ipv6_proxies_and_clients() {
        let proxies = trusted(&["2001:db8:ff::/48"]);
        let headers = forwarded_for(&["2001:db8:1::42, 2001:db8:ff::3"]);
        assert_eq!(
            proxies.client_address(ip("2001:db8:ff::1"), &headers),
            ip("2001:db8:1::42")
        );
        assert_eq!(
            proxies.client_address(ip("2001:db8:fe::1"), &headers),
            ip("2001:db8:fe::1"),
            "a peer outside the trusted /48 is not trusted"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        // A listener on [::] reports IPv4 peers as ::ffff:a.b.c.d.
        let proxies = trusted(&["10.0.0.0/8"]);
        let headers = forwarded_for(&["::ffff:198.51.100.7, ::ffff:10.0.0.9"]);
        assert_eq!(
            proxies.client_address(ip("::ffff:10.0.0.5"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv4_mapped_entries_match_ipv4_peers() {
        let proxies = trusted(&["::ffff:10.0.0.0/104", "::ffff:127.0.0.2/128"]);
        let headers = forwarded_for(&["198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip("10.1.2.3"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client_address(ip("127.0.0.2"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client_address(ip("11.0.0.1"), &headers),
            ip("11.0.0.1")
        );
    }

    #[test]
    fn zero_prefix_is_reported() {
        let proxies = trusted(&["10.0.0.0/8", "0.0.0.0/0", "::/0"]);
        let everyone: Vec<String> = proxies
            .trusting_everyone()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(everyone, ["0.0.0.0/0", "::/0"]);
        assert!(trusted(&["10.0.0.0/8"]).trusting_everyone().is_empty());
    }

    #[test]
    fn single_address_entry_trusts_one_host() {
        let proxies = trusted(&["127.0.0.1", "::1"]);
        let headers = forwarded_for(&["198.51.100.7"]);
        assert_eq!(
            proxies.client_address(ip("127.0.0.1"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client_address(ip("::1"), &headers),
            ip("198.51.100.7")
        );
        assert_eq!(
            proxies.client_address(ip("127.0.0.2"), &headers),
            ip("127.0.0.2")
        );
    }

    #[test]
    fn invalid_entries_name_index_and_value() {
        let cases = [
            ("10.0.0/8", "not a CIDR block; expected a CIDR block"),
            ("10.0.0.0/33", "not a CIDR block; expected a CIDR block"),
            ("proxy.internal", "not an IP address; expected a CIDR block"),
            ("", "not an IP address; expected a CIDR block"),
            ("10.1.2.3/8", "write \"10.0.0.0/8\" for that network"),
            ("2001:db8::1/32", "write \"2001:db8::/32\" for that network"),
        ];
        for (entry, problem) in cases {
            let entries = vec!["127.0.0.1/32".to_owned(), entry.to_owned()];
            let error = TrustedProxies::parse(&entries).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!(
                    "network.trusted_proxies[1] = {entry:?} is invalid: "
                )),
                "{error}"
            );
            assert!(error.contains(problem), "{error}");
        }
    }
}
