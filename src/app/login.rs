//! The built-in page's login (feature `auth`), the HTTP half of "HTTP to log in, then the
//! WebSocket": `POST /login` checks a nickname (or, with `--users-file`, a name and password)
//! and sets the signed session cookie that the upgrade then carries; `POST /logout` removes
//! it; `GET /session` tells the page who it is logged in as, and how to log in otherwise.

use serde_json::json;

use super::access::{cookie, origin_allowed, unix_now, Access};
use super::auth::session::{self, SessionKey, SESSION_SECS};
use super::auth::valid_name;
use super::json_http::{json_error, json_object, json_response, required_string, string_field};
use crate::log::Level;
use crate::proto::handshake::Request;
use crate::server::HttpResponse;

/// The largest login body taken: a name and a password.
pub const MAX_LOGIN_BODY: usize = 1024;

/// How one logs in here: `password` (a users file), `nickname` (anyone, any free name),
/// `token` (the user's own backend hands out tokens; no login here).
fn how(access: &Access) -> &'static str {
    match (access.login_offered(), &access.users) {
        (None, _) => "token",
        (Some(_), Some(_)) => "password",
        (Some(_), None) => "nickname",
    }
}

/// Where a login request stands once read.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginStep {
    /// Its answer: the session cookie of a nickname, or a refusal.
    Answered(HttpResponse),
    /// The password must be checked against `--users-file` first (off the event loop:
    /// `auth::checks`); [`checked`] then answers.
    CheckPassword {
        /// The name asked for.
        name: String,
        /// The password given.
        password: String,
    },
}

/// `POST /login` with `{"name": ..., "password": ...}` (the password only with a users
/// file).
pub fn login(access: &Access, origins: &[String], request: &Request, body: &[u8]) -> LoginStep {
    // A form or script of another site must not log a browser in here: SameSite keeps the
    // cookie from being sent cross-site, and the origin list (when set) from being made.
    if !origin_allowed(request, origins) {
        return LoginStep::Answered(json_error(403, "origin not allowed"));
    }
    if access.login_offered().is_none() {
        return LoginStep::Answered(json_error(
            404,
            "no login here: this server takes tokens from your backend",
        ));
    }
    match read(access, request, body) {
        Ok((name, None)) => LoginStep::Answered(session_for(access, &name)),
        Ok((name, Some(password))) => LoginStep::CheckPassword { name, password },
        Err(refusal) => LoginStep::Answered(refusal),
    }
}

/// The answer to a login whose password was checked (`ok`: it is `name`'s).
pub fn checked(access: &Access, name: &str, ok: bool) -> HttpResponse {
    if ok {
        session_for(access, name)
    } else {
        log!(Level::Info, "login refused: {name}");
        json_error(401, "wrong name or password")
    }
}

/// 200 with the session cookie of `name`.
fn session_for(access: &Access, name: &str) -> HttpResponse {
    let Some(key) = access.login_offered() else {
        return json_error(404, "no login here");
    };
    log!(Level::Info, "login: {name}");
    let value = key.sign(name, name, unix_now() + SESSION_SECS);
    let mut response = json_response(200, &json!({"user": name, "name": name}));
    response.headers.push_str(&session::set_cookie(&value));
    response
}

/// The name a login body asks for, and the password to check (with a users file).
fn read(
    access: &Access,
    request: &Request,
    body: &[u8],
) -> Result<(String, Option<String>), HttpResponse> {
    let object = json_object(request, body, &["name", "password"])?;
    let name = required_string(&object, "name")?.trim();
    valid_name(name).map_err(|e| json_error(400, &e))?;
    let password = string_field(&object, "password")?;
    match (&access.users, password) {
        (Some(_), password) => Ok((name.to_owned(), Some(password.unwrap_or_default().into()))),
        (None, Some(_)) => Err(json_error(400, "no passwords here: choose a nickname")),
        (None, None) => Ok((name.to_owned(), None)),
    }
}

/// `POST /logout`: the cookie is removed (connections already open stay open).
pub fn logout() -> HttpResponse {
    let mut response = json_response(200, &json!({"logged_out": true}));
    response.headers.push_str(&session::clear_cookie());
    response
}

/// `GET /session`: 200 `{"user","name","login"}` when the request carries a valid session
/// cookie, else 401 `{"error","login"}`; `login` says how to log in.
pub fn current(access: &Access, request: &Request) -> HttpResponse {
    let how = how(access);
    let identity = access
        .login_offered()
        .zip(cookie(request, session::COOKIE))
        .map(|(key, value): (&SessionKey, &str)| key.verify(value, unix_now()));
    match identity {
        Some(Ok(identity)) => json_response(
            200,
            &json!({"user": identity.user, "name": identity.name, "login": how}),
        ),
        Some(Err(e)) => json_response(
            401,
            &json!({"error": format!("not logged in ({e})"), "login": how}),
        ),
        None => json_response(401, &json!({"error": "not logged in", "login": how})),
    }
}
