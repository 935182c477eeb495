//! `nginx` running deploy/nginx.conf in front of two nodes, for the cluster tests: started on
//! free 127.0.0.1 ports with everything in a temporary directory, stopped by a guard; and
//! which node served a client. Included as `#[path = "common/nginx.rs"] mod nginx;` beside
//! `harness` (common/cluster.rs) and `tls` (common/tls.rs).
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{free_port, send_signal, try_http_get, wait_exit, Lines, Node, TempDir};
use crate::harness::{STARTUP, WAIT};

pub fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// deploy/nginx.conf with its placeholders filled in: replaces `from` by `to` on the one
/// non-comment line that holds it.
pub fn fill_placeholder(text: &str, from: &str, to: &str) -> String {
    let mut hits = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if !line.trim_start().starts_with('#') && line.contains(from) {
                hits += 1;
                line.replace(from, to)
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(
        hits, 1,
        "deploy/nginx.conf should have {from:?} on exactly one line"
    );
    lines.join("\n") + "\n"
}

/// An nginx master (and its worker) in its own process group, with everything in a temp dir;
/// stopped when dropped.
pub struct Nginx {
    pub child: Child,
    /// Plain HTTP (`listen 80`).
    pub addr: SocketAddr,
    /// TLS (`listen 443 ssl`).
    pub tls_addr: SocketAddr,
    pub log: Lines,
    pub _dir: TempDir,
}

impl Nginx {
    /// Runs deploy/nginx.conf (included in a minimal main config that keeps pid, logs and
    /// temp files in a temp dir) in front of `upstreams`, with `leaf` as its certificate.
    pub fn start(program: &Path, upstreams: [SocketAddr; 2], leaf: &crate::tls::Leaf) -> Nginx {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let ports = [free_port(), free_port()];
            match Nginx::try_start(program, upstreams, leaf, ports) {
                Ok(nginx) => return nginx,
                Err(e) => failures.push(e),
            }
        }
        panic!("nginx did not start: {failures:#?}");
    }

    pub fn try_start(
        program: &Path,
        upstreams: [SocketAddr; 2],
        leaf: &crate::tls::Leaf,
        [port, tls_port]: [u16; 2],
    ) -> Result<Nginx, String> {
        let dir = TempDir::new("nginx");
        let site = repo_file("deploy/nginx.conf");
        let site = fill_placeholder(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let site = fill_placeholder(
            &site,
            "listen 443 ssl;",
            &format!("listen 127.0.0.1:{tls_port} ssl;"),
        );
        let site = fill_placeholder(
            &site,
            "/etc/letsencrypt/live/chat.example.org/fullchain.pem",
            &leaf.cert.display().to_string(),
        );
        let site = fill_placeholder(
            &site,
            "/etc/letsencrypt/live/chat.example.org/privkey.pem",
            &leaf.key.display().to_string(),
        );
        let site = fill_placeholder(
            &site,
            "server 127.0.0.1:8081",
            &format!("server {}", upstreams[0]),
        );
        let site = fill_placeholder(
            &site,
            "server 127.0.0.1:8082",
            &format!("server {}", upstreams[1]),
        );
        std::fs::write(dir.file("wsloop.conf"), site).expect("write wsloop.conf");
        let main = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {pid};\n\
             error_log stderr notice;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   log_format upstream '$remote_addr \"$request\" $status upstream=$upstream_addr';\n\
             \x20   access_log {access} upstream;\n\
             \x20   client_body_temp_path {dir}/client_body;\n\
             \x20   proxy_temp_path {dir}/proxy;\n\
             \x20   fastcgi_temp_path {dir}/fastcgi;\n\
             \x20   uwsgi_temp_path {dir}/uwsgi;\n\
             \x20   scgi_temp_path {dir}/scgi;\n\
             \x20   include {site};\n\
             }}\n",
            pid = dir.file("nginx.pid"),
            access = dir.file("access.log"),
            dir = dir.path().display(),
            site = dir.file("wsloop.conf"),
        );
        let conf = dir.file("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        let mut child = Command::new(program)
            .args(["-p", &format!("{}/", dir.path().display())])
            .args(["-c", &conf, "-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that the worker can be ended with the master.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let log = Lines::capture(
            child.stderr.take().expect("stderr"),
            format!("nginx :{port}"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut nginx = Nginx {
            child,
            addr,
            tls_addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
            log,
            _dir: dir,
        };
        // Ready when a request through it reaches a node.
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", nginx.log.text()));
            }
            if let Ok(reply) = try_http_get(addr, "/healthz") {
                let via_nginx = reply
                    .header("Server")
                    .is_some_and(|s| s.starts_with("nginx"));
                if via_nginx && reply.status == 200 && reply.body.contains("\"status\"") {
                    return Ok(nginx);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no /healthz through port {port} within {STARTUP:?}:\n{}",
                    nginx.log.text()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the group: the master stops its worker and exits; then make sure.
        let group = format!("-{}", self.child.id());
        send_signal("TERM", &group);
        if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        send_signal("KILL", &group);
    }
}

/// The line a node logs at debug level when a client connects: `<serial> joined from <addr>`.
pub fn joined(line: &str, id: &str, addr: &str) -> bool {
    // The log names the connection by its serial, the last part of `<node>-<tag>-<serial>`.
    let serial = id.rsplit('-').next().unwrap_or(id);
    line.contains(" DEBUG ") && line.ends_with(&format!(" {serial} joined from {addr}"))
}

/// Which node logged `<id> joined from <addr>` (exactly one must, within [`WAIT`]).
pub fn serving_node(nodes: &[Node; 2], id: &str, addr: &str) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let hits: Vec<usize> = (0..2)
            .filter(|&i| nodes[i].log.any(|l| joined(l, id, addr)))
            .collect();
        match hits.as_slice() {
            [one] => return *one,
            [] if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => panic!(
                "expected exactly one node to log \"{id} joined from {addr}\", found {hits:?}; \
                 logs:\n{}\n---\n{}",
                nodes[0].log.text(),
                nodes[1].log.text()
            ),
        }
    }
}
