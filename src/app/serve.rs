//! `wsloop serve`: the real-time server. One port answers plain HTTP (the browser client, a
//! health page, Prometheus metrics) and WebSocket upgrades at the chat endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use super::access::{origin_allowed, Tokens};
use super::chat::{Chat, ChatLimits, ClusterOp};
use super::metrics::{self, ClusterMetrics};
use crate::cluster::{decode_envelope, encode_envelope, Bridge, Inbound, Topic};
use crate::proto::handshake::Request;
use crate::proto::Message;
use crate::server::{
    CloseReason, ConnId, Ctx, Handler, HttpResponse, OpenInfo, Rejection, Route, Stats,
};

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
    /// Chat protocol limits.
    pub chat: ChatLimits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            ws_path: "/ws".into(),
            tokens: None,
            allowed_origins: Vec::new(),
            chat: ChatLimits::default(),
        }
    }
}

/// The `serve` application.
pub struct Serve {
    config: ServeConfig,
    /// The page with the configured WebSocket path written into it.
    index_html: String,
    chat: Chat,
    started: Instant,
    cluster: Option<Bridge>,
}

impl Serve {
    /// A single node: no Redis.
    pub fn new(config: ServeConfig) -> Self {
        // The page reads its endpoint from a meta tag; the path is a plain URL path, but
        // escape it anyway since it lands in an HTML attribute.
        let escaped = config
            .ws_path
            .replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;");
        let index_html = INDEX_HTML.replace(
            r#"<meta name="wsloop-ws-path" content="/ws">"#,
            &format!(r#"<meta name="wsloop-ws-path" content="{escaped}">"#),
        );
        Serve {
            index_html,
            chat: Chat::new(config.chat.clone()),
            config,
            started: Instant::now(),
            cluster: None,
        }
    }

    /// Makes this server a node of a cluster joined through the Redis bridge (before any
    /// client connects).
    pub fn attach_cluster(&mut self, bridge: Bridge) {
        let node = bridge.config().node_id.clone();
        bridge.subscribe(Topic::All.redis_name(&bridge.config().prefix));
        self.chat = Chat::clustered(self.config.chat.clone(), node);
        self.cluster = Some(bridge);
    }

    /// Hands what the chat wants the other nodes to know to the bridge.
    fn forward_cluster_ops(&mut self) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        let prefix = &bridge.config().prefix;
        for op in self.chat.take_cluster_ops() {
            match op {
                ClusterOp::Publish(topic, event) => bridge.publish(
                    topic.redis_name(prefix),
                    encode_envelope(&bridge.config().node_id, &event),
                ),
                ClusterOp::Subscribe(channel) => {
                    bridge.subscribe(Topic::Channel(channel).redis_name(prefix))
                }
                ClusterOp::Unsubscribe(channel) => {
                    bridge.unsubscribe(Topic::Channel(channel).redis_name(prefix))
                }
            }
        }
    }

    fn cluster_metrics(&self) -> Option<ClusterMetrics> {
        self.cluster.as_ref().map(|b| ClusterMetrics {
            up: b.is_up(),
            published: b.published(),
            publish_failures: b.publish_failures(),
            received: b.received(),
        })
    }

    fn route_upgrade(&self, request: &Request) -> Route {
        if request.path() != self.config.ws_path {
            let body = format!("no WebSocket endpoint here; use {}", self.config.ws_path);
            return Route::Reject(HttpResponse::text(404, &body), Rejection::NotFound);
        }
        if !origin_allowed(request, &self.config.allowed_origins) {
            return Route::Reject(
                HttpResponse::text(403, "origin not allowed"),
                Rejection::OriginNotAllowed,
            );
        }
        if let Some(tokens) = &self.config.tokens {
            if tokens.user(request).is_none() {
                let mut response = HttpResponse::text(401, "a valid token is required");
                response.headers = "WWW-Authenticate: Bearer\r\n".into();
                return Route::Reject(response, Rejection::Unauthorized);
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
            "/" | "/index.html" => asset("text/html; charset=utf-8", &self.index_html),
            "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
            "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
            "/healthz" => HttpResponse {
                status: 200,
                content_type: "application/json",
                headers: String::new(),
                body: {
                    let degraded = self.cluster.as_ref().is_some_and(|b| !b.is_up());
                    let status = if degraded { "degraded" } else { "ok" };
                    metrics::health(status, stats, self.started.elapsed()).into_bytes()
                },
            },
            "/metrics" => HttpResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: String::new(),
                body: metrics::prometheus(
                    stats,
                    self.chat.counters(),
                    self.started.elapsed(),
                    self.cluster_metrics(),
                )
                .into_bytes(),
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
        log!(crate::log::Level::Debug, "{id} joined from {}", info.client);
        self.chat.join(ctx, id, user);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        self.chat.handle(ctx, id, message);
        self.forward_cluster_ops();
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.chat.leave(id);
        self.forward_cluster_ops();
    }

    /// Delivers what other nodes published; this node's own publications come back from
    /// Redis too and are dropped (they were delivered locally when sent).
    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        let Some(bridge) = &self.cluster else {
            return;
        };
        let config = bridge.config();
        for inbound in bridge.drain() {
            let (topic, payload) = match inbound {
                Inbound::Message { topic, payload } => (topic, payload),
                Inbound::Subscribed(topic) => {
                    if let Some(Topic::Channel(channel)) =
                        Topic::from_redis_name(&topic, &config.prefix)
                    {
                        self.chat.confirm_subscription(ctx, &channel);
                    }
                    continue;
                }
                Inbound::Status(up) => {
                    self.chat.set_subscriber_up(ctx, up);
                    continue;
                }
            };
            let Some((node, event)) = decode_envelope(&payload) else {
                log!(
                    crate::log::Level::Warn,
                    "redis: malformed publication on {topic}"
                );
                continue;
            };
            if node == config.node_id {
                continue;
            }
            if let Some(topic) = Topic::from_redis_name(&topic, &config.prefix) {
                self.chat.deliver(ctx, &topic, event);
            }
        }
    }
}
