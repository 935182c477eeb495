//! The built-in page's session cookie: who logged in with `POST /login`, signed by the server
//! with HMAC-SHA256 (RFC 2104) so that a client can neither forge nor alter it.
//!
//! The value is `v1.PAYLOAD.MAC`: PAYLOAD is base64url (RFC 4648 §5) of the JSON
//! `{"sub","name","exp"}`, MAC is base64url of HMAC-SHA256(key, `v1.PAYLOAD`). The key is 32
//! random bytes per process unless `--session-secret-file` gives one that several nodes (and
//! restarts) share.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::app::identity::{AuthError, Identity};

/// The cookie's name.
pub const COOKIE: &str = "wsloop_session";
/// How long a login lasts.
pub const SESSION_SECS: u64 = 24 * 3600;
/// The shortest secret accepted from a file (the HMAC-SHA256 block of RFC 2104 §3 would take
/// more; less than the hash's 256 bits is weaker than the MAC).
const MIN_SECRET: usize = 32;
/// The longest cookie value looked at.
const MAX_COOKIE: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// The key that signs and checks session cookies.
#[derive(Clone)]
pub struct SessionKey(Vec<u8>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// 32 bytes from the operating system's random source: cookies die with the process.
    pub fn random() -> Result<SessionKey, String> {
        let mut key = vec![0; 32];
        getrandom::fill(&mut key).map_err(|e| format!("random session key: {e}"))?;
        Ok(SessionKey(key))
    }

    /// The secret in `path` (without a trailing newline), at least 32 bytes.
    pub fn from_file(path: &Path) -> Result<SessionKey, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let secret = bytes.trim_ascii_end();
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "{}: a session secret needs at least {MIN_SECRET} bytes",
                path.display()
            ));
        }
        Ok(SessionKey(secret.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length (RFC 2104 §2).
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts every key length")
    }

    /// A cookie value for `user` shown as `name`, valid until `exp` (Unix seconds).
    pub fn sign(&self, user: &str, name: &str, exp: u64) -> String {
        let payload = B64.encode(json!({"sub": user, "name": name, "exp": exp}).to_string());
        let signed = format!("v1.{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = B64.encode(mac.finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The identity in a cookie value this key signed, if it has not expired by `now`
    /// (Unix seconds). The MAC is checked first, in constant time; nothing of an unsigned
    /// payload is looked at.
    pub fn verify(&self, value: &str, now: u64) -> Result<Identity, AuthError> {
        if value.len() > MAX_COOKIE {
            return Err(AuthError::TooLong);
        }
        let (signed, tag) = value.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let payload = signed.strip_prefix("v1.").ok_or(AuthError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| AuthError::BadSignature)?;
        let json = B64.decode(payload).map_err(|_| AuthError::Malformed)?;
        let claims: Value = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        let text = |field: &'static str| {
            claims
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(AuthError::BadClaim(field))
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::BadClaim("exp"))?;
        if exp <= now {
            return Err(AuthError::Expired);
        }
        Ok(Identity::named(&text("sub")?, &text("name")?))
    }
}

/// The `Set-Cookie` header line that stores a session (HttpOnly: no script reads it;
/// SameSite=Strict: no other site's page sends it, RFC 6265bis §4.1.2.7).
pub fn set_cookie(value: &str) -> String {
    format!("Set-Cookie: {COOKIE}={value}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict\r\n")
}

/// The `Set-Cookie` header line that removes the session (RFC 6265 §3.1: an expiry in the
/// past).
pub fn clear_cookie() -> String {
    format!("Set-Cookie: {COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_cookie_comes_back_as_its_identity() {
        let key = SessionKey::random().unwrap();
        let cookie = key.sign("ann", "Ann", NOW + 60);
        assert!(cookie.starts_with("v1."), "{cookie}");
        assert_eq!(key.verify(&cookie, NOW), Ok(Identity::named("ann", "Ann")));
        assert_eq!(key.verify(&cookie, NOW + 60), Err(AuthError::Expired));
    }

    #[test]
    fn tampered_or_foreign_cookies_are_refused() {
        let key = SessionKey::random().unwrap();
        let other = SessionKey::random().unwrap();
        let cookie = key.sign("ann", "Ann", NOW + 60);
        assert_eq!(
            other.verify(&cookie, NOW),
            Err(AuthError::BadSignature),
            "another process's key"
        );
        // The payload swapped for one naming somebody else, the MAC kept.
        let (_, tag) = cookie.rsplit_once('.').unwrap();
        let forged = format!(
            "v1.{}.{tag}",
            B64.encode(r#"{"sub":"root","name":"root","exp":1900000000}"#)
        );
        assert_eq!(key.verify(&forged, NOW), Err(AuthError::BadSignature));
        // One character of the MAC changed: its first, since the last of an unpadded base64
        // tag carries unused bits (changing them makes the text non-canonical: Malformed).
        let mut flipped = cookie.clone().into_bytes();
        let first = cookie.len() - tag.len();
        flipped[first] = if flipped[first] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.verify(std::str::from_utf8(&flipped).unwrap(), NOW),
            Err(AuthError::BadSignature)
        );
        for garbage in ["", "v1", "v1.x", "v2.abc.def", "v1.!!.??"] {
            assert!(key.verify(garbage, NOW).is_err(), "{garbage:?}");
        }
        assert_eq!(key.verify(&"a".repeat(2000), NOW), Err(AuthError::TooLong));
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            set_cookie("v"),
            "Set-Cookie: wsloop_session=v; Path=/; Max-Age=86400; HttpOnly; SameSite=Strict\r\n"
        );
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
