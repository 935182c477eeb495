//! Who may connect to `wsloop serve`: the credentials an upgrade carries (a token from the
//! token file or signed by the user's backend, the page's session cookie), the decision they
//! lead to, allowed origins, and request targets with their tokens hidden for the logs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "auth")]
use super::auth::{jwt::JwtVerifier, keys::ApiKeys, session, session::SessionKey, users::Users};
use super::identity::{AuthError, Identity, MAX_TOKEN};
use crate::proto::handshake::Request;

/// What an upgrade request's credentials allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It carries a valid credential.
    Identified(Identity),
    /// Nothing is required and nothing was offered: the connection's id is its name.
    Anonymous,
    /// Tokens are required and none was offered: the connection opens and must send
    /// `{"type":"auth","token":...}` first, within the handshake timeout (a browser thus
    /// never puts the token in a URL).
    AwaitAuth,
    /// A credential was offered and is not valid, or a login is required: 401.
    Refused(AuthError),
}

/// The credentials `wsloop serve` accepts.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `--token-file`.
    pub tokens: Option<Tokens>,
    /// `--jwt-secret-file` or `--jwt-public-key`.
    #[cfg(feature = "auth")]
    pub jwt: Option<JwtVerifier>,
    /// The key of the page's session cookies (`None`: no `/login`).
    #[cfg(feature = "auth")]
    pub sessions: Option<SessionKey>,
    /// `--users-file`: `/login` checks passwords, and upgrades need a session.
    #[cfg(feature = "auth")]
    pub users: Option<Users>,
    /// `--api-key-file`: the keys of the server API (`None`: the API is off).
    #[cfg(feature = "auth")]
    pub api_keys: Option<ApiKeys>,
}

/// Seconds since the Unix epoch: what tokens' and cookies' expiry claims count in.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Access {
    /// Tokens (a file or signed ones) are configured: an upgrade needs one, in the request or
    /// in-band.
    pub fn token_mode(&self) -> bool {
        #[cfg(feature = "auth")]
        if self.jwt.is_some() {
            return true;
        }
        self.tokens.is_some()
    }

    /// The page's login is offered: a session key, and no tokens (with tokens the user's own
    /// backend logs people in).
    #[cfg(feature = "auth")]
    pub fn login_offered(&self) -> Option<&SessionKey> {
        self.sessions.as_ref().filter(|_| !self.token_mode())
    }

    /// Who a token stands for: a line of the token file, else a token signed with the
    /// configured key.
    pub fn check_token(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN {
            return Err(AuthError::TooLong);
        }
        if let Some(name) = self.tokens.as_ref().and_then(|t| t.names.get(token)) {
            return Ok(Identity::named(name, name));
        }
        #[cfg(feature = "auth")]
        if let Some(jwt) = &self.jwt {
            return jwt.verify(token);
        }
        Err(AuthError::Unknown)
    }

    /// What an upgrade request's credentials allow.
    pub fn admit(&self, request: &Request) -> Admission {
        if self.token_mode() {
            let mut refusal = None;
            for token in request_tokens(request) {
                match self.check_token(&token) {
                    Ok(identity) => return Admission::Identified(identity),
                    Err(e) => refusal = Some(e),
                }
            }
            return refusal.map_or(Admission::AwaitAuth, Admission::Refused);
        }
        #[cfg(feature = "auth")]
        if let Some(key) = self.login_offered() {
            if let Some(cookie) = cookie(request, session::COOKIE) {
                return match key.verify(cookie, unix_now()) {
                    Ok(identity) => Admission::Identified(identity),
                    Err(e) => Admission::Refused(e),
                };
            }
            if self.users.is_some() {
                return Admission::Refused(AuthError::Missing);
            }
        }
        Admission::Anonymous
    }
}

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
    let query = query_values(request, "token");
    let cookie = cookies(request, "token").map(str::to_owned);
    bearer.chain(query).chain(cookie)
}

/// The values of the query parameters named `name`, percent-decoded.
pub fn query_values<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = String> + 'a {
    request
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(move |pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map(percent_decode)
}

/// The values of the cookies named `name` (RFC 6265 §5.4: `name=value` pairs split by `;`).
fn cookies<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    request
        .header_values("Cookie")
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| {
            let (n, value) = c.trim().split_once('=')?;
            (n == name).then_some(value)
        })
}

/// The value of the first cookie named `name`.
pub fn cookie<'a>(request: &'a Request, name: &'a str) -> Option<&'a str> {
    cookies(request, name).next()
}

/// The request target as logs show it: the value of every `token` query parameter replaced
/// by `***` (a URL lands in access logs, proxies' too; this server's logs never keep it).
pub fn redacted_target(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    if !query.split('&').any(|pair| pair.starts_with("token=")) {
        return Cow::Borrowed(target);
    }
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("token=") {
                "token=***"
            } else {
                pair
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", pairs.join("&")))
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
        let access = Access {
            tokens: Some(tokens),
            ..Access::default()
        };
        let user = |request: &Request| match access.admit(request) {
            Admission::Identified(identity) => Some(identity.name),
            _ => None,
        };
        let bearer = request("/ws", &[("Authorization", "Bearer abc")]);
        assert_eq!(user(&bearer).as_deref(), Some("alice"));
        let query = request("/ws?room=1&token=x%25y", &[]);
        assert_eq!(user(&query).as_deref(), Some("bob"));
        let cookie = request("/ws", &[("Cookie", "theme=dark; token=s3")]);
        assert_eq!(user(&cookie).as_deref(), Some("carol"));
        assert_eq!(
            access.admit(&request("/ws?token=nope", &[])),
            Admission::Refused(AuthError::Unknown)
        );
        assert_eq!(
            access.admit(&request("/ws", &[("Authorization", "Basic abc")])),
            Admission::AwaitAuth,
            "no token offered: it may come in-band"
        );
        assert_eq!(
            access.admit(&request("/ws", &[("Cookie", "xtoken=abc")])),
            Admission::AwaitAuth
        );
        assert!(Tokens::parse("one two three\n").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
        assert_eq!(
            Tokens::parse("abc alice\nabc mallory\n").err().as_deref(),
            Some("line 2: the token is already on a line above")
        );
    }

    #[test]
    fn token_query_parameters_are_redacted() {
        for (target, logged) in [
            ("/ws", "/ws"),
            ("/ws?room=1", "/ws?room=1"),
            ("/ws?token=s3cret", "/ws?token=***"),
            ("/ws?a=1&token=s3cret&b=2", "/ws?a=1&token=***&b=2"),
            ("/ws?token=x&token=y", "/ws?token=***&token=***"),
            ("/ws?xtoken=1", "/ws?xtoken=1"),
        ] {
            assert_eq!(redacted_target(target), logged, "{target}");
        }
    }

    #[test]
    fn without_tokens_everyone_is_anonymous() {
        let access = Access::default();
        assert!(!access.token_mode());
        assert_eq!(
            access.admit(&request("/ws?token=abc", &[])),
            Admission::Anonymous
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
