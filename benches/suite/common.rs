//! What every section shares: latency statistics, the table, the plugin's memory, peers,
//! and an optional `perf record` of the plugin around a measured row.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};

/// Latencies of one row and its throughput.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub per_sec: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(mut lat: Vec<Duration>, wall: Duration) -> Stats {
        lat.sort_unstable();
        let pick = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        Stats { p50: pick(0.5), p99: pick(0.99), per_sec: lat.len() as f64 / wall.as_secs_f64(), n: lat.len() }
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One line of the table. `ratio` is the figure against its floor (same run).
pub struct Row {
    pub section: &'static str,
    pub name: String,
    pub figure: String,
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

impl Table {
    pub fn add(&mut self, section: &'static str, name: impl Into<String>, figure: impl Into<String>) -> &mut Row {
        self.rows.push(Row {
            section,
            name: name.into(),
            figure: figure.into(),
            ratio: None,
            goal: String::new(),
            met: None,
        });
        let row = self.rows.last_mut().expect("just pushed");
        println!("  {:<52} {}", row.name, row.figure);
        row
    }

    pub fn print(&self) {
        println!("\n| section | row | figure | vs floor | goal | met |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.section,
                r.name,
                r.figure,
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.goal,
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
    }
}

impl Row {
    pub fn ratio(&mut self, r: f64) -> &mut Row {
        self.ratio = Some(r);
        self
    }
    pub fn goal(&mut self, goal: impl Into<String>, met: bool) -> &mut Row {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of a process so far (user + system), in µs.
pub fn cpu_us(pid: Option<u32>) -> f64 {
    let stat = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok()).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<f64>() * 1e6 / 100.0
}

/// `n` distinct peers (keys from SHA-256 of their index).
pub fn peers(n: usize) -> Vec<PublicKey> {
    let secp = Secp256k1::new();
    (0..n)
        .map(|i| {
            let sk = SecretKey::from_slice(sha256::Hash::hash(&(i as u64 + 1000).to_be_bytes()).as_byte_array())
                .expect("a hash is a valid key");
            PublicKey::from_secret_key(&secp, &sk)
        })
        .collect()
}

/// `env` as a number, or `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `perf record` of the plugin for one row, when `LSPS1_BENCH_PERF=<dir>` is set and perf
/// works here. Stopped (SIGINT, so it writes its file) on drop.
pub struct Profile(Option<Child>);

impl Profile {
    pub fn start(pid: Option<u32>, name: &str) -> Profile {
        let (Some(dir), Some(pid)) = (std::env::var_os("LSPS1_BENCH_PERF"), pid) else {
            return Profile(None);
        };
        let mut out = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&out);
        out.push(format!("{}.data", name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
        // `LSPS1_BENCH_PERF_DWARF=1`: call graphs from DWARF (the release build has no frame
        // pointers), heavier but with callers.
        let graph = if std::env::var_os("LSPS1_BENCH_PERF_DWARF").is_some() { "--call-graph=dwarf" } else { "-g" };
        let child = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "999", graph, "-q", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        std::thread::sleep(Duration::from_millis(300));
        Profile(child)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}
