//! The client side of the opening handshake, without I/O (RFC 6455 §4.1): the request bytes,
//! and the check of the server's response head as its bytes come in. Used by the blocking
//! client and the load generator.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::handshake::accept_key;
#[cfg(feature = "deflate")]
use crate::extension::{DeflateOffer, Negotiated};

/// Largest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// An upgrade request and what its answer must carry.
#[derive(Clone, Debug, Default)]
pub struct ClientRequest {
    /// The request head.
    pub bytes: Vec<u8>,
    /// base64(SHA-1(key ++ GUID)) for this request's key (§4.2.2).
    pub accept: String,
    /// The permessage-deflate offer the request makes, if any.
    #[cfg(feature = "deflate")]
    deflate: Option<DeflateOffer>,
}

#[cfg(feature = "deflate")]
impl ClientRequest {
    /// The same request offering permessage-deflate (RFC 7692): the
    /// `Sec-WebSocket-Extensions` header is added, and [`check_response`] checks the answer
    /// against the offer.
    pub fn with_deflate(mut self, offer: DeflateOffer) -> Self {
        let end = self.bytes.len() - 2; // before the blank line that ends the head
        let line = format!("Sec-WebSocket-Extensions: {}\r\n", offer.header_value());
        self.bytes.splice(end..end, line.into_bytes());
        self.deflate = Some(offer);
        self
    }
}

/// Builds the upgrade request for `path` on `host` with a key made of `nonce` (§4.1: "a
/// randomly selected 16-byte value that has been base64-encoded"), offering `protocols` and
/// adding `headers` (lines `Name: value`).
pub fn request(
    host: &str,
    path: &str,
    nonce: [u8; 16],
    protocols: &[String],
    headers: &[String],
) -> ClientRequest {
    let key = BASE64.encode(nonce);
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        head.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    ClientRequest {
        bytes: head.into_bytes(),
        accept: accept_key(&key),
        #[cfg(feature = "deflate")]
        deflate: None,
    }
}

/// What the bytes received so far say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The head is not complete yet.
    Partial,
    /// A valid 101: frames start `head_len` bytes in.
    Accepted {
        /// Length of the response head.
        head_len: usize,
        /// The subprotocol the server chose.
        protocol: Option<String>,
        /// What was agreed for permessage-deflate (`None`: the server declined the offer,
        /// or none was made).
        #[cfg(feature = "deflate")]
        deflate: Option<Negotiated>,
    },
    /// Anything else, with the reason (the status and the start of the body for an HTTP
    /// error).
    Refused(String),
}

/// Checks the response head in `buf` (which may hold frames after it) against `request`.
pub fn check_response(buf: &[u8], request: &ClientRequest) -> Response {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Response::Refused("response head too large".into())
        } else {
            Response::Partial
        };
    };
    let head_len = end + 4;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    if let Err(e) = response.parse(&buf[..head_len]) {
        return Response::Refused(format!("bad response head: {e}"));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if response.code != Some(101) {
        let status = response.code.unwrap_or(0);
        let body = String::from_utf8_lossy(&buf[head_len..]);
        let body: String = body.trim().chars().take(200).collect();
        return Response::Refused(format!("HTTP status {status} instead of 101: {body}"));
    }
    // §4.1: "If the response lacks a |Sec-WebSocket-Accept| header field or the
    // |Sec-WebSocket-Accept| contains a value other than [the expected one] ... the client
    // MUST _Fail the WebSocket Connection_."
    if header("Sec-WebSocket-Accept") != Some(request.accept.as_bytes()) {
        return Response::Refused("wrong Sec-WebSocket-Accept".into());
    }
    let protocol = header("Sec-WebSocket-Protocol")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned);
    let extensions: Vec<_> = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| String::from_utf8_lossy(h.value))
        .collect();
    #[cfg(feature = "deflate")]
    let deflate = match &request.deflate {
        Some(offer) => match offer.accept(extensions.iter().map(|v| &**v)) {
            Ok(agreed) => agreed,
            Err(why) => return Response::Refused(why),
        },
        None => None,
    };
    #[cfg(feature = "deflate")]
    let offered = request.deflate.is_some();
    #[cfg(not(feature = "deflate"))]
    let offered = false;
    // §4.1: "If the response includes a |Sec-WebSocket-Extensions| header field and this
    // header field indicates the use of an extension that was not present in the client's
    // handshake ... the client MUST _Fail the WebSocket Connection_."
    if let Some(value) = extensions.iter().find(|v| !offered && !v.trim().is_empty()) {
        return Response::Refused(format!(
            "the server answered an extension that was not offered: {value}"
        ));
    }
    Response::Accepted {
        head_len,
        protocol,
        #[cfg(feature = "deflate")]
        deflate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4_1_sample_key() {
        // RFC 6455 §4.1: the nonce 0x01..0x10 gives "AQIDBAUGBwgJCgsMDQ4PEA==".
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        let r = request(
            "127.0.0.1:9001",
            "/chat",
            nonce,
            &["chat".to_owned()],
            &["Authorization: Bearer t".to_owned()],
        );
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(text.starts_with("GET /chat HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with("Authorization: Bearer t\r\n\r\n"));
        assert_eq!(r.accept, accept_key("AQIDBAUGBwgJCgsMDQ4PEA=="));
    }

    /// RFC 6455 §1.3: the sample nonce, whose key is "dGhlIHNhbXBsZSBub25jZQ==".
    fn sample_request() -> ClientRequest {
        request("h", "/", *b"the sample nonce", &[], &[])
    }

    /// A 101 for the sample request with `extra` header lines, and an empty text frame
    /// right behind the head.
    fn switching(extra: &str) -> Vec<u8> {
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             {extra}\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&[0x81, 0x00]);
        bytes
    }

    #[test]
    fn responses() {
        let request = sample_request();
        assert_eq!(request.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let ok = switching("Sec-WebSocket-Protocol: chat\r\n");
        let ok = &ok[..];
        assert_eq!(
            check_response(ok, &request),
            Response::Accepted {
                head_len: ok.len() - 2,
                protocol: Some("chat".into()),
                #[cfg(feature = "deflate")]
                deflate: None,
            }
        );
        assert_eq!(check_response(&ok[..20], &request), Response::Partial);
        let other = ClientRequest {
            accept: "other".into(),
            ..sample_request()
        };
        assert_eq!(
            check_response(ok, &other),
            Response::Refused("wrong Sec-WebSocket-Accept".into())
        );
        assert_eq!(
            check_response(b"HTTP/1.1 401 Unauthorized\r\n\r\nno token\n", &request),
            Response::Refused("HTTP status 401 instead of 101: no token".into())
        );
        assert!(matches!(
            check_response(&[b'x'; MAX_RESPONSE_HEAD + 1], &request),
            Response::Refused(_)
        ));
    }

    #[test]
    fn an_extension_that_was_not_offered_fails_the_connection() {
        let answer = switching("Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert_eq!(
            check_response(&answer, &sample_request()),
            Response::Refused(
                "the server answered an extension that was not offered: permessage-deflate".into()
            )
        );
        // An empty value names no extension.
        let empty = switching("Sec-WebSocket-Extensions: \r\n");
        assert!(matches!(
            check_response(&empty, &sample_request()),
            Response::Accepted { .. }
        ));
    }

    #[cfg(feature = "deflate")]
    #[test]
    fn a_deflate_offer_and_its_answer() {
        let request = sample_request().with_deflate(DeflateOffer::default());
        let text = String::from_utf8(request.bytes.clone()).unwrap();
        assert!(text.ends_with(
            "Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ));
        let answer = switching(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
        );
        let Response::Accepted { deflate, .. } = check_response(&answer, &request) else {
            panic!("refused");
        };
        let agreed = deflate.unwrap();
        assert!(agreed.server_no_context_takeover && !agreed.client_no_context_takeover);
        // Declined: no extension header.
        let Response::Accepted { deflate, .. } = check_response(&switching(""), &request) else {
            panic!("refused");
        };
        assert_eq!(deflate, None);
        // An answer breaking §7 fails the connection, with the reason.
        let answer = switching(
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n",
        );
        assert_eq!(
            check_response(&answer, &request),
            Response::Refused("the server answered permessage-deflate twice".into())
        );
    }
}
