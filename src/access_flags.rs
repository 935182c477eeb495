//! The credential flags of `wsloop serve` read into the [`Access`] they configure: the files
//! are read and checked at start, so that a bad one stops the server with exit status 2.

use wsloop::app::access::{Access, Tokens};
#[cfg(feature = "auth")]
use wsloop::app::auth::{jwt::JwtVerifier, keys::ApiKeys, session::SessionKey, users::Users};

use crate::args::ServeArgs;

/// Reads the token, key and users files the flags name.
pub(crate) fn access(args: &ServeArgs) -> Result<Access, String> {
    let tokens = match &args.token_file {
        Some(path) => Some(Tokens::load(path).map_err(|e| format!("--token-file: {e}"))?),
        None => None,
    };
    #[cfg(feature = "auth")]
    {
        let jwt = match (&args.jwt_secret_file, &args.jwt_public_key) {
            (Some(path), _) => Some(
                JwtVerifier::from_secret_file(path)
                    .map_err(|e| format!("--jwt-secret-file: {e}"))?,
            ),
            (None, Some(path)) => Some(
                JwtVerifier::from_public_key_file(path)
                    .map_err(|e| format!("--jwt-public-key: {e}"))?,
            ),
            (None, None) => None,
        };
        let sessions = match &args.session_secret_file {
            Some(path) => {
                SessionKey::from_file(path).map_err(|e| format!("--session-secret-file: {e}"))?
            }
            None => SessionKey::random()?,
        };
        let users = match &args.users_file {
            Some(path) => Some(Users::load(path).map_err(|e| format!("--users-file: {e}"))?),
            None => None,
        };
        let api_keys = match &args.api_key_file {
            Some(path) => Some(ApiKeys::load(path).map_err(|e| format!("--api-key-file: {e}"))?),
            None => None,
        };
        let access = Access {
            tokens,
            jwt,
            sessions: Some(sessions),
            users,
            api_keys,
        };
        if access.users.is_some() && access.token_mode() {
            return Err(
                "--users-file is for the page's login, which tokens replace: use one or the other"
                    .into(),
            );
        }
        Ok(access)
    }
    #[cfg(not(feature = "auth"))]
    Ok(Access { tokens })
}
