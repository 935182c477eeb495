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

/// The client's address. Behind a trusted proxy: `X-Real-IP` (set by the proxy from the
/// address it saw), else the last `X-Forwarded-For` entry (the one the proxy appended; earlier
/// entries come from the client and can be forged). Otherwise the TCP peer.
pub fn client_addr(request: &Request, peer: SocketAddr, trust_proxy: bool) -> IpAddr {
    if trust_proxy {
        let real_ip = request
            .header("X-Real-IP")
            .and_then(|v| v.trim().parse().ok());
        let forwarded = || {
            request
                .header_values("X-Forwarded-For")
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse().ok())
                .last()
        };
        if let Some(ip) = real_ip.or_else(forwarded) {
            return ip;
        }
    }
    peer.ip()
}

/// The loop's own limits, checked before the application sees a request: the request rate
/// of the address, and for upgrades the total (`open` of `max_open`) and per-address
/// connection counts.
pub(crate) fn admit(
    addresses: &mut AddressTable,
    request: &Request,
    client: IpAddr,
    (open, max_open): (usize, usize),
    now: Instant,
) -> Result<(), Rejection> {
    if !addresses.admit_request(client, now) {
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
        let entry = self.entries.entry(ip).or_insert(Entry {
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
            .get(&ip)
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
        if let Some(e) = self.entries.get_mut(&ip) {
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
        if let Some(e) = self.entries.get_mut(&ip) {
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
    fn client_address_behind_a_proxy() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = request(&[("X-Forwarded-For", "6.6.6.6, 10.1.2.3")]);
        assert_eq!(client_addr(&r, peer, true).to_string(), "10.1.2.3");
        assert_eq!(client_addr(&r, peer, false).to_string(), "127.0.0.1");
        let r = request(&[("X-Real-IP", "10.9.9.9"), ("X-Forwarded-For", "1.1.1.1")]);
        assert_eq!(client_addr(&r, peer, true).to_string(), "10.9.9.9");
        let r = request(&[("X-Real-IP", "garbage")]);
        assert_eq!(client_addr(&r, peer, true).to_string(), "127.0.0.1");
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
