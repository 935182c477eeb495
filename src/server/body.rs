//! Request bodies, for the routes that take one (a login, the server API): the length from
//! `Content-Length` (RFC 9112 §6.3), refused before a byte is stored when it is malformed,
//! chunked or over the route's limit; then the bytes gathered up to that length, under the
//! same deadline as the head.

use crate::proto::handshake::Request;

use super::http::HttpResponse;

/// A request whose body is being read.
#[derive(Debug)]
pub(crate) struct BodyRead {
    pub(crate) request: Request,
    pub(crate) body: Vec<u8>,
    /// The length `Content-Length` declared.
    pub(crate) length: usize,
}

impl BodyRead {
    /// Takes what `pending` holds of the body; returns how many bytes it used.
    pub(crate) fn absorb(&mut self, pending: &[u8]) -> usize {
        let n = pending.len().min(self.length - self.body.len());
        self.body.extend_from_slice(&pending[..n]);
        n
    }

    /// The whole body has arrived.
    pub(crate) fn complete(&self) -> bool {
        self.body.len() == self.length
    }
}

/// The body's length, or the answer that refuses it: 411 for a chunked body (RFC 9112
/// §6.3 lets a server refuse one it will not read, asking for a length instead), 400 for a
/// `Content-Length` that is not one number (several differing values, or not digits), 413
/// over `limit` (RFC 9110 §15.5.14).
pub(crate) fn body_length(request: &Request, limit: usize) -> Result<usize, HttpResponse> {
    if request.header_count("Transfer-Encoding") > 0 {
        return Err(HttpResponse::text(
            411,
            "send the body with a Content-Length (chunked bodies are not read here)",
        ));
    }
    // RFC 9112 §6.3: a list of identical values, or repeated identical lines, is one length;
    // anything else "MUST" be treated as an unrecoverable error.
    let mut length = None;
    for raw in request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Content-Length"))
        .flat_map(|(_, value)| value.split(|b| *b == b','))
    {
        let digits = raw.trim_ascii();
        let value = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .map(|d| d.parse::<u64>().unwrap_or(u64::MAX));
        match (value, length) {
            (Some(v), None) => length = Some(v),
            (Some(v), Some(seen)) if v == seen => {}
            _ => return Err(HttpResponse::text(400, "invalid Content-Length")),
        }
    }
    let length = length.unwrap_or(0);
    if length > limit as u64 {
        return Err(HttpResponse::text(
            413,
            &format!("the body is {length} bytes; at most {limit} are taken here"),
        ));
    }
    Ok(length as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(headers: &[(&str, &str)]) -> Request {
        Request::new("POST", "/login", headers)
    }

    #[test]
    fn content_length_is_one_number_within_the_limit() {
        assert_eq!(body_length(&post(&[]), 10), Ok(0));
        assert_eq!(body_length(&post(&[("Content-Length", "7")]), 10), Ok(7));
        assert_eq!(body_length(&post(&[("Content-Length", "7, 7")]), 10), Ok(7));
        assert_eq!(
            body_length(
                &post(&[("Content-Length", "7"), ("content-length", "7")]),
                10
            ),
            Ok(7)
        );
        for (headers, status) in [
            (&[("Content-Length", "11")][..], 413),
            (&[("Content-Length", "99999999999999999999999")], 413),
            (&[("Content-Length", "7, 8")], 400),
            (&[("Content-Length", "7"), ("Content-Length", "8")], 400),
            (&[("Content-Length", "-1")], 400),
            (&[("Content-Length", "+7")], 400),
            (&[("Content-Length", "0x7")], 400),
            (&[("Content-Length", "")], 400),
            (&[("Transfer-Encoding", "chunked")], 411),
            (
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                411,
            ),
        ] {
            let got = body_length(&post(headers), 10).map_err(|r| r.status);
            assert_eq!(got, Err(status), "{headers:?}");
        }
    }

    #[test]
    fn a_body_is_gathered_up_to_its_length() {
        let mut read = BodyRead {
            request: post(&[]),
            body: Vec::new(),
            length: 5,
        };
        assert_eq!(read.absorb(b"ab"), 2);
        assert!(!read.complete());
        assert_eq!(read.absorb(b"cdefgh"), 3, "bytes past the body stay");
        assert!(read.complete());
        assert_eq!(read.body, b"abcde");
    }
}
