//! A real `redis-server` on a free loopback port, for the tests that need
//! a fleet's store (installed by `make deps`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis server that lives as long as this value.
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
    killed: bool,
}

impl Redis {
    pub fn start_on(port: u16) -> Redis {
        Self::start_with(port, &[])
    }

    /// A server on `port` with more arguments (cluster mode, say).
    pub fn start_with(port: u16, args: &[&str]) -> Redis {
        let dir = super::temp_path("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (installed by `make deps`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child, dir, killed: false }
    }

    pub fn start() -> Redis {
        Self::start_on(super::free_port())
    }

    /// Stops the server (as an outage would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }

    fn alive(&self) -> bool {
        !self.killed
    }

    /// Stops the server without closing its connections (a hung Redis), or
    /// lets it go on.
    pub fn pause(&self, paused: bool) {
        assert!(self.signal(if paused { "-STOP" } else { "-CONT" }), "redis-server is gone");
    }

    fn signal(&self, sig: &str) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args([sig, &pid]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Redis Cluster: three masters with a replica each, created with
/// `redis-cli --cluster create`; a master that dies is replaced by its
/// replica within a few seconds (`cluster-node-timeout` 1 s).
#[allow(dead_code)] // not every user of this file starts a cluster
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

#[allow(dead_code)]
impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<Redis> = (0..6)
            .map(|_| {
                let (port, bus) = (super::free_port(), super::free_port());
                let conf = format!("nodes-{port}.conf");
                // A replica may take over however long it was cut off, and
                // syncs at once (no wait for other replicas).
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-replica-validity-factor",
                    "0",
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                Redis::start_with(port, &args)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli (installed by `make deps`)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        // Every replica has its master's data before anything can fail.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(0..cluster.nodes.len()).all(|i| {
            let info = cluster.cli(i, &["info", "replication"]);
            info.contains("role:master") || info.contains("master_link_status:up")
        }) {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis-cluster://` with the masters' addresses, as `--store` takes it.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    fn cli(&self, node: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.nodes[node].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until every live node says the cluster is ok, every slot is
    /// served, and no dead node is still a master.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let dead: Vec<String> =
            self.nodes.iter().filter(|n| !n.alive()).map(|n| format!("127.0.0.1:{}@", n.port)).collect();
        loop {
            let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].alive()).collect();
            let ok = live.iter().all(|&i| {
                let info = self.cli(i, &["cluster", "info"]);
                let nodes = self.cli(i, &["cluster", "nodes"]);
                let replaced = nodes.lines().filter(|l| dead.iter().any(|d| l.contains(d.as_str()))).all(|l| {
                    l.contains("slave")
                        || (l.contains(",fail") && !l.contains("fail?") && l.split_whitespace().count() <= 8)
                });
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") && replaced
            });
            if ok && !live.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok: {}",
                live.first().map(|&i| self.cli(i, &["cluster", "nodes"])).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the master that serves `key` (its replica takes over), and
    /// returns its index.
    pub fn kill_master_of(&mut self, key: &str) -> usize {
        let live = (0..self.nodes.len()).find(|&i| self.nodes[i].alive()).expect("a live node");
        let slot = self.cli(live, &["cluster", "keyslot", key]).trim().parse::<u16>().expect("a slot");
        let nodes = self.cli(live, &["cluster", "nodes"]);
        let port = nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find(|l| {
                l.split_whitespace().skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
            })
            .and_then(|l| l.split_whitespace().nth(1)?.split(['@', ':']).nth(1)?.parse::<u16>().ok())
            .expect("the slot's master");
        let index = self.nodes.iter().position(|n| n.port == port).expect("a node of ours");
        self.nodes[index].kill();
        index
    }
}
