//! The opening handshake (RFC 6455 §4.2): reading an HTTP/1.1 request head, checking that it
//! is a valid WebSocket upgrade, and writing the 101 answer. (The HTTP error responses are the
//! server's: a handshake error only says which status it earns.)
//!
//! Reading is incremental: [`HeadReader`] remembers how far it has looked for the blank line
//! that ends the head, so a head arriving one byte at a time costs linear time in total, and
//! `httparse` runs once, on the complete head.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::limits::Limits;

/// §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request was refused, each with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head grew past the size limit before it ended: 431.
    HeadTooLarge,
    /// More header lines than the limit allows: 431.
    TooManyHeaders,
    /// Not parseable as an HTTP/1.x request head: 400.
    Malformed(&'static str),
    /// §4.2.1 (1): "An HTTP/1.1 or higher GET request": 400.
    NotGet,
    /// §4.2.1 (1): HTTP/1.0 cannot upgrade: 400.
    HttpVersion,
    /// §4.2.1 (2): "A |Host| header field"; RFC 9112 §3.2: every HTTP/1.1 request has one: 400.
    MissingHost,
    /// RFC 9112 §3.2: "more than one Host header field line or a Host header field with an
    /// invalid field value": 400.
    BadHost,
    /// RFC 9112 §3.2: a request-target in none of the forms its method allows: 400.
    BadTarget,
    /// §11.3.1, §11.3.5: `Sec-WebSocket-Key` and `Sec-WebSocket-Version` "MUST NOT appear
    /// more than once in an HTTP request": 400.
    RepeatedHeader(&'static str),
    /// An upgrade that declares a body: after the head the bytes are WebSocket frames, so a
    /// body would be read as frames (RFC 9110 §9.3.1: GET content has no meaning): 400.
    UpgradeWithBody,
    /// §4.2.1 (3): "An |Upgrade| header field containing the value "websocket"": 400.
    NotWebSocketUpgrade,
    /// §4.2.1 (4): "A |Connection| header field that includes the token "Upgrade"": 400.
    MissingConnectionUpgrade,
    /// §4.2.1 (5): a |Sec-WebSocket-Key| that "when decoded, is 16 bytes in length": 400.
    BadKey,
    /// §4.2.1 (6): |Sec-WebSocket-Version| must be 13; §4.2.2 answers 426 with the versions
    /// the server speaks.
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::Malformed(_)
            | HandshakeError::NotGet
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::BadHost
            | HandshakeError::BadTarget
            | HandshakeError::RepeatedHeader(_)
            | HandshakeError::UpgradeWithBody
            | HandshakeError::NotWebSocketUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::BadKey => 400,
            HandshakeError::UnsupportedVersion => 426,
        }
    }

    /// A one-line reason, sent as the response body and logged.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many header fields",
            HandshakeError::Malformed(why) => why,
            HandshakeError::NotGet => "a WebSocket upgrade must be a GET request",
            HandshakeError::HttpVersion => "a WebSocket upgrade needs HTTP/1.1 or later",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::BadHost => "more than one Host header, or an invalid one",
            HandshakeError::BadTarget => "request-target not in a form the method allows",
            HandshakeError::RepeatedHeader(name) => name,
            HandshakeError::UpgradeWithBody => "a WebSocket upgrade carries no request body",
            HandshakeError::NotWebSocketUpgrade => {
                "missing or wrong Upgrade header (want websocket)"
            }
            HandshakeError::MissingConnectionUpgrade => "Connection header lacks the Upgrade token",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version (want 13)",
        }
    }
}

/// A parsed HTTP request head. Header names keep their case; look-ups ignore it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as sent, e.g. `/ws?token=abc`.
    pub target: String,
    /// The minor version of HTTP/1.x.
    pub minor_version: u8,
    /// Header fields in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// A request built by hand (for routing tests and embedders): HTTP/1.1, these headers.
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// The first value of header `name` (case-insensitive), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name` (case-insensitive) that is UTF-8, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether any value of header `name` is a comma-separated list containing `token`
    /// (case-insensitive), as §4.2.1 requires for `Connection` and `Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The path part of the target, without the query string. For the absolute form
    /// (`http://host/path`, which RFC 9112 §3.2.2 says a server MUST accept) the path after
    /// the authority; `/` when it has none.
    pub fn path(&self) -> &str {
        let path_and_query = match absolute_form_path(&self.target) {
            Some(rest) => rest,
            None => &self.target,
        };
        let path = path_and_query.split('?').next().unwrap_or("");
        if path.is_empty() && !self.target.is_empty() && !self.target.starts_with('/') {
            return "/";
        }
        path
    }

    /// How many header lines named `name` (case-insensitive) the request has.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Whether this request asks for a WebSocket upgrade at all (it may still be an invalid
    /// one): an `Upgrade` naming websocket, or a `Sec-WebSocket-Key`. An `Upgrade` offering
    /// only other protocols (h2c, ...) may be ignored (RFC 9110 §7.8): the request is then
    /// served as plain HTTP.
    pub fn wants_upgrade(&self) -> bool {
        self.has_token("Upgrade", "websocket") || self.header_count("Sec-WebSocket-Key") > 0
    }

    /// Whether the head declares a body (`Content-Length` other than 0, or any
    /// `Transfer-Encoding`, RFC 9112 §6.1).
    pub fn declares_body(&self) -> bool {
        self.header_count("Transfer-Encoding") > 0
            || self
                .header_values_raw("Content-Length")
                .any(|v| v.trim_ascii() != b"0")
    }

    /// Every value of header `name`, as bytes.
    fn header_values_raw<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The path and query of an absolute-form target (`scheme://authority/path?query`), or
/// `None` for another form.
fn absolute_form_path(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return None;
    }
    Some(rest.find(['/', '?']).map_or("", |i| &rest[i..]))
}

/// RFC 9112 §3.2: the rules every request on the port must follow, upgrade or not: a target
/// in a form its method allows (§3.2.1-§3.2.4), and for HTTP/1.1 exactly one valid `Host`
/// ("A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
/// message that lacks a Host header field and to any request message that contains more than
/// one Host header field line or a Host header field with an invalid field value").
pub fn check_request(req: &Request) -> Result<(), HandshakeError> {
    let target_ok = match req.method.as_str() {
        "CONNECT" => !req.target.is_empty() && !req.target.starts_with('/'),
        "OPTIONS" if req.target == "*" => true,
        _ => req.target.starts_with('/') || absolute_form_path(&req.target).is_some(),
    };
    if !target_ok {
        return Err(HandshakeError::BadTarget);
    }
    match req.header_count("Host") {
        0 if req.minor_version >= 1 => Err(HandshakeError::MissingHost),
        0 => Ok(()),
        1 => match req.header("Host") {
            Some(host) if is_valid_host(host.trim()) => Ok(()),
            _ => Err(HandshakeError::BadHost),
        },
        _ => Err(HandshakeError::BadHost),
    }
}

/// RFC 9110 §7.2, RFC 3986 §3.2.2: `uri-host [ ":" port ]`, where a host is an IP literal in
/// brackets or a reg-name of unreserved, percent-encoded and sub-delim characters (an empty
/// value is allowed: "a client MUST send a Host header field with an empty field value").
fn is_valid_host(host: &str) -> bool {
    host.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    })
}

/// Reads a request head from a growing buffer in linear total time.
#[derive(Clone, Debug, Default)]
pub struct HeadReader {
    /// Bytes already searched for the end of the head.
    scanned: usize,
}

impl HeadReader {
    /// A reader at the start of a request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at `buf` (everything received so far). Returns `Ok(None)` while the head is
    /// incomplete, or the request and the length of its head; bytes after it belong to the
    /// WebSocket stream and must not be dropped.
    pub fn read(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Request, usize)>, HandshakeError> {
        let Some(head_len) = self.find_end(buf) else {
            if buf.len() > limits.max_handshake_bytes {
                return Err(HandshakeError::HeadTooLarge);
            }
            return Ok(None);
        };
        if head_len > limits.max_handshake_bytes {
            return Err(HandshakeError::HeadTooLarge);
        }
        let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(&buf[..head_len]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(HandshakeError::Malformed("incomplete request head"))
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(HandshakeError::HttpVersion),
            Err(_) => return Err(HandshakeError::Malformed("malformed HTTP request head")),
        }
        let request = Request {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            minor_version: req.version.unwrap_or_default(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_owned()))
                .collect(),
        };
        Ok(Some((request, head_len)))
    }

    /// The length of the head if `buf` contains its end (an empty line, CRLF or bare LF),
    /// resuming the search where the previous call stopped.
    fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        let mut i = self.scanned;
        while let Some(offset) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
            let nl = i + offset;
            match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => return Some(nl + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
                // The bytes after this newline have not all arrived: look again from here.
                (None, _) | (Some(b'\r'), None) => {
                    self.scanned = nl;
                    return None;
                }
                _ => i = nl + 1,
            }
        }
        self.scanned = buf.len();
        None
    }
}

/// What a valid upgrade request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The value for `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The subprotocols the client offered, in its order of preference.
    pub offered_protocols: Vec<String>,
}

/// Checks the rules of §4.2.1 and computes the accept key.
pub fn validate_upgrade(req: &Request) -> Result<Upgrade, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if req.header("Host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !req.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !req.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    for (name, why) in [
        (
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Key appears more than once",
        ),
        (
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Version appears more than once",
        ),
    ] {
        if req.header_count(name) > 1 {
            return Err(HandshakeError::RepeatedHeader(why));
        }
    }
    if req.declares_body() {
        return Err(HandshakeError::UpgradeWithBody);
    }
    if req.header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = req
        .header("Sec-WebSocket-Key")
        .map(str::trim)
        .ok_or(HandshakeError::BadKey)?;
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let offered_protocols = req
        .header_values("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Upgrade {
        accept: accept_key(key),
        offered_protocols,
    })
}

/// Picks the first of the server's subprotocols that the client offered (§4.2.2 step 5.4).
pub fn select_protocol<'a>(server_protocols: &'a [String], offered: &[String]) -> Option<&'a str> {
    server_protocols
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .map(String::as_str)
}

/// §4.2.2 step 5.4: base64 of the SHA-1 of the key concatenated with the GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Appends the `101 Switching Protocols` response (§4.2.2 step 5), with the subprotocol and
/// the accepted extensions (`Sec-WebSocket-Extensions`, §9.1) when there are any.
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    accept: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = extensions {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(e.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
