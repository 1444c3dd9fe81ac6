//! A real `redis-server` on a free loopback port, for the tests that need
//! a fleet's store (installed by `make deps`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis server that lives as long as this value.
pub struct Redis {
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Redis {
    pub fn start_on(port: u16) -> Redis {
        let dir = super::temp_path("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
        Redis { port, child, dir }
    }

    pub fn start() -> Redis {
        Self::start_on(super::free_port())
    }

    /// Stops the server (as an outage would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
