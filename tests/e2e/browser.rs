//! The operator's page in a real browser: the distribution's headless Chromium loads it from
//! the plugin under the stand-in, a rune is typed in, the orders the test made are seen, one
//! is opened, an unpaid one is cancelled through the page (with its confirmation step), and
//! nothing is reported on the console: no error, no exception, no CSP violation. A
//! screenshot of each page is kept in `target/browser-screenshots/`.
//!
//! Chromium is driven over `--remote-debugging-pipe` (DevTools protocol messages as JSON,
//! NUL-terminated, on fds 3 and 4): nothing to download, no port opened. Without Chromium
//! the test says why and passes, unless `LSPS1_REQUIRE_BROWSER=1` (set by `.ci/run`).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::console::{console_addr, console_builder, read_only};
use crate::lifecycle::{assert_preimage, create, params, pay_whole, wait_state};
use crate::standin::peer;

const WAIT: Duration = Duration::from_secs(20);

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LSPS1_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A headless Chromium and one attached page.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Events seen while waiting for answers.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fresh descriptors, owned from here on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch(path: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (to_read, to_write) = pipe();
        let (from_read, from_write) = pipe();
        let (r, w) = (to_read.into_raw_fd(), from_write.into_raw_fd());
        let mut cmd = Command::new(path);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // SAFETY: the parent's copies of the child's ends, closed now.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
        let (tx, rx) = mpsc::channel();
        let mut reader = std::fs::File::from(from_read);
        std::thread::spawn(move || {
            let mut buf = vec![];
            let mut chunk = vec![0u8; 1 << 16];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(i) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Browser {
            child,
            to: std::fs::File::from(to_write),
            from: rx,
            next_id: 0,
            session: None,
            events: vec![],
            _profile: profile,
        }
    }

    fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut m = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            m["sessionId"] = json!(s);
        }
        let mut bytes = m.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.from.recv_timeout(left).unwrap_or_else(|_| panic!("no answer to {method}"));
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.events.push(msg);
        }
    }

    fn attach(&mut self) {
        let targets = self.send("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .expect("a page target")["targetId"]
            .clone();
        let s = self.send("Target.attachToTarget", json!({"targetId": page, "flatten": true}));
        self.session = Some(s["sessionId"].as_str().unwrap().to_string());
        for m in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.send(m, json!({}));
        }
        // A CSP violation is also reported to the console, where it is counted.
        self.send(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "document.addEventListener('securitypolicyviolation', e => console.error('CSP violation', e.violatedDirective, e.blockedURI));"}),
        );
        self.send(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    fn js(&mut self, expr: &str) -> Value {
        let r = self.send("Runtime.evaluate", json!({"expression": expr, "awaitPromise": true, "returnByValue": true}));
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    fn wait_for(&mut self, cond: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        while self.js(&format!("!!({cond})")) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what} ({cond})");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The whole page as a PNG in `dir`, at the page's full height.
    fn screenshot(&mut self, dir: &std::path::Path, name: &str, width: u32, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.send(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
        let metrics = |h: u64| json!({"width": width, "height": h, "deviceScaleFactor": 1, "mobile": width < 600});
        self.send("Emulation.setDeviceMetricsOverride", metrics(900));
        std::thread::sleep(Duration::from_millis(300));
        let h = self.js("Math.ceil(document.documentElement.scrollHeight)").as_u64().unwrap_or(900).clamp(600, 6000);
        self.send("Emulation.setDeviceMetricsOverride", metrics(h));
        std::thread::sleep(Duration::from_millis(300));
        let shot = self.send("Page.captureScreenshot", json!({"format": "png"}));
        use bitcoin::base64::Engine as _;
        let png = bitcoin::base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-{width}-{scheme}.png")), png).unwrap();
        let wide = self.js("document.documentElement.scrollWidth > window.innerWidth + 1");
        assert_eq!(wide, json!(false), "{name} at {width} px scrolls sideways");
    }

    /// Console errors, exceptions and error-level log entries seen so far.
    fn problems(&mut self) -> Vec<String> {
        while let Ok(m) = self.from.try_recv() {
            self.events.push(m);
        }
        let mut out = vec![];
        for e in &self.events {
            let p = &e["params"];
            let text = match e["method"].as_str() {
                Some("Runtime.consoleAPICalled")
                    if matches!(p["type"].as_str(), Some("error" | "assert" | "warning")) =>
                {
                    format!("console.{}: {}", p["type"], p["args"])
                }
                Some("Runtime.exceptionThrown") => format!("exception: {}", p["exceptionDetails"]),
                Some("Log.entryAdded") if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) => {
                    format!("log {}: {} {}", p["entry"]["source"], p["entry"]["text"], p["entry"]["url"])
                }
                _ => continue,
            };
            out.push(text);
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_in_headless_chromium() {
    let Some(path) = chromium() else {
        assert!(
            std::env::var("LSPS1_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "LSPS1_REQUIRE_BROWSER=1 but no Chromium (apt-get install chromium, or set LSPS1_CHROMIUM)"
        );
        eprintln!(
            "SKIPPED the_page_in_headless_chromium: no Chromium (apt-get install chromium, or set LSPS1_CHROMIUM)"
        );
        return;
    };
    let s = console_builder().start().await;
    let base = format!("http://{}/", console_addr(&s).await);
    let rune = s.create_rune(json!([["method^lsps1-"]]));
    let _read_only = s.create_rune(read_only());
    // One completed order (a lease) and one left unpaid, to cancel through the page.
    let (_, client) = peer(71);
    s.peer_connects(&client).await;
    let paid = create(&s, &client, params(400_000, 0, 1)).await;
    assert_preimage(&pay_whole(&s, &paid).await.outcome(WAIT).await, &paid);
    wait_state(&s, &client, &paid.order_id, "COMPLETED", "PAID").await;
    let unpaid = create(&s, &client, params(300_000, 0, 1)).await;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let (paid_id, unpaid_id) = (paid.order_id.clone(), unpaid.order_id.clone());
    let problems = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&path);
        b.attach();
        b.send("Page.navigate", json!({"url": format!("{base}#/overview")}));
        b.wait_for("document.readyState === 'complete' && document.getElementById('rune-input')", "the rune form");
        b.screenshot(&dir, "rune", 390, false);
        b.js(&format!(
            "document.getElementById('rune-input').value = {}; document.getElementById('rune-submit').click()",
            json!(rune)
        ));
        b.wait_for("document.querySelector('.chart')", "the overview's charts");
        b.screenshot(&dir, "overview", 1280, false);
        b.screenshot(&dir, "overview", 390, true);

        b.js("location.hash = '#/orders'");
        b.wait_for(
            &format!(
                "document.querySelector('#orders-table tr[data-order-id={}]') && document.querySelector('#orders-table tr[data-order-id={}]')",
                json!(paid_id),
                json!(unpaid_id)
            ),
            "both orders in the list",
        );
        b.screenshot(&dir, "orders", 1280, false);
        b.screenshot(&dir, "orders", 390, false);
        // The search box finds an order by the start of its id.
        b.js(&format!(
            "document.getElementById('filter-q').value = {}; document.getElementById('filter-apply').click()",
            json!(&unpaid_id[..8])
        ));
        b.wait_for(
            &format!(
                "document.querySelectorAll('#orders-table tr[data-order-id]').length === 1 && document.querySelector('#orders-table tr[data-order-id={}]')",
                json!(unpaid_id)
            ),
            "the search by id",
        );
        b.js("location.hash = '#/orders'");
        b.wait_for(&format!("document.querySelector('#orders-table tr[data-order-id={}]')", json!(paid_id)), "the whole list");

        b.js(&format!("document.querySelector('#orders-table tr[data-order-id={}] a').click()", json!(paid_id)));
        b.wait_for(&format!("location.hash === '#/order/{paid_id}' && document.getElementById('allow-close')"), "the paid order");
        b.screenshot(&dir, "order", 1280, false);
        assert_eq!(b.js("document.body.textContent.includes('[object Object]')"), json!(false), "details shown as text");

        b.js("location.hash = '#/leases'");
        b.wait_for(&format!("document.querySelector('#leases-table tr[data-order-id={}]')", json!(paid_id)), "its lease");
        b.screenshot(&dir, "leases", 1280, false);
        b.js("location.hash = '#/held'");
        b.wait_for("document.getElementById('held-table') || document.body.textContent.includes('Nothing is held')", "held now");
        b.screenshot(&dir, "held", 1280, false);

        // Cancel the unpaid order: the page asks first, then the order reads FAILED.
        b.js(&format!("location.hash = '#/order/{unpaid_id}'"));
        b.wait_for("document.getElementById('cancel-order')", "the cancel button");
        b.js("document.getElementById('cancel-order').click()");
        b.wait_for("document.getElementById('confirm-dialog').open", "the confirmation");
        b.screenshot(&dir, "cancel-confirm", 1280, false);
        b.js("document.getElementById('confirm-action').click()");
        b.wait_for(
            &format!("document.getElementById('status-message').textContent.includes({})", json!(format!("{unpaid_id} cancelled"))),
            "the cancellation",
        );
        b.wait_for("!document.getElementById('cancel-order')", "the page reloaded without the button");
        b.screenshot(&dir, "cancelled", 1280, false);
        b.problems()
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "the page reported problems:\n{}", problems.join("\n"));
    let o = s.command("lsps1-getorder", json!({"order_id": unpaid.order_id})).await.unwrap();
    assert_eq!(o["order"]["order_state"], "FAILED");
    assert_eq!(o["failure_reason"], "cancelled");
    s.assert_no_fatal();
}
