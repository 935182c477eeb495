//! Who may connect to `wsloop serve`: tokens and allowed origins.

use std::collections::HashMap;
use std::path::Path;

use crate::proto::handshake::Request;

/// Tokens and the user names they stand for, from a file of `token name` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    names: HashMap<String, String>,
}

impl Tokens {
    /// Parses `token name` lines; blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut names = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(token), Some(name), None) => {
                    // One token, one user: a repeated token would sign in as whichever
                    // line came last.
                    if names.insert(token.to_owned(), name.to_owned()).is_some() {
                        return Err(format!(
                            "line {}: the token is already on a line above",
                            n + 1
                        ));
                    }
                }
                _ => return Err(format!("line {}: expected `token name`", n + 1)),
            }
        }
        if names.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Tokens { names })
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The user name of the token the request carries, if it carries a known one.
    pub fn user(&self, request: &Request) -> Option<&str> {
        request_tokens(request).find_map(|t| self.names.get(&t).map(String::as_str))
    }
}

/// Tokens offered by a request: `Authorization: Bearer`, a `token` query parameter, a `token`
/// cookie (browsers cannot set headers on a WebSocket, hence the other two).
fn request_tokens(request: &Request) -> impl Iterator<Item = String> + '_ {
    let bearer = request.header_values("Authorization").filter_map(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    let query = request
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode);
    let cookie = request
        .header_values("Cookie")
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("token="))
        .map(str::to_owned);
    bearer.chain(query).chain(cookie)
}

/// Decodes `%XX` escapes and `+` (a query string's space); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the request's `Origin` may connect. With no allow-list every origin may; a request
/// without `Origin` (not from a browser, so not a cross-site WebSocket hijack) always may.
pub fn origin_allowed(request: &Request, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    // Fail closed: an `Origin` that is repeated or not UTF-8 is not "absent" (a client that
    // sends no Origin is not a browser, RFC 6455 §10.2, and is let through).
    match request.header_count("Origin") {
        0 => true,
        1 => request.header("Origin").is_some_and(|origin| {
            allowed
                .iter()
                .any(|a| a.eq_ignore_ascii_case(origin.trim()))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> Request {
        Request::new("GET", target, headers)
    }

    #[test]
    fn tokens_from_header_query_and_cookie() {
        let tokens = Tokens::parse("# users\nabc alice\nx%y bob\n\ns3 carol\n").unwrap();
        let bearer = request("/ws", &[("Authorization", "Bearer abc")]);
        assert_eq!(tokens.user(&bearer), Some("alice"));
        let query = request("/ws?room=1&token=x%25y", &[]);
        assert_eq!(tokens.user(&query), Some("bob"));
        let cookie = request("/ws", &[("Cookie", "theme=dark; token=s3")]);
        assert_eq!(tokens.user(&cookie), Some("carol"));
        assert_eq!(tokens.user(&request("/ws?token=nope", &[])), None);
        assert_eq!(
            tokens.user(&request("/ws", &[("Authorization", "Basic abc")])),
            None
        );
        assert!(Tokens::parse("one two three\n").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
        assert_eq!(
            Tokens::parse("abc alice\nabc mallory\n").err().as_deref(),
            Some("line 2: the token is already on a line above")
        );
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://chat.example".to_owned()];
        assert!(origin_allowed(
            &request("/", &[("Origin", "https://chat.example")]),
            &allowed
        ));
        assert!(!origin_allowed(
            &request("/", &[("Origin", "https://evil.example")]),
            &allowed
        ));
        assert!(origin_allowed(&request("/", &[]), &allowed));
        assert!(origin_allowed(
            &request("/", &[("Origin", "https://evil.example")]),
            &[]
        ));
        // Fail closed: an Origin that is not UTF-8, or two of them, is not "no Origin".
        let mut not_utf8 = request("/", &[]);
        not_utf8
            .headers
            .push(("Origin".into(), b"https://chat.\xffexample".to_vec()));
        assert!(!origin_allowed(&not_utf8, &allowed));
        let two = request(
            "/",
            &[
                ("Origin", "https://chat.example"),
                ("Origin", "https://evil.example"),
            ],
        );
        assert!(!origin_allowed(&two, &allowed));
    }
}
