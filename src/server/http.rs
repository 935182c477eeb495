//! Plain HTTP/1.1 responses on the WebSocket port: the application's pages, the loop's
//! refusals (429, 503) and the answers to failed upgrades (400, 426, 431), each followed by
//! closing the connection (RFC 9112 §9.6: `Connection: close`).

use std::io::Write as _;

use crate::proto::handshake::HandshakeError;

/// A plain HTTP response (the connection is closed after it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with a plain-text body.
    pub fn text(status: u16, body: &str) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: String::new(),
            body: format!("{body}\n").into_bytes(),
        }
    }

    /// The answer to a request that is not a valid upgrade: its status, the headers the
    /// error calls for (§4.4: 426 names the version this server speaks) and the reason as a
    /// one-line body.
    pub fn refusing(error: &HandshakeError) -> Self {
        let mut response = HttpResponse::text(error.status(), error.reason());
        if *error == HandshakeError::UnsupportedVersion {
            response.headers = "Sec-WebSocket-Version: 13\r\n".into();
        }
        response
    }

    /// Appends the response's bytes: status line, headers with `Connection: close`, and the
    /// body unless `head_only` (the answer to HEAD: RFC 9110 §9.3.2, the same header fields
    /// as GET, `Content-Length` included, and no content).
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
            self.status,
            status_text(self.status),
            self.content_type,
            self.body.len(),
            self.headers,
        );
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of the statuses this server sends.
pub fn status_text(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_bytes_for_426() {
        let mut out = Vec::new();
        HttpResponse::refusing(&HandshakeError::UnsupportedVersion).write_to(&mut out, false);
        let body = "unsupported Sec-WebSocket-Version (want 13)\n";
        let want = format!(
            "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: {}\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn the_answer_to_head_has_the_length_of_the_body_and_no_body() {
        let mut out = Vec::new();
        HttpResponse::text(200, "ok").write_to(&mut out, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }
}
