//! A real Redis Cluster on loopback for the tests: six `redis-server --cluster-enabled yes`
//! (three masters, a replica each) joined by `redis-cli --cluster create`, in a temporary
//! directory, every process killed when the guard drops. Without redis-server or redis-cli
//! the test prints `SKIPPED: ...` (fails under `WSLOOP_REQUIRE_EXTERNAL=1`). Included beside
//! `common` and `harness` (tests/common/cluster.rs), whose helpers it uses.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    external, redis_answers_as, redis_command, redis_program, wait_until, Lines, Resp, TempDir,
};

/// How long a master may be silent before its replica takes over (`cluster-node-timeout`).
pub const NODE_TIMEOUT_MS: u64 = 1_000;
/// The bound on the cluster forming, or settling after a failover.
pub const SETTLE: Duration = Duration::from_secs(30);

/// One redis-server of the cluster.
pub struct RedisNode {
    pub port: u16,
    child: Option<Child>,
    pub log: Lines,
}

/// Six redis-servers forming a cluster of three masters with a replica each.
pub struct RedisCluster {
    pub dir: TempDir,
    pub nodes: Vec<RedisNode>,
}

/// Ports handed to a cluster node by this test process: tests run in parallel threads and
/// would otherwise pick the same free port before either server has bound it.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port `p`, reserved for this process, such that `p` and its cluster bus port `p + 10000`
/// were both free a moment ago (the kernel's ephemeral ports are too high for the bus port to
/// exist).
fn free_cluster_port() -> u16 {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::process::id() as u64 ^ crate::common::now_ms();
    for i in 0..10_000u64 {
        let port = 20_000 + ((seed.wrapping_mul(7_919) + i * 37) % 20_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !reserved.contains(&port) && free(port) && free(port + 10_000) {
            reserved.insert(port);
            return port;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

impl RedisCluster {
    /// Starts and joins the cluster; `None` (test skipped) without redis-server or redis-cli.
    pub fn start() -> Option<RedisCluster> {
        let server = redis_program()?;
        let cli = external(
            "redis-cli",
            "the Redis Cluster tests create the cluster with redis-cli --cluster create",
        )?;
        let dir = TempDir::new("redis-cluster");
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::new(),
        };
        while cluster.nodes.len() < 6 {
            let port = free_cluster_port();
            if let Ok(node) = cluster.spawn(&server, port) {
                cluster.nodes.push(node);
            }
        }
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_settled();
        cluster.wait_replicas_synced();
        Some(cluster)
    }

    fn spawn(&self, server: &PathBuf, port: u16) -> Result<RedisNode, String> {
        let conf = self.dir.file(&format!("redis-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\nsave \"\"\nappendonly no\n\
             daemonize no\nlogfile \"\"\ndir {dir}\ncluster-enabled yes\n\
             cluster-config-file {dir}/nodes-{port}.conf\ncluster-node-timeout {NODE_TIMEOUT_MS}\n\
             cluster-replica-validity-factor 0\nrepl-diskless-sync-delay 0\n",
            dir = self.dir.path().display()
        );
        std::fs::write(&conf, text).expect("write redis.conf");
        let mut child = Command::new(server)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", server.display()));
        let tag = format!("redis-cluster :{port}");
        let log = Lines::capture(child.stdout.take().expect("stdout"), tag.clone());
        let _err = Lines::capture(child.stderr.take().expect("stderr"), tag);
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} on port {port}"));
            }
            if redis_answers_as(port, child.id()) {
                return Ok(RedisNode {
                    port,
                    child: Some(child),
                    log,
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer from our redis-server on port {port}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ports of the running nodes.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// What wsloop is given: two of the nodes as seeds.
    pub fn seeds(&self) -> String {
        self.nodes[..2]
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One command on a live node.
    pub fn command(&self, args: &[&str]) -> Resp {
        let port = self.live_ports()[0];
        redis_command(port, args).unwrap_or_else(|e| panic!("redis :{port} {args:?}: {e}"))
    }

    /// The master port of each slot range, as a live node sees it: (first, last, port).
    pub fn slot_map(&self) -> Vec<(i64, i64, u16)> {
        let Resp::Array(Some(ranges)) = self.command(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS: unexpected reply");
        };
        ranges
            .into_iter()
            .map(|range| match range {
                Resp::Array(Some(fields)) => match fields.as_slice() {
                    [Resp::Int(first), Resp::Int(last), Resp::Array(Some(master)), ..] => {
                        match master.get(1) {
                            Some(Resp::Int(port)) => (*first, *last, *port as u16),
                            other => panic!("CLUSTER SLOTS master {other:?}"),
                        }
                    }
                    other => panic!("CLUSTER SLOTS range {other:?}"),
                },
                other => panic!("CLUSTER SLOTS entry {other:?}"),
            })
            .collect()
    }

    /// The master port that serves `key` (or a shard channel of that name).
    pub fn master_of(&self, key: &str) -> u16 {
        let Resp::Int(slot) = self.command(&["CLUSTER", "KEYSLOT", key]) else {
            panic!("CLUSTER KEYSLOT {key}: unexpected reply");
        };
        self.slot_map()
            .into_iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, port)| port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// SIGKILL to the node on `port`, as in a crash.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node on that port");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every replica has its master's data (`master_link_status:up`), so that a
    /// failover loses only what was written in the last moment.
    pub fn wait_replicas_synced(&self) {
        let live = self.live_ports();
        wait_until("the replicas to sync", SETTLE, || {
            for port in &live {
                let info =
                    redis_command(*port, &["INFO", "replication"]).map_err(|e| e.to_string())?;
                let Resp::Bulk(Some(text)) = &info else {
                    return Err(format!(":{port} INFO {info:?}"));
                };
                if text.contains("role:slave") && !text.contains("master_link_status:up") {
                    return Err(format!(":{port} replica not in sync"));
                }
            }
            Ok(())
        });
    }

    /// Waits until every live node says `cluster_state:ok` and the slot map covers all 16384
    /// slots with live masters only.
    pub fn wait_settled(&self) {
        let live = self.live_ports();
        wait_until("the Redis Cluster to settle", SETTLE, || {
            for port in &live {
                let info = redis_command(*port, &["CLUSTER", "INFO"]).map_err(|e| e.to_string())?;
                let Resp::Bulk(Some(text)) = &info else {
                    return Err(format!(":{port} CLUSTER INFO {info:?}"));
                };
                if !text.contains("cluster_state:ok") {
                    return Err(format!(":{port} not ok yet"));
                }
            }
            let map = self.slot_map();
            let covered: i64 = map.iter().map(|(first, last, _)| last - first + 1).sum();
            let dead = map.iter().find(|(_, _, port)| !live.contains(port));
            match (covered, dead) {
                (16_384, None) => Ok(()),
                _ => Err(format!("slot map {map:?}")),
            }
        });
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
