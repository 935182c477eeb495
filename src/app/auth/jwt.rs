//! Signed tokens (JSON Web Tokens, RFC 7519) issued by the user's own backend: HS256 with a
//! shared secret, RS256 or ES256 with the backend's public key. The signature, the algorithm
//! and the time claims are checked by `jsonwebtoken`; this module pins the algorithm to the
//! key's and turns the claims into an [`Identity`].

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::app::identity::{AuthError, ChannelRules, Identity, LEEWAY_SECS, MAX_TOKEN};

/// The shortest HS256 secret accepted: RFC 7518 §3.2 "a key of the same size as the hash
/// output (256 bits) or larger MUST be used".
const MIN_SECRET: usize = 32;

/// Checks tokens signed with one key and one algorithm.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "JwtVerifier({:?})", self.validation.algorithms)
    }
}

impl JwtVerifier {
    /// HS256 with the secret in `path` (its bytes, without a trailing newline).
    pub fn from_secret_file(path: &Path) -> Result<JwtVerifier, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_secret(bytes.trim_ascii_end()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// HS256 with this secret.
    pub fn from_secret(secret: &[u8]) -> Result<JwtVerifier, String> {
        if secret.len() < MIN_SECRET {
            return Err(format!(
                "an HS256 secret needs at least {MIN_SECRET} bytes (RFC 7518 §3.2), this one has {}",
                secret.len()
            ));
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        Ok(Self::new(key, Algorithm::HS256))
    }

    /// RS256 or ES256 with the PEM public key in `path` (an EC P-256 key means ES256, an RSA
    /// key RS256).
    pub fn from_public_key_file(path: &Path) -> Result<JwtVerifier, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_public_key(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// RS256 or ES256 with this PEM public key.
    pub fn from_public_key(pem: &[u8]) -> Result<JwtVerifier, String> {
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self::new(key, Algorithm::RS256)),
            Err(e) => Err(format!("not an RSA or EC P-256 public key in PEM: {e}")),
        }
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> JwtVerifier {
        // One algorithm only: a token naming another one (HS256 against a public key, the
        // classic confusion, or `none`) is refused before any signature check.
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        // `sub` is checked when the claims are read, which tells a missing one from one of
        // the wrong type.
        validation.set_required_spec_claims(&["exp"]);
        JwtVerifier { key, validation }
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> &'static str {
        match self.validation.algorithms.first() {
            Some(Algorithm::ES256) => "ES256",
            Some(Algorithm::RS256) => "RS256",
            _ => "HS256",
        }
    }

    /// Checks a token (signature, algorithm, `exp` and `nbf` against the system clock) and
    /// reads its identity: `sub` (required), `name`, `channels`, `exp`.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN {
            return Err(AuthError::TooLong);
        }
        if names_unknown_algorithm(token) {
            return Err(AuthError::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.kind()))?;
        identity(&data.claims)
    }
}

/// The identity in a token's verified claims.
fn identity(claims: &Value) -> Result<Identity, AuthError> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        Some(_) => return Err(AuthError::BadClaim("sub")),
        None => return Err(AuthError::MissingClaim("sub")),
    };
    let name = match claims.get("name") {
        None | Some(Value::Null) => sub.clone(),
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(_) => return Err(AuthError::BadClaim("name")),
    };
    let channels = match claims.get("channels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            let patterns: Option<Vec<String>> =
                list.iter().map(|p| p.as_str().map(str::to_owned)).collect();
            Some(ChannelRules::new(
                patterns.ok_or(AuthError::BadClaim("channels"))?,
            ))
        }
        Some(_) => return Err(AuthError::BadClaim("channels")),
    };
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AuthError::BadClaim("exp"))?;
    Ok(Identity {
        user: sub,
        name,
        channels,
        expires_at: Some(expires_at),
    })
}

/// Whether the token's header names an algorithm jsonwebtoken has no name for (`none`, the
/// unsigned token of RFC 7519 §6, above all): jsonwebtoken reports those as a malformed
/// header, but the client should hear that the algorithm is refused.
fn names_unknown_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    match serde_json::from_slice::<Value>(&json) {
        Ok(header) => header
            .get("alg")
            .and_then(Value::as_str)
            .is_some_and(|alg| alg.parse::<Algorithm>().is_err()),
        Err(_) => false,
    }
}

/// What a refusal from `jsonwebtoken` means for the client.
fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim("exp"),
        ErrorKind::InvalidClaimFormat(claim) if claim == "nbf" => AuthError::BadClaim("nbf"),
        ErrorKind::InvalidClaimFormat(_) => AuthError::BadClaim("exp"),
        ErrorKind::InvalidSubject => AuthError::BadClaim("sub"),
        _ => AuthError::Malformed,
    }
}
