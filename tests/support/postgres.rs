//! A real PostgreSQL server for tests: the distribution's binaries (`initdb`, `postgres`),
//! a cluster in a temporary directory, listening on a loopback port and a unix socket in that
//! directory, started by the test and stopped when dropped. PostgreSQL refuses to run as root,
//! so under root the server runs as the `postgres` user the Debian package creates.
//!
//! `Postgres::start` says why when it cannot (no binaries, no unprivileged user): the caller
//! skips with that reason, unless `LSPS1_REQUIRE_POSTGRES=1` (set by `.ci/run`).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    bin: PathBuf,
    uid: Option<(u32, u32)>,
}

/// The directory holding `initdb` and `postgres`: `LSPS1_PG_BIN`, PATH, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("LSPS1_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    if let Ok(path) = std::env::var("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() && d.join("postgres").is_file() {
                // Debian links the server into PATH; its own directory has createdb too.
                return std::fs::canonicalize(d.join("initdb")).ok()?.parent().map(Path::to_path_buf);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The user the server runs as when the tests run as root: `postgres`.
fn unprivileged() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").map_err(|e| e.to_string())?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no `postgres` user to run the server as".into());
    }
    // SAFETY: pw is non-null.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Postgres {
    /// Why PostgreSQL tests cannot run here, or `None`.
    pub fn unavailable() -> Option<String> {
        if bin_dir().is_none() {
            return Some("no PostgreSQL server binaries (apt-get install postgresql, or set LSPS1_PG_BIN)".into());
        }
        unprivileged().err()
    }

    /// Start a fresh cluster, or say why not.
    pub fn start() -> Result<Postgres, String> {
        let bin = bin_dir().ok_or_else(|| "no PostgreSQL server binaries".to_string())?;
        let uid = unprivileged()?;
        let dir = tempfile::Builder::new().prefix("lsps1-pg-").tempdir().map_err(|e| e.to_string())?;
        if let Some((u, g)) = uid {
            // SAFETY: a path we just made; chown to the server's user.
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            if unsafe { libc::chown(c.as_ptr(), u, g) } != 0 {
                return Err(format!("chown {}: {}", dir.path().display(), std::io::Error::last_os_error()));
            }
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        }
        let mut pg = Postgres { port: free_port()?, dir, child: None, bin, uid };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args(["-D", &data.to_string_lossy(), "-U", "lsps1", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        pg.run()?;
        Ok(pg)
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.stdin(Stdio::null()).env("LC_ALL", "C");
        let uid = self.uid;
        // SAFETY: async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if let Some((u, g)) = uid
                    && (libc::setgid(g) != 0 || libc::setuid(u) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // After the credentials change (which clears it): the server goes when the
                // thread that started it does, so no test run leaves one behind.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The unix socket directory (also the cluster's parent directory).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Start (or start again) the server on the same port and data.
    pub fn run(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("server.log")).map_err(|e| e.to_string())?;
        if let Some((u, g)) = self.uid {
            let c = std::ffi::CString::new(self.dir.path().join("server.log").as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a file we just made.
            unsafe { libc::chown(c.as_ptr(), u, g) };
        }
        let child = self
            .command("postgres")
            .args(["-D", &self.data().to_string_lossy()])
            .args(["-p", &self.port.to_string(), "-k", &self.dir.path().to_string_lossy()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Accepting connections: the startup packet may still be refused for a moment.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("postgres exited ({status}): {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("postgres did not listen within 30 s: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server (fast shutdown), keeping its data: an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: the child's pid; SIGINT is PostgreSQL's fast shutdown.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }

    /// Serve TLS with this certificate and key (PEM) from now on: restarts the server.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        self.stop();
        let data = self.data();
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&cert, cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(&key, key_pem).map_err(|e| e.to_string())?;
        // PostgreSQL serves a key only its own user can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
        if let Some((u, g)) = self.uid {
            for f in [&cert, &key] {
                let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
                // SAFETY: files we just wrote.
                unsafe { libc::chown(c.as_ptr(), u, g) };
            }
        }
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).map_err(|e| e.to_string())?;
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .map_err(|e| e.to_string())?;
        self.run()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A URL for database `db` over the loopback port.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://lsps1@127.0.0.1:{}/{db}", self.port)
    }

    /// Create database `db` (`createdb`).
    pub fn create_db(&self, db: &str) -> Result<(), String> {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "lsps1", db])
            .output()
            .map_err(|e| format!("createdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("createdb {db}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }
}

/// One server for a whole test binary, started on first use by a thread that lives as long
/// as the process (the server goes with it), and a fresh database on it for each caller.
/// `Err` is the reason to skip; with `LSPS1_REQUIRE_POSTGRES=1` it panics instead.
pub fn fresh_database() -> Result<String, String> {
    static SHARED: std::sync::OnceLock<Result<Postgres, String>> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pg = SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Postgres::start());
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap_or_else(|_| Err("the server thread died".into()))
    });
    let pg = match pg {
        Ok(pg) => pg,
        Err(reason) => {
            if std::env::var("LSPS1_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("LSPS1_REQUIRE_POSTGRES=1 but PostgreSQL cannot run here: {reason}");
            }
            return Err(reason.clone());
        }
    };
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    pg.create_db(&name)?;
    Ok(pg.url(&name))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
