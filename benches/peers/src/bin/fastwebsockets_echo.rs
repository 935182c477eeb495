//! `fastwebsockets-echo`: a WebSocket echo server on fastwebsockets, for side-by-side
//! benchmarks with wsloop.
//!
//! One thread: tokio's current-thread runtime. The upgrade goes through hyper's HTTP/1 server,
//! which is how fastwebsockets documents a server (its `upgrade` feature); after the 101 the
//! connection is a `FragmentCollector`, so fragmented messages are reassembled and text is
//! UTF-8-checked as a whole, as wsloop does. Pings are answered and closes echoed by
//! fastwebsockets itself (`auto_pong`, `auto_close`, both on by default).

use fastwebsockets::upgrade::{upgrade, UpgradeFut};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Largest message; the same default as wsloop's `echo` (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    wsloop_peers::run_tokio("fastwebsockets-echo", serve)
}

async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        // The same as wsloop: small frames go out at once.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            // `with_upgrades` keeps the connection future alive until the upgrade hands the
            // socket over to the WebSocket task.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(on_request))
                .with_upgrades()
                .await;
        });
    }
}

/// Answers every request as an upgrade: 101 and an echo task, or 400.
async fn on_request(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    match upgrade(&mut request) {
        Ok((response, upgraded)) => {
            tokio::spawn(async move {
                let _ = echo(upgraded).await;
            });
            Ok(response)
        }
        Err(_) => {
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

async fn echo(upgraded: UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgraded.await?;
    ws.set_max_message_size(MAX_MESSAGE);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            // The close reply was already written by `read_frame` (auto_close).
            OpCode::Close => return Ok(()),
            OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
        }
    }
}
