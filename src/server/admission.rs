//! Admission: whether a request head may be served, decided from the request, the table of
//! client addresses and the time. Kept per address: open WebSocket connections, connections
//! whose head is incomplete, and the rate of request heads (a token bucket), so that one
//! address cannot take the whole server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::conn::Counted;
use super::http::HttpResponse;
use super::stats::Rejection;
use crate::proto::handshake::Request;

/// The request header a trusted proxy puts the client's address in. One header, named by
/// the operator: a proxy that only appends `X-Forwarded-For` passes a client's own
/// `X-Real-IP` through, so trusting both would let a client choose its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Real-IP`, which the proxy sets (nginx: `proxy_set_header X-Real-IP $remote_addr`,
    /// as deploy/nginx.conf does), replacing any value the client sent.
    RealIp,
    /// The last entry of `X-Forwarded-For`: the one the proxy appended (earlier entries come
    /// from the client and can be forged).
    ForwardedFor,
}

/// The client's address: the TCP peer's, or, behind a trusted proxy, the one in the header
/// the proxy sets; the peer's (the proxy's) when that header is missing, repeated or invalid.
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are given as IPv4.
pub fn client_addr(request: &Request, peer: SocketAddr, proxy: Option<ProxyHeader>) -> IpAddr {
    let forwarded = match proxy {
        None => None,
        Some(ProxyHeader::RealIp) if request.header_count("X-Real-IP") == 1 => request
            .header("X-Real-IP")
            .and_then(|v| v.trim().parse().ok()),
        Some(ProxyHeader::RealIp) => None,
        Some(ProxyHeader::ForwardedFor) => request
            .header_values("X-Forwarded-For")
            .last()
            .and_then(|line| line.rsplit(',').next())
            .and_then(|entry| entry.trim().parse().ok()),
    };
    forwarded.unwrap_or(peer.ip()).to_canonical()
}

/// The key an address's limits are kept under: the address itself for IPv4, its /64 for
/// IPv6 (one host usually holds a whole /64, and would otherwise have 2^64 fresh addresses
/// to spread its connections over).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The loop's own limits, checked before the application sees a request: the request rate
/// of the address (when `rate_limited`), and for upgrades the total (`open` of `max_open`) and per-address
/// connection counts.
pub(crate) fn admit(
    addresses: &mut AddressTable,
    request: &Request,
    client: IpAddr,
    (open, max_open): (usize, usize),
    rate_limited: bool,
    now: Instant,
) -> Result<(), Rejection> {
    if rate_limited && !addresses.admit_request(client, now) {
        return Err(Rejection::RequestRate);
    }
    if !request.wants_upgrade() {
        return Ok(());
    }
    if open >= max_open {
        return Err(Rejection::ServerFull);
    }
    if !addresses.may_open(client) {
        return Err(Rejection::AddressConnections);
    }
    Ok(())
}

/// The response refusing a request that `admit` turned away; the client may retry soon.
pub(crate) fn refusal(rejection: Rejection) -> HttpResponse {
    let (status, body) = match rejection {
        Rejection::ServerFull => (503, "server is full"),
        Rejection::AddressConnections => (429, "too many connections from this address"),
        _ => (429, "too many requests from this address"),
    };
    let mut response = HttpResponse::text(status, body);
    response.headers = "Retry-After: 1\r\n".into();
    response
}

/// Per-address limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddressLimits {
    /// Open WebSocket connections one address may hold.
    pub max_connections: usize,
    /// Connections one TCP peer address may hold while their request head is incomplete
    /// (counted at accept, before any header can be read; not applied behind a trusted
    /// proxy, where every connection comes from the proxy).
    pub max_pending_handshakes: usize,
    /// Request heads per second one address may send (sustained)...
    pub requests_per_second: f64,
    /// ...and in a burst.
    pub burst: f64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    open: usize,
    handshaking: usize,
    tokens: f64,
    refilled: Instant,
}

/// What the loop knows per client address. Entries exist only for addresses with open
/// connections or a recently used bucket, and are swept when they hold neither.
#[derive(Debug)]
pub(crate) struct AddressTable {
    limits: AddressLimits,
    entries: HashMap<IpAddr, Entry>,
    last_sweep: Instant,
}

/// How often idle entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

impl AddressTable {
    pub(crate) fn new(limits: AddressLimits, now: Instant) -> Self {
        AddressTable {
            limits,
            entries: HashMap::new(),
            last_sweep: now,
        }
    }

    fn entry(&mut self, ip: IpAddr, now: Instant) -> &mut Entry {
        let limits = self.limits;
        let entry = self.entries.entry(limit_key(ip)).or_insert(Entry {
            open: 0,
            handshaking: 0,
            tokens: limits.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * limits.requests_per_second).min(limits.burst);
        entry.refilled = now;
        entry
    }

    /// Takes a token for one request head; `false` when the address is over its rate.
    pub(crate) fn admit_request(&mut self, ip: IpAddr, now: Instant) -> bool {
        let entry = self.entry(ip, now);
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the address may open one more connection.
    pub(crate) fn may_open(&self, ip: IpAddr) -> bool {
        self.entries
            .get(&limit_key(ip))
            .is_none_or(|e| e.open < self.limits.max_connections)
    }

    pub(crate) fn opened(&mut self, ip: IpAddr, now: Instant) {
        self.entry(ip, now).open += 1;
    }

    /// Counts a connection accepted from `ip` whose head has not arrived; `false` when the
    /// address already has its share of those (the connection is then refused).
    pub(crate) fn start_handshake(&mut self, ip: IpAddr, now: Instant) -> bool {
        let max = self.limits.max_pending_handshakes;
        let entry = self.entry(ip, now);
        if entry.handshaking >= max {
            return false;
        }
        entry.handshaking += 1;
        true
    }

    /// The head arrived, or the connection ended before it did.
    pub(crate) fn end_handshake(&mut self, ip: IpAddr) {
        if let Some(e) = self.entries.get_mut(&limit_key(ip)) {
            e.handshaking = e.handshaking.saturating_sub(1);
        }
    }

    /// Gives back what a connection counted for.
    pub(crate) fn release(&mut self, counted: Counted) {
        match counted {
            Counted::Handshaking(ip) => self.end_handshake(ip),
            Counted::Open(ip) => self.closed(ip),
        }
    }

    pub(crate) fn closed(&mut self, ip: IpAddr) {
        if let Some(e) = self.entries.get_mut(&limit_key(ip)) {
            e.open = e.open.saturating_sub(1);
        }
    }

    /// Forgets addresses with nothing open and a full bucket (at most every few seconds).
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) < SWEEP_INTERVAL {
            return;
        }
        self.last_sweep = now;
        let limits = self.limits;
        self.entries.retain(|_, e| {
            let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
            e.open > 0
                || e.handshaking > 0
                || e.tokens + elapsed * limits.requests_per_second < limits.burst
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request::new("GET", "/", headers)
    }

    #[test]
    fn client_address_comes_from_the_one_header_the_operator_names() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let real = Some(ProxyHeader::RealIp);
        let xff = Some(ProxyHeader::ForwardedFor);
        /// Request headers, the proxy header trusted, the address expected.
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<ProxyHeader>, &'a str);
        let rows: &[Row] = &[
            (&[("X-Forwarded-For", "6.6.6.6, 10.1.2.3")], xff, "10.1.2.3"),
            (
                &[("X-Forwarded-For", "6.6.6.6, 10.1.2.3")],
                None,
                "127.0.0.1",
            ),
            // A client's own X-Real-IP is not trusted when the proxy appends XFF only.
            (
                &[("X-Real-IP", "1.1.1.1"), ("X-Forwarded-For", "10.1.2.3")],
                xff,
                "10.1.2.3",
            ),
            // Several XFF lines: the last entry of the last line is the proxy's.
            (
                &[
                    ("X-Forwarded-For", "6.6.6.6"),
                    ("X-Forwarded-For", "1.2.3.4, 10.0.0.9"),
                ],
                xff,
                "10.0.0.9",
            ),
            (
                &[("X-Real-IP", "10.9.9.9"), ("X-Forwarded-For", "1.1.1.1")],
                real,
                "10.9.9.9",
            ),
            // X-Forwarded-For is not looked at under X-Real-IP: a forged one changes nothing.
            (&[("X-Forwarded-For", "1.1.1.1")], real, "127.0.0.1"),
            (&[("X-Real-IP", "garbage")], real, "127.0.0.1"),
            (
                &[("X-Real-IP", "10.0.0.1"), ("X-Real-IP", "10.0.0.2")],
                real,
                "127.0.0.1",
            ),
            (&[("X-Forwarded-For", "10.0.0.1, junk")], xff, "127.0.0.1"),
            // IPv4-mapped IPv6 is IPv4.
            (&[("X-Real-IP", "::ffff:10.1.1.1")], real, "10.1.1.1"),
        ];
        for (headers, proxy, want) in rows {
            let r = request(headers);
            assert_eq!(
                client_addr(&r, peer, *proxy).to_string(),
                *want,
                "{headers:?}"
            );
        }
        let mapped: SocketAddr = "[::ffff:127.0.0.9]:5000".parse().unwrap();
        assert_eq!(
            client_addr(&request(&[]), mapped, None).to_string(),
            "127.0.0.9"
        );
    }

    #[test]
    fn ipv6_addresses_share_the_limits_of_their_64() {
        let now = Instant::now();
        let limits = AddressLimits {
            max_connections: 2,
            max_pending_handshakes: 1,
            requests_per_second: 1.0,
            burst: 1.0,
        };
        let mut t = AddressTable::new(limits, now);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.opened(a, now);
        t.opened(b, now);
        assert!(!t.may_open(a) && !t.may_open(b), "one /64, one budget");
        assert!(t.may_open(other));
        assert!(t.admit_request(a, now));
        assert!(!t.admit_request(b, now), "one /64, one bucket");
        t.closed(b);
        assert!(t.may_open(a));
    }

    #[test]
    fn bucket_and_open_counts() {
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = AddressTable::new(
            AddressLimits {
                max_connections: 2,
                max_pending_handshakes: 1,
                requests_per_second: 2.0,
                burst: 3.0,
            },
            now,
        );
        assert!((0..3).all(|_| t.admit_request(ip, now)));
        assert!(!t.admit_request(ip, now));
        assert!(t.admit_request(ip, now + Duration::from_millis(500)));
        t.opened(ip, now);
        t.opened(ip, now);
        assert!(!t.may_open(ip));
        t.closed(ip);
        assert!(t.may_open(ip));
        t.closed(ip);
        assert!(t.start_handshake(ip, now));
        assert!(
            !t.start_handshake(ip, now),
            "one pending handshake at a time"
        );
        t.end_handshake(ip);
        assert!(t.start_handshake(ip, now));
        t.end_handshake(ip);
        t.sweep(now + Duration::from_secs(60));
        assert_eq!(t.len(), 0);
    }
}
