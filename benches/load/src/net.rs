//! Where the load goes and where it comes from: the target (this machine only), the source
//! addresses, the non-blocking bind-before-connect, and the descriptor limit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use wsloop::client::WsUrl;

/// `connect(2)` on a non-blocking socket answers EINPROGRESS (115 on Linux, which is the
/// only system this tool runs on: it reads /proc). `io::ErrorKind::InProgress` is not stable.
const EINPROGRESS: i32 = 115;

/// The server under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddrV4,
    /// The `Host` header (the URL's authority).
    pub host: String,
    /// `wss://`: TLS over the connection.
    pub secure: bool,
    /// The request target.
    pub path: String,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH` (or `wss://`) and refuses any host outside 127.0.0.0/8.
    ///
    /// This tool sends load; from this repository it must never be pointed at another
    /// machine. So the host is not resolved at all: it must be an IPv4 literal in
    /// 127.0.0.0/8, or `localhost` (taken as 127.0.0.1 without asking a resolver).
    pub fn parse(url: &str) -> Result<Target, String> {
        let parsed = WsUrl::parse(url).map_err(|e| e.to_string())?;
        let (host, port) = parsed
            .authority
            .rsplit_once(':')
            .ok_or_else(|| format!("no port in {url:?}"))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>().map_err(|_| refusal(url))?
        };
        if !ip.is_loopback() {
            return Err(refusal(url));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid port in {url:?}"))?;
        Ok(Target {
            addr: SocketAddrV4::new(ip, port),
            host: parsed.authority,
            path: parsed.path,
            secure: parsed.secure,
        })
    }

    /// The host without the port: the name the server's certificate must hold.
    pub fn host_name(&self) -> &str {
        self.host
            .rsplit_once(':')
            .map_or(&self.host, |(name, _)| name)
    }
}

/// `--url`: one URL, or several comma-separated (the nodes of a cluster), each as
/// [`Target::parse`] takes it and all `ws://` or all `wss://`. (So no URL may hold a comma.)
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    let targets = list
        .split(',')
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if targets.iter().any(|t| t.secure != targets[0].secure) {
        return Err(format!("{list:?} mixes ws:// and wss:// URLs"));
    }
    Ok(targets)
}

/// Which of `targets` servers connection number `g` goes to. Connections are numbered over
/// the whole run, as the scenarios number them (broadcast: publishers first, then
/// subscribers), so that `--url A,B` with one publisher puts it on A and splits the
/// subscribers evenly between A and B, whatever the threads.
pub fn target_of(g: usize, targets: usize) -> usize {
    g % targets.max(1)
}

fn refusal(url: &str) -> String {
    format!(
        "refusing {url:?}: wsloop-bench only targets this machine \
         (an IPv4 address in 127.0.0.0/8, or localhost)"
    )
}

/// The source addresses from `--source-addrs` or `--source-count` (none: the kernel
/// chooses). Each must be in 127.0.0.0/8, where every address is local.
pub fn source_addrs(list: &[Ipv4Addr], count: Option<u8>) -> Result<Vec<Ipv4Addr>, String> {
    let addrs: Vec<Ipv4Addr> = match count {
        Some(0) => return Err("--source-count must be at least 1".into()),
        Some(n) => (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect(),
        None => list.to_vec(),
    };
    match addrs.iter().find(|a| !a.is_loopback()) {
        Some(a) => Err(format!("source address {a} is not in 127.0.0.0/8")),
        None => Ok(addrs),
    }
}

/// Starts a non-blocking TCP connect to `target`, bound first to `source` if given (port 0:
/// the kernel picks an ephemeral port of that address, so each source address brings its
/// own range of ports). Completion is seen as writability.
pub fn connect(target: SocketAddrV4, source: Option<Ipv4Addr>) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SockAddr::from(SocketAddr::from((ip, 0))))?;
    }
    match socket.connect(&SockAddr::from(SocketAddr::V4(target))) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Whether a connect started by [`connect`] has completed: an error if it failed, false if
/// it is still in progress (mio's recipe: `take_error`, then `peer_addr`).
pub fn connect_finished(socket: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_only() {
        let t = Target::parse("ws://127.0.0.1:9001/x?y").unwrap();
        assert_eq!(t.addr, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001));
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:9001", "/x?y")
        );
        assert!(!t.secure);
        let t = Target::parse("wss://localhost:8443/").unwrap();
        assert_eq!(
            (t.secure, t.host_name(), t.addr.port()),
            (true, "localhost", 8443)
        );
        let t = Target::parse("ws://127.3.2.1:80").unwrap();
        assert_eq!(t.addr.ip(), &Ipv4Addr::new(127, 3, 2, 1));
        assert_eq!(
            Target::parse("ws://localhost:8080/ws").unwrap().addr.ip(),
            &Ipv4Addr::LOCALHOST
        );
        for url in [
            "ws://10.0.0.1:80/",
            "ws://192.168.1.1:9001/",
            "ws://8.8.8.8:80/",
            "ws://example.com:80/",
            "ws://[::1]:9001/",
            "ws://0.0.0.0:9001/",
            "http://127.0.0.1:9001/",
            "wss://10.0.0.1:443/",
        ] {
            assert!(Target::parse(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn several_urls() {
        let t = parse_targets("ws://127.0.0.1:9001/ws,ws://127.0.0.2:9002/ws").unwrap();
        assert_eq!(
            t.iter().map(|t| t.addr.to_string()).collect::<Vec<_>>(),
            ["127.0.0.1:9001", "127.0.0.2:9002"]
        );
        assert_eq!(t[1].path, "/ws");
        let one = parse_targets("wss://localhost:8443/").unwrap();
        assert_eq!((one.len(), one[0].secure), (1, true));
        assert!(parse_targets("wss://localhost:1/,wss://127.0.0.1:2/")
            .unwrap()
            .iter()
            .all(|t| t.secure));
        let mixed = parse_targets("ws://127.0.0.1:1/,wss://127.0.0.1:2/").unwrap_err();
        assert!(mixed.contains("mixes ws:// and wss://"), "{mixed}");
        // Every URL is checked: one off this machine refuses the lot.
        let off = parse_targets("ws://127.0.0.1:1/,ws://10.0.0.1:2/").unwrap_err();
        assert!(off.contains("only targets this machine"), "{off}");
        for list in ["", "ws://127.0.0.1:1/,", ",ws://127.0.0.1:1/"] {
            assert!(parse_targets(list).is_err(), "{list:?} accepted");
        }
    }

    #[test]
    fn connections_go_round_robin_over_the_urls() {
        assert_eq!(
            (0..7).map(|g| target_of(g, 3)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0]
        );
        assert!((0..5).all(|g| target_of(g, 1) == 0));
    }

    #[test]
    fn sources() {
        assert_eq!(
            source_addrs(&[], Some(2)).unwrap(),
            [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)]
        );
        assert!(source_addrs(&[Ipv4Addr::new(10, 0, 0, 1)], None).is_err());
        assert!(source_addrs(&[], Some(0)).is_err());
        assert!(source_addrs(&[], None).unwrap().is_empty());
    }
}
