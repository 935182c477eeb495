//! `wsloop serve`: the real-time server. One port answers plain HTTP (the browser client, a
//! health page, Prometheus metrics) and WebSocket upgrades at the chat endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use super::access::{client_addr, origin_allowed, Tokens};
use super::chat::{Chat, ChatLimits};
use super::metrics;
use crate::proto::handshake::Request;
use crate::proto::Message;
use crate::server::{CloseReason, ConnId, Ctx, Handler, HttpResponse, OpenInfo, Route, Stats};

/// The browser client, embedded so the binary serves it with no other files.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// Settings of `wsloop serve` beyond the event loop's.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The WebSocket endpoint's path.
    pub ws_path: String,
    /// When set, an upgrade needs one of these tokens.
    pub tokens: Option<Tokens>,
    /// When not empty, browsers from other origins are refused.
    pub allowed_origins: Vec<String>,
    /// Take the client address from proxy headers.
    pub trust_proxy: bool,
    /// Chat protocol limits.
    pub chat: ChatLimits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            ws_path: "/ws".into(),
            tokens: None,
            allowed_origins: Vec::new(),
            trust_proxy: false,
            chat: ChatLimits::default(),
        }
    }
}

/// The `serve` application.
#[derive(Debug)]
pub struct Serve {
    config: ServeConfig,
    chat: Chat,
    started: Instant,
}

impl Serve {
    /// A server with no one connected yet.
    pub fn new(config: ServeConfig) -> Self {
        Serve {
            chat: Chat::new(config.chat.clone()),
            config,
            started: Instant::now(),
        }
    }

    /// The chat state.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    fn route_upgrade(&self, request: &Request) -> Route {
        if request.path() != self.config.ws_path {
            let body = format!("no WebSocket endpoint here; use {}", self.config.ws_path);
            return Route::Reject(HttpResponse::text(404, &body), "not_found");
        }
        if !origin_allowed(request, &self.config.allowed_origins) {
            return Route::Reject(
                HttpResponse::text(403, "origin not allowed"),
                "origin_not_allowed",
            );
        }
        if let Some(tokens) = &self.config.tokens {
            if tokens.user(request).is_none() {
                let mut response = HttpResponse::text(401, "a valid token is required");
                response.headers = "WWW-Authenticate: Bearer\r\n".into();
                return Route::Reject(response, "unauthorized");
            }
        }
        Route::Upgrade
    }

    fn route_http(&self, request: &Request, stats: &Stats) -> HttpResponse {
        if request.method != "GET" {
            let mut response = HttpResponse::text(405, "only GET is served here");
            response.headers = "Allow: GET\r\n".into();
            return response;
        }
        let asset = |content_type, body: &str| HttpResponse {
            status: 200,
            content_type,
            headers: "Cache-Control: no-cache\r\n".into(),
            body: body.as_bytes().to_vec(),
        };
        match request.path() {
            "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
            "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
            "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
            "/healthz" => HttpResponse {
                status: 200,
                content_type: "application/json",
                headers: String::new(),
                body: metrics::health("ok", stats, self.started.elapsed()).into_bytes(),
            },
            "/metrics" => HttpResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: String::new(),
                body: metrics::prometheus(stats, self.started.elapsed()).into_bytes(),
            },
            path if path == self.config.ws_path => {
                let mut response = HttpResponse::text(426, "this is a WebSocket endpoint");
                response.headers = "Upgrade: websocket\r\n".into();
                response
            }
            _ => HttpResponse::text(404, "not found"),
        }
    }
}

impl Handler for Serve {
    fn on_request(&mut self, request: &Request, _peer: SocketAddr, stats: &Stats) -> Route {
        if request.wants_upgrade() {
            self.route_upgrade(request)
        } else {
            Route::Respond(self.route_http(request, stats))
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, info: &OpenInfo<'_>) {
        let user = self
            .config
            .tokens
            .as_ref()
            .and_then(|t| t.user(info.request))
            .map(str::to_owned);
        let addr = client_addr(info.request, info.peer, self.config.trust_proxy);
        log!(crate::log::Level::Debug, "{id} joined from {addr}");
        self.chat.join(ctx, id, user, addr);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        self.chat.handle(ctx, id, message);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.chat.leave(id);
    }
}
