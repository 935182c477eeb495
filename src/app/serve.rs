//! `wsloop serve`: the real-time server. One port answers plain HTTP (the browser client,
//! liveness and readiness pages, Prometheus metrics) and WebSocket upgrades at the chat
//! endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::access::{origin_allowed, redacted_target, Access, Admission};
use super::chat::{send_error, Chat, ChatError, ChatLimits};
use super::gate::{Gate, Lapse};
use super::history::HistoryLimits;
use super::identity::{AuthError, Identity, LEEWAY_SECS};
use super::metrics::{self, ClusterMetrics, Exposition};
#[cfg(feature = "redis")]
use super::node::ClusterNode;
use crate::proto::handshake::Request;
use crate::proto::Message;
use crate::server::{
    Answer, CloseReason, ConnId, Ctx, Handler, HttpResponse, Listener, OpenInfo, Rejection, Route,
    Stats,
};

/// The browser client, embedded so the binary serves it with no other files.
const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const RECOVERY_JS: &str = include_str!("../../web/recovery.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// The close code of a connection that failed to authenticate in-band, sent no `auth` in
/// time, or whose token expired (PROTOCOL.md): 4001, from the range RFC 6455 §7.4.2 leaves
/// to applications, after HTTP's 401.
pub const AUTH_CLOSE: u16 = 4001;

/// The 401 of an upgrade whose credential is refused: RFC 6750 §3's challenge, with
/// `invalid_token` when a token was offered.
fn unauthorized(error: &AuthError) -> HttpResponse {
    let (challenge, body) = match error {
        AuthError::Missing => ("Bearer", "not logged in".to_owned()),
        _ => (
            r#"Bearer error="invalid_token""#,
            format!("invalid credential: {error}"),
        ),
    };
    let mut response = HttpResponse::text(401, &body);
    response.headers = format!("WWW-Authenticate: {challenge}\r\n");
    response
}

/// Settings of `wsloop serve` beyond the event loop's.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The WebSocket endpoint's path.
    pub ws_path: String,
    /// The credentials upgrades need.
    pub access: Access,
    /// How long a connection that opened without a token has to send its `auth` message
    /// (the loop's handshake timeout).
    pub auth_timeout: Duration,
    /// When not empty, browsers from other origins are refused.
    pub allowed_origins: Vec<String>,
    /// Chat protocol limits.
    pub chat: ChatLimits,
    /// `--presence-events`: channels announce `join` and `leave`.
    pub presence_events: bool,
    /// How much channel history is kept: in this process, or in Redis Streams for a cluster
    /// (`--redis`; `max_bytes` is then Redis's business).
    pub history: HistoryLimits,
    /// `--api-listen`: the server API answers only on the internal addresses
    /// ([`Listener::Internal`]), which serve nothing for clients; the public ones answer
    /// `/api/` with 404.
    pub api_internal: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            ws_path: "/ws".into(),
            access: Access::default(),
            auth_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            chat: ChatLimits::default(),
            presence_events: false,
            history: HistoryLimits::default(),
            api_internal: false,
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
    /// Set when the process is about to drain: `/readyz` then answers 503.
    stopping: Arc<AtomicBool>,
    /// The in-band `auth` deadlines and token expiries.
    gate: Gate,
    /// What the upgrade request just routed may do: `on_request` decides, and the loop calls
    /// `on_open` for that same request right after it, before any other request is routed.
    admitted: Option<Admission>,
    #[cfg(feature = "redis")]
    cluster: Option<ClusterNode>,
    /// The thread that checks `--users-file` passwords (argon2 must not stall the loop).
    #[cfg(feature = "auth")]
    password_checks: Option<super::auth::checks::PasswordChecks>,
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
            chat: Chat::new(config.chat.clone())
                .announce_presence(config.presence_events)
                .with_history(config.history.clone()),
            config,
            started: Instant::now(),
            stopping: Arc::default(),
            gate: Gate::default(),
            admitted: None,
            #[cfg(feature = "redis")]
            cluster: None,
            #[cfg(feature = "auth")]
            password_checks: None,
        }
    }

    /// With `--users-file`: checks passwords on a thread of their own, which wakes the loop
    /// with `waker` when one is done (without it, `/login` checks on the loop: the simulation).
    #[cfg(feature = "auth")]
    pub fn start_password_checks(&mut self, waker: Arc<mio::Waker>) -> std::io::Result<()> {
        if let Some(users) = &self.config.access.users {
            let checks = super::auth::checks::PasswordChecks::start(users.clone(), waker)?;
            self.password_checks = Some(checks);
        }
        Ok(())
    }

    /// `POST /login`: a nickname is answered at once; a password goes to the checking thread,
    /// and the answer follows when it is done (`on_wake`).
    #[cfg(feature = "auth")]
    fn login(&mut self, id: ConnId, request: &Request, body: &[u8]) -> Answer {
        use super::login::{self, LoginStep};
        let access = &self.config.access;
        let (name, password) =
            match login::login(access, &self.config.allowed_origins, request, body) {
                LoginStep::Answered(response) => return Answer::Now(response),
                LoginStep::CheckPassword { name, password } => (name, password),
            };
        let Some(checks) = &self.password_checks else {
            let ok = access
                .users
                .as_ref()
                .is_some_and(|u| u.check(&name, &password));
            return Answer::Now(login::checked(access, &name, ok));
        };
        if checks.submit(id, name, password) {
            return Answer::Later;
        }
        log!(
            crate::log::Level::Warn,
            "login refused: too many logins waiting"
        );
        let mut busy = super::json_http::json_error(503, "too many logins at once; retry");
        busy.headers.push_str("Retry-After: 1\r\n");
        Answer::Now(busy)
    }

    /// A flag that another thread sets when the process is about to stop (e.g. on SIGTERM,
    /// before the listeners close): from then on `/readyz` answers 503, so that a load
    /// balancer sends new clients elsewhere while this server still serves.
    pub fn stopping_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stopping)
    }

    /// `/readyz`: 200 while this server should get new clients; 503 when it is about to
    /// drain, or when it is a cluster node that cannot reach Redis (its clients would not
    /// hear the other nodes).
    fn readiness(&self) -> HttpResponse {
        let status = if self.stopping.load(Ordering::Relaxed) {
            "draining"
        } else if self.cluster_metrics().is_some_and(|c| !c.up) {
            "redis_unreachable"
        } else {
            "ready"
        };
        HttpResponse {
            status: if status == "ready" { 200 } else { 503 },
            content_type: "application/json",
            headers: "Cache-Control: no-store\r\n".into(),
            body: serde_json::json!({ "status": status })
                .to_string()
                .into_bytes(),
        }
    }

    /// Makes this server a node of a cluster (before any client connects).
    #[cfg(feature = "redis")]
    pub fn attach_cluster(&mut self, node: ClusterNode) {
        self.chat = Chat::clustered(self.config.chat.clone(), node.id().to_owned())
            .announce_presence(self.config.presence_events)
            .with_shared_history(self.config.history.size);
        self.cluster = Some(node);
    }

    /// Graceful shutdown of a cluster node: hands every publication already acknowledged to
    /// Redis, waiting at most `timeout` (nothing to do for a single node).
    pub fn close_cluster(&mut self, _timeout: std::time::Duration) {
        #[cfg(feature = "redis")]
        if let Some(node) = &mut self.cluster {
            node.close(_timeout);
        }
    }

    /// Hands what the chat wants the other nodes to know to the cluster (nothing when this
    /// server is a single node: the chat then records nothing).
    fn forward_cluster_ops(&mut self) {
        #[cfg(feature = "redis")]
        if let Some(node) = &mut self.cluster {
            node.forward(self.chat.take_cluster_ops());
        }
    }

    /// The cluster's counters; `None` for a single node.
    fn cluster_metrics(&self) -> Option<ClusterMetrics> {
        #[cfg(feature = "redis")]
        return self.cluster.as_ref().map(ClusterNode::metrics);
        #[cfg(not(feature = "redis"))]
        None
    }

    fn route_upgrade(&mut self, request: &Request) -> Route {
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
        let admission = self.config.access.admit(request);
        if let Admission::Refused(error) = &admission {
            log!(crate::log::Level::Info, "upgrade refused: {error}");
            return Route::Reject(unauthorized(error), Rejection::Unauthorized);
        }
        self.admitted = Some(admission);
        Route::Upgrade
    }

    /// A connection is who `identity` says: it joins the chat, and its token's expiry (plus
    /// the leeway) becomes its deadline.
    fn enter(&mut self, ctx: &mut Ctx<'_>, id: ConnId, identity: Option<Identity>) {
        self.track_expiry(ctx, id, identity.as_ref());
        self.chat.join(ctx, id, identity);
    }

    fn track_expiry(&mut self, ctx: &Ctx<'_>, id: ConnId, identity: Option<&Identity>) {
        match identity.and_then(|i| i.expires_at) {
            Some(exp) => {
                let left = (exp + LEEWAY_SECS).saturating_sub(super::access::unix_now());
                let when = ctx.now() + Duration::from_secs(left);
                self.gate.set(id, when, Lapse::TokenExpired);
            }
            None => self.gate.forget(id),
        }
    }

    /// A message from a connection that opened without a token: it must be
    /// `{"type":"auth","token":...}` with a valid token, or the connection is closed with
    /// 4001.
    fn authenticate_first(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: &Message<'_>) {
        let token = serde_json::from_slice::<serde_json::Value>(message.data)
            .ok()
            .filter(|v| v["type"] == "auth")
            .and_then(|v| v["token"].as_str().map(str::to_owned));
        let Some(token) = token else {
            log!(
                crate::log::Level::Info,
                "{id}: first message is not auth, closing"
            );
            self.gate.forget(id);
            return ctx.close(id, AUTH_CLOSE, "authentication required");
        };
        match self.config.access.check_token(&token) {
            Ok(identity) => self.enter(ctx, id, Some(identity)),
            Err(error) => {
                log!(crate::log::Level::Info, "{id}: auth refused: {error}");
                self.gate.forget(id);
                ctx.close(id, AUTH_CLOSE, &error.to_string());
            }
        }
    }

    /// A member sent a new token while open: refresh its expiry, or tell it why not.
    fn reauthenticate(&mut self, ctx: &mut Ctx<'_>, id: ConnId, token: &str) {
        match self.config.access.check_token(token) {
            Ok(identity) => {
                if self
                    .chat
                    .member(id)
                    .is_some_and(|m| m.user == identity.user)
                {
                    self.track_expiry(ctx, id, Some(&identity));
                }
                self.chat.reauthenticate(ctx, id, identity);
            }
            Err(error) => send_error(ctx, id, &ChatError::new("invalid_token", error.to_string())),
        }
    }

    /// The body a POST route takes at most (`None`: the request is answered from its head).
    fn body_limit(&self, request: &Request) -> Option<usize> {
        if request.method != "POST" {
            return None;
        }
        #[cfg(feature = "auth")]
        {
            if matches!(request.path(), "/login" | "/logout") {
                return Some(super::login::MAX_LOGIN_BODY);
            }
            if super::api::takes_body(request) {
                return Some(super::api::body_limit(&self.config.chat));
            }
        }
        None
    }

    /// With `--api-listen`: the 404 of an API request on a public address, and of anything
    /// but the API and the operator's endpoints on an internal one. `None`: route it.
    fn separate_api(&self, request: &Request, listener: Listener) -> Option<HttpResponse> {
        let path = request.path();
        let api = path.starts_with("/api/");
        let operator = matches!(path, "/healthz" | "/readyz" | "/metrics");
        let refusal = match listener {
            Listener::Internal if !api && !operator => {
                "this address serves only /api/, /healthz, /readyz and /metrics"
            }
            Listener::Listen | Listener::Plain if api && self.config.api_internal => {
                "the server API is not served on this address (see --api-listen)"
            }
            _ => return None,
        };
        Some(HttpResponse {
            status: 404,
            content_type: "application/json",
            headers: String::new(),
            body: serde_json::json!({ "error": refusal })
                .to_string()
                .into_bytes(),
        })
    }

    fn route_http(&self, request: &Request, stats: &Stats) -> HttpResponse {
        #[cfg(feature = "auth")]
        if super::api::is_api(request.path()) {
            return super::api::answer_head(&self.config.access, &self.chat, request);
        }
        // RFC 9110 §9.3.2: HEAD is GET without the content (the loop leaves the body out);
        // §15.5.6: a 405 "MUST generate an Allow header field".
        if request.method != "GET" && request.method != "HEAD" {
            let mut response = HttpResponse::text(405, "only GET and HEAD are served here");
            response.headers = "Allow: GET, HEAD\r\n".into();
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
            "/recovery.js" => asset("text/javascript; charset=utf-8", RECOVERY_JS),
            "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
            "/healthz" => HttpResponse {
                status: 200,
                content_type: "application/json",
                headers: String::new(),
                body: {
                    let degraded = self
                        .cluster_metrics()
                        .is_some_and(|c| !c.up || c.duplicate_node_id);
                    let status = if degraded { "degraded" } else { "ok" };
                    metrics::health(status, stats, self.started.elapsed()).into_bytes()
                },
            },
            "/readyz" => self.readiness(),
            #[cfg(feature = "auth")]
            "/session" => super::login::current(&self.config.access, request),
            "/metrics" => {
                let format = Exposition::negotiate(request.header("Accept"));
                HttpResponse {
                    status: 200,
                    content_type: format.content_type(),
                    headers: "Vary: Accept\r\n".into(),
                    body: metrics::prometheus(
                        stats,
                        self.chat.counters(),
                        self.started.elapsed(),
                        self.cluster_metrics(),
                        super::process::read().map(|mut p| {
                            // Where the boot time is hidden: this server's start, which is the
                            // process's to within the start-up.
                            let started = SystemTime::now() - self.started.elapsed();
                            let since_epoch =
                                started.duration_since(UNIX_EPOCH).unwrap_or_default();
                            p.start_time_seconds
                                .get_or_insert(since_epoch.as_secs_f64());
                            p
                        }),
                        format,
                    )
                    .into_bytes(),
                }
            }
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
    fn on_request(
        &mut self,
        request: &Request,
        peer: SocketAddr,
        listener: Listener,
        stats: &Stats,
    ) -> Route {
        log!(
            crate::log::Level::Debug,
            "{peer}: {} {}",
            request.method,
            redacted_target(&request.target)
        );
        if let Some(response) = self.separate_api(request, listener) {
            return Route::Respond(response);
        }
        if request.wants_upgrade() {
            self.route_upgrade(request)
        } else if let Some(limit) = self.body_limit(request) {
            Route::ReadBody(limit)
        } else {
            Route::Respond(self.route_http(request, stats))
        }
    }

    fn on_body(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _id: ConnId,
        request: &Request,
        _body: &[u8],
    ) -> Answer {
        #[cfg(feature = "auth")]
        if super::api::is_api(request.path()) {
            let access = &self.config.access;
            let response = super::api::answer_body(access, &mut self.chat, _ctx, request, _body);
            self.forward_cluster_ops();
            return Answer::Now(response);
        }
        #[cfg(feature = "auth")]
        match request.path() {
            "/login" => return self.login(_id, request, _body),
            "/logout" => return Answer::Now(super::login::logout()),
            _ => {}
        }
        let nothing = format!("nothing takes a body at {}", request.path());
        Answer::Now(HttpResponse::text(404, &nothing))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, info: &OpenInfo<'_>) {
        log!(crate::log::Level::Debug, "{id} joined from {}", info.client);
        match self.admitted.take() {
            Some(Admission::Identified(identity)) => self.enter(ctx, id, Some(identity)),
            Some(Admission::AwaitAuth) => {
                let deadline = ctx.now() + self.config.auth_timeout;
                self.gate.set(id, deadline, Lapse::AuthTimeout);
            }
            // `Refused` never reaches the loop's upgrade.
            Some(Admission::Anonymous | Admission::Refused(_)) | None => self.enter(ctx, id, None),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, message: Message<'_>) {
        if self.gate.awaits_auth(id) {
            self.authenticate_first(ctx, id, &message);
            return;
        }
        if let Some(token) = self.chat.handle(ctx, id, message) {
            self.reauthenticate(ctx, id, &token);
        }
        self.forward_cluster_ops();
    }

    fn on_pause(&mut self, _ctx: &mut Ctx<'_>, paused: Duration) {
        self.chat.pause(paused);
        self.gate.pause(paused);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _reason: CloseReason) {
        self.gate.forget(id);
        self.chat.leave(ctx, id);
        self.forward_cluster_ops();
    }

    fn next_timer(&self) -> Option<Instant> {
        [self.gate.next(), self.chat.next_history_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Closes connections whose `auth` did not come in time or whose token expired, and
    /// forgets idle channels' history.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        self.chat.expire_history(ctx.now());
        while let Some((id, lapse)) = self.gate.pop_due(ctx.now()) {
            let reason = match lapse {
                Lapse::AuthTimeout => "authentication timeout",
                Lapse::TokenExpired => "token expired",
            };
            log!(crate::log::Level::Info, "{id}: {reason}, closing");
            ctx.close(id, AUTH_CLOSE, reason);
        }
    }

    /// Delivers what came from Redis; hands on what that asks of it (reads of the history
    /// in Redis).
    fn on_wake(&mut self, _ctx: &mut Ctx<'_>) {
        #[cfg(feature = "auth")]
        if let Some(checks) = &self.password_checks {
            for done in checks.finished() {
                let access = &self.config.access;
                _ctx.respond(done.id, &super::login::checked(access, &done.name, done.ok));
            }
        }
        #[cfg(feature = "redis")]
        if let Some(node) = &mut self.cluster {
            node.deliver(&mut self.chat, _ctx);
        }
        self.forward_cluster_ops();
    }
}
