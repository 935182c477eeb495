//! The server API (feature `auth`): the application's backend pushes to its users over plain
//! HTTP on the server's port, with `Authorization: apikey KEY` (`--api-key-file`). JSON in,
//! JSON out; every operation reaches the other nodes through Redis as a client's would.
//!
//! | request | body | answer |
//! | --- | --- | --- |
//! | `POST /api/publish` | `channel`, `content`, `from`? | `delivered` |
//! | `POST /api/broadcast` | `content`, `from`? | `delivered` |
//! | `POST /api/send` | `user`, `content`, `from`? | `delivered` |
//! | `POST /api/disconnect` | `user` | `disconnected` |
//! | `GET /api/channels` | | `channels`: `name`, `subscribers` |
//! | `GET /api/presence?channel=NAME` | | `channel`, `users`: `user`, `name` |
//!
//! The counts are this node's: the other nodes deliver what they receive on their own.
//! Presence is the cluster's (this node's users and the other nodes' from Redis).

use serde_json::json;

use super::access::Access;
use super::chat::{Chat, ChatError, ChatLimits};
use super::json_http::{json_error, json_object, json_response, required_string, string_field};
use crate::log::Level;
use crate::proto::handshake::Request;
use crate::server::{Ctx, HttpResponse};

/// The `from` of what the backend sends without naming a sender.
const SERVER: &str = "server";

/// Whether a path is the API's.
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The largest body the API takes: a content at the chat's limit, even if JSON escaping made
/// every byte six (`\u0001`), and the other fields.
pub fn body_limit(limits: &ChatLimits) -> usize {
    limits.max_content.saturating_mul(6).saturating_add(1024)
}

/// Whether an API request must be read with its body (the POST operations).
pub fn takes_body(request: &Request) -> bool {
    request.method == "POST"
        && matches!(
            request.path(),
            "/api/publish" | "/api/broadcast" | "/api/send" | "/api/disconnect"
        )
}

/// 404 when the API is off, 401 without a known key; `None`: go ahead.
fn refusal(access: &Access, request: &Request) -> Option<HttpResponse> {
    let Some(keys) = &access.api_keys else {
        return Some(json_error(
            404,
            "the server API is off (start with --api-key-file)",
        ));
    };
    if keys.authorizes(request.header("Authorization")) {
        return None;
    }
    log!(
        Level::Info,
        "api: refused {} {}: no valid key",
        request.method,
        request.path()
    );
    let mut response = json_error(
        401,
        "a valid API key is required (Authorization: apikey KEY)",
    );
    response.headers.push_str("WWW-Authenticate: apikey\r\n");
    Some(response)
}

/// Answers an API request without a body (`GET /api/channels`, and every wrong method).
pub fn answer_head(access: &Access, chat: &Chat, request: &Request) -> HttpResponse {
    if let Some(refused) = refusal(access, request) {
        return refused;
    }
    match (request.method.as_str(), request.path()) {
        ("GET" | "HEAD", "/api/channels") => {
            let channels: Vec<_> = chat
                .channel_counts()
                .into_iter()
                .map(|(name, subscribers)| json!({"name": name, "subscribers": subscribers}))
                .collect();
            json_response(200, &json!({ "channels": channels }))
        }
        ("GET" | "HEAD", "/api/presence") => presence(chat, request),
        (_, "/api/channels" | "/api/presence") => method_not_allowed("GET"),
        (_, "/api/publish" | "/api/broadcast" | "/api/send" | "/api/disconnect") => {
            method_not_allowed("POST")
        }
        _ => json_error(404, "no such API endpoint"),
    }
}

/// `GET /api/presence?channel=NAME`: who is in the channel, across nodes.
fn presence(chat: &Chat, request: &Request) -> HttpResponse {
    match super::access::query_values(request, "channel").next() {
        Some(channel) => match chat.check_channel(&channel) {
            Ok(()) => {
                let mut answer = chat.presence_json(&channel);
                answer.as_object_mut().map(|o| o.remove("type"));
                json_response(200, &answer)
            }
            Err(e) => json_response(400, &json!({"error": e.message, "code": e.code})),
        },
        None => json_error(400, "the query parameter channel is required"),
    }
}

fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut response = json_error(405, &format!("use {allow}"));
    response.headers.push_str(&format!("Allow: {allow}\r\n"));
    response
}

/// Answers an API request with its body (the POST operations).
pub fn answer_body(
    access: &Access,
    chat: &mut Chat,
    ctx: &mut Ctx<'_>,
    request: &Request,
    body: &[u8],
) -> HttpResponse {
    if let Some(refused) = refusal(access, request) {
        return refused;
    }
    match carry_out(chat, ctx, request, body) {
        Ok(response) => response,
        Err(response) => response,
    }
}

fn carry_out(
    chat: &mut Chat,
    ctx: &mut Ctx<'_>,
    request: &Request,
    body: &[u8],
) -> Result<HttpResponse, HttpResponse> {
    let path = request.path();
    let fields: &[&str] = match path {
        "/api/publish" => &["channel", "content", "from"],
        "/api/broadcast" => &["content", "from"],
        "/api/send" => &["user", "content", "from"],
        _ => &["user"],
    };
    let object = json_object(request, body, fields)?;
    let from = string_field(&object, "from")?.unwrap_or(SERVER);
    let delivered = match path {
        "/api/publish" => chat.publish_from_backend(
            ctx,
            required_string(&object, "channel")?,
            required_string(&object, "content")?,
            from,
        ),
        "/api/broadcast" => {
            chat.broadcast_from_backend(ctx, required_string(&object, "content")?, from)
        }
        "/api/send" => chat.send_to_user(
            ctx,
            required_string(&object, "user")?,
            required_string(&object, "content")?,
            from,
        ),
        _ => {
            let user = required_string(&object, "user")?;
            let n = chat.disconnect_user(ctx, user);
            log!(
                Level::Info,
                "api: disconnected {user} ({n} connections here)"
            );
            return Ok(json_response(200, &json!({ "disconnected": n })));
        }
    }
    .map_err(|e: ChatError| {
        // History in Redis and Redis unreachable: nothing wrong with the request, try later.
        let status = if e.code == "redis_unavailable" {
            503
        } else {
            400
        };
        json_response(status, &json!({"error": e.message, "code": e.code}))
    })?;
    Ok(json_response(200, &json!({ "delivered": delivered })))
}
