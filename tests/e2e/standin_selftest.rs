//! Self-tests of the lightningd stand-in's lifecycle machinery (chain, peers, channels,
//! HTLCs, restarts), independent of what the plugin does: they call the RPC socket directly
//! and drive a tiny raw Python plugin (`FAKE_PLUGIN`, like the fixtures' recorder) where a
//! plugin must hold or answer hooks. Without `python3` those tests are skipped (with a note).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::standin::{HtlcOutcome, HtlcSpec, Reply, StandIn, fixture, peer};

/// A raw plugin: registers `htlc_accepted` and `rpc_command` (close), subscribes to the
/// lifecycle topics, declares `fake_event`, is dynamic. It holds every `htlc_accepted` call
/// until `<lightning-dir>/answer-<payment_hash>` exists (checked on the call and on every
/// notification), then answers with that file's JSON (`{"result": ...}` or `{"error": ...}`).
/// It logs what it gets; on `block_added` it emits `fake_event` and an undeclared topic.
const FAKE_PLUGIN: &str = r#"
import json, os, sys

held = []
ldir = None

def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n\n")
    sys.stdout.flush()

def log(msg):
    send({"jsonrpc": "2.0", "method": "log", "params": {"level": "info", "message": msg}})

def try_answer_held():
    global held
    keep = []
    for m in held:
        p = os.path.join(ldir, "answer-" + m["params"]["htlc"]["payment_hash"])
        if os.path.exists(p):
            with open(p) as f:
                a = json.load(f)
            a.update({"jsonrpc": "2.0", "id": m["id"]})
            send(a)
        else:
            keep.append(m)
    held = keep

def frames():
    buf = b""
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            frame, buf = buf.split(b"\n\n", 1)
            if frame.strip():
                yield json.loads(frame)

for msg in frames():
    method, mid = msg.get("method"), msg.get("id")
    if method == "getmanifest":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "options": [], "rpcmethods": [],
            "hooks": [{"name": "htlc_accepted"}, {"name": "rpc_command", "filters": ["close"]}],
            "subscriptions": ["block_added", "connect", "disconnect", "channel_state_changed", "shutdown"],
            "notifications": [{"method": "fake_event"}],
            "dynamic": True}})
    elif method == "init":
        ldir = msg["params"]["configuration"]["lightning-dir"]
        log("init startup=%s" % json.dumps(msg["params"]["configuration"]["startup"]))
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
    elif method == "htlc_accepted":
        log("htlc_accepted " + json.dumps(msg))
        held.append(msg)
        try_answer_held()
    elif method == "rpc_command":
        send({"jsonrpc": "2.0", "id": mid, "result": {"return": {"result": {"hook_id": mid, "params": msg["params"]}}}})
    elif mid is None:
        log("notified %s %s" % (method, json.dumps(msg["params"])))
        if method == "block_added":
            send({"jsonrpc": "2.0", "method": "fake_event", "params": {"height": msg["params"]["block_added"]["height"]}})
            send({"jsonrpc": "2.0", "method": "undeclared_topic", "params": {}})
        try_answer_held()
        if method == "shutdown":
            sys.exit(0)
"#;

const T: Duration = Duration::from_secs(10);

fn have_python() -> bool {
    std::process::Command::new("python3").args(["-c", "pass"]).status().is_ok_and(|s| s.success())
}

/// The fake plugin's script, in its own temp dir (kept alive by the returned guard).
fn fake_plugin() -> Option<(tempfile::TempDir, PathBuf)> {
    if !have_python() {
        eprintln!("python3 not found: skipping this stand-in self-test");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fake_plugin.py");
    std::fs::write(&p, FAKE_PLUGIN).unwrap();
    Some((d, p))
}

async fn start_fake(script: &std::path::Path) -> StandIn {
    StandIn::builder().program("python3", &[script.to_str().unwrap()]).start().await
}

/// The fake plugin when python3 exists, else the real one (for tests that only use the RPC
/// socket and lightningd-side state).
async fn start_any() -> (StandIn, Option<tempfile::TempDir>) {
    match fake_plugin() {
        Some((d, p)) => (start_fake(&p).await, Some(d)),
        None => (StandIn::builder().start().await, None),
    }
}

/// One call on the stand-in's lightning-rpc socket; the whole JSON-RPC response.
async fn rpc(s: &StandIn, method: &str, params: Value) -> Value {
    let mut st = UnixStream::connect(s.dir.join("lightning-rpc")).await.unwrap();
    let req = json!({"jsonrpc": "2.0", "id": format!("selftest:{method}#1"), "method": method, "params": params});
    st.write_all(req.to_string().as_bytes()).await.unwrap();
    let mut buf = vec![];
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout(T, st.read(&mut chunk)).await.expect("rpc answer").unwrap();
        assert!(n > 0, "{method}: connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\n\n") {
            return serde_json::from_slice(&buf).unwrap();
        }
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn preimage(n: u8) -> (String, String) {
    let p = [n; 32];
    (hex::encode(p), sha256::Hash::hash(&p).to_string())
}

fn answer(s: &StandIn, hash: &str, a: Value) {
    std::fs::write(s.dir.join(format!("answer-{hash}")), a.to_string()).unwrap();
}

#[tokio::test]
async fn selftest_connect_reachable_unreachable() {
    let (s, _g) = start_any().await;
    let (_, p) = peer(7);
    let e = rpc(&s, "connect", json!({"id": p.to_string()})).await;
    assert_eq!(e["error"], fixture("rpc/connect.err-no-address-known.json")["error"]);
    let e = rpc(&s, "connect", json!({"id": p.to_string(), "host": "127.0.0.1", "port": 36531})).await;
    assert_eq!(e["error"], fixture("rpc/connect.err-connection-refused.json")["error"]);
    assert!(!s.is_connected(&p));

    s.set_reachable(&p, true);
    let ok = rpc(&s, "connect", json!({"id": format!("{p}@127.0.0.1:33643")})).await;
    let want = fixture("rpc/connect.ok.json")["result"].clone();
    assert_eq!(keys(&ok["result"]), keys(&want));
    assert_eq!(ok["result"]["id"], json!(p.to_string()));
    assert_eq!(ok["result"]["direction"], json!("out"));
    assert_eq!(ok["result"]["address"], want["address"]);
    assert!(s.is_connected(&p));
    let again = rpc(&s, "connect", json!([p.to_string()])).await;
    assert_eq!(keys(&again["result"]), keys(&fixture("rpc/connect.ok-already-connected.json")["result"]));

    let d = rpc(&s, "disconnect", json!({"id": p.to_string(), "force": true})).await;
    assert_eq!(d["result"], json!({}));
    let d = rpc(&s, "disconnect", json!({"id": p.to_string()})).await;
    assert_eq!(d["error"]["code"], json!(-32602));
}

#[tokio::test]
async fn selftest_fundchannel_listpeerchannels_lockin() {
    let (s, _g) = start_any().await;
    let (_, p) = peer(8);
    let open = json!({"id": p.to_string(), "amount": 1000000, "feerate": "7500perkw", "announce": false,
        "push_msat": 100000000, "mindepth": 1, "reserve": 0});

    // Not connected, no address: the recorded error, naming this peer.
    let e = rpc(&s, "fundchannel", open.clone()).await;
    let mut want = fixture("rpc/fundchannel.err-not-connected.json")["error"].clone();
    want["data"]["id"] = json!(p.to_string());
    assert_eq!(e["error"], want);
    assert_eq!(rpc(&s, "listpeerchannels", json!({})).await["result"], json!({"channels": []}));

    s.connect(&p);
    let r = rpc(&s, "fundchannel", open.clone()).await["result"].clone();
    let rec = fixture("rpc/fundchannel.ok.json")["result"].clone();
    assert_eq!(keys(&r), keys(&rec));
    assert_eq!(r["channel_type"], rec["channel_type"]);
    assert_eq!(r["outnum"], json!(0));
    let tx: bitcoin::Transaction = bitcoin::consensus::encode::deserialize_hex(r["tx"].as_str().unwrap()).unwrap();
    assert_eq!(json!(tx.compute_txid().to_string()), r["txid"]);
    assert_eq!(tx.output[0].value.to_sat(), 1_000_000);
    let txid = r["txid"].as_str().unwrap().to_string();
    let cid = r["channel_id"].as_str().unwrap().to_string();
    // channel_id = the txid's bytes reversed (outnum 0), as in the recording.
    let mut rev = hex::decode(&txid).unwrap();
    rev.reverse();
    assert_eq!(hex::encode(rev), cid);
    assert_eq!(s.calls("fundchannel").len(), 2);

    // listpeerchannels: the recorded awaiting-lockin channel's shape and balances.
    let lpc = rpc(&s, "listpeerchannels", json!({"id": p.to_string()})).await["result"]["channels"].clone();
    assert_eq!(lpc.as_array().unwrap().len(), 1);
    let c = &lpc[0];
    let mut rec = fixture("rpc/listpeerchannels.ok-awaiting-lockin.json")["result"]["channels"][0].clone();
    rec["funding"].as_object_mut().unwrap().remove("psbt");
    assert_eq!(keys(c), keys(&rec));
    assert_eq!(keys(&c["funding"]), keys(&rec["funding"]));
    for k in [
        "state",
        "private",
        "opener",
        "to_us_msat",
        "total_msat",
        "our_reserve_msat",
        "their_reserve_msat",
        "spendable_msat",
        "receivable_msat",
        "funding",
        "channel_type",
        "features",
        "status",
        "updates",
    ] {
        assert_eq!(c[k], rec[k], "{k}");
    }
    assert_eq!(c["funding_txid"], json!(txid));
    assert_eq!(c["channel_id"], json!(cid));
    assert!(c.get("short_channel_id").is_none());
    assert!(c["alias"].get("remote").is_none());

    let bad = rpc(&s, "listpeerchannels", json!({"id": "02xx"})).await;
    assert_eq!(bad["error"], fixture("rpc/listpeerchannels.err-bad-id.json")["error"]);
    let (_, other) = peer(9);
    assert_eq!(rpc(&s, "listpeerchannels", json!({"id": other.to_string()})).await["result"]["channels"], json!([]));

    // One block: mined and locked in (mindepth 1), as in listpeerchannels.ok-one-peer.json.
    assert_eq!(s.height(), 101);
    s.mine(1).await;
    let c = rpc(&s, "listpeerchannels", json!({})).await["result"]["channels"][0].clone();
    assert_eq!(c["state"], json!("CHANNELD_NORMAL"));
    assert_eq!(c["short_channel_id"], json!("102x1x0"));
    assert_eq!(c["status"], json!(["CHANNELD_NORMAL:Channel ready for use."]));
    assert!(c["alias"]["remote"].is_string());
    assert_eq!(c["state_changes"][0]["message"], json!("Lockin complete"));
    assert_eq!(rpc(&s, "getinfo", json!({})).await["result"]["blockheight"], json!(102));
    let by_scid = rpc(&s, "listpeerchannels", json!({"short_channel_id": "102x1x0"})).await;
    assert_eq!(by_scid["result"]["channels"].as_array().unwrap().len(), 1);
    let peers = rpc(&s, "listpeers", json!({"id": p.to_string()})).await;
    assert_eq!(peers["result"]["peers"][0]["num_channels"], json!(1));

    // Zero-conf: CHANNELD_NORMAL at once, no short_channel_id until mined.
    let z = rpc(
        &s,
        "fundchannel",
        json!({"id": p.to_string(), "amount": 400000, "announce": false,
        "push_msat": 10000000, "mindepth": 0}),
    )
    .await["result"]
        .clone();
    assert_eq!(z["channel_type"], fixture("rpc/fundchannel.ok-zeroconf.json")["result"]["channel_type"]);
    let zc = rpc(&s, "listpeerchannels", json!({"channel_id": z["channel_id"]})).await["result"]["channels"][0].clone();
    let rec = fixture("rpc/listpeerchannels.ok-zeroconf-unconfirmed.json")["result"]["channels"][1].clone();
    for k in [
        "state",
        "to_us_msat",
        "our_reserve_msat",
        "their_reserve_msat",
        "spendable_msat",
        "receivable_msat",
        "features",
    ] {
        assert_eq!(zc[k], rec[k], "{k}");
    }
    assert!(zc.get("short_channel_id").is_none());

    // waitblockheight: at once when reached; wakes on mine.
    assert_eq!(rpc(&s, "waitblockheight", json!({"blockheight": 100})).await["result"], json!({"blockheight": 102}));
    let e = rpc(&s, "waitblockheight", json!({"blockheight": 500, "timeout": 0})).await;
    assert_eq!(e["error"], fixture("rpc/waitblockheight.err-timeout.json")["error"]);
}

#[tokio::test]
async fn selftest_fundchannel_delayed_answer_opens_first() {
    let (s, _g) = start_any().await;
    let (_, p) = peer(10);
    s.connect(&p);
    s.set_reply("fundchannel", Reply::delay(Duration::from_secs(3), Reply::Default));
    let dir = s.dir.clone();
    let call = tokio::spawn(async move {
        let mut st = UnixStream::connect(dir.join("lightning-rpc")).await.unwrap();
        let req = json!({"jsonrpc": "2.0", "id": "x", "method": "fundchannel", "params": {"id": p.to_string(), "amount": 100000}});
        st.write_all(req.to_string().as_bytes()).await.unwrap();
        let mut b = vec![0u8; 4096];
        st.read(&mut b).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = rpc(&s, "listpeerchannels", json!({})).await["result"]["channels"].clone();
    assert_eq!(c.as_array().unwrap().len(), 1, "recorded before the delayed answer");
    assert!(!call.is_finished());
    assert!(call.await.unwrap() > 0);

    // One-shot error replies come first, with the recorded error object.
    s.push_reply("fundchannel", Reply::fixture_error("rpc/fundchannel.err-peer-rejected.json"));
    s.set_reply("fundchannel", Reply::Default);
    let e = rpc(&s, "fundchannel", json!({"id": p.to_string(), "amount": 100000})).await;
    assert_eq!(e["error"], fixture("rpc/fundchannel.err-peer-rejected.json")["error"]);
    assert!(rpc(&s, "fundchannel", json!({"id": p.to_string(), "amount": 100000})).await["result"].is_object());
    assert_eq!(s.channels().len(), 2);
}

#[tokio::test]
async fn selftest_htlc_answers_judged_like_lightningd() {
    let Some((_g, script)) = fake_plugin() else { return };
    let s = start_fake(&script).await;
    let (_, p) = peer(11);
    let mut id = 0;
    let mut spec = |n: u8| {
        let (_, hash) = preimage(n);
        let mut sp = HtlcSpec::new(&p, &hash, &"aa".repeat(32), 50_000_000, s.height() + 11);
        sp.id = id;
        id += 1;
        sp
    };

    // Held: the call is the recorded one with our fields; listhtlcs says RCVD_ADD_ACK_REVOCATION.
    let held = s.send_htlc(spec(1)).await;
    let line = s.wait_log(Some("info"), "htlc_accepted ").await;
    let call: Value = serde_json::from_str(line.strip_prefix("htlc_accepted ").unwrap()).unwrap();
    let rec = fixture("hooks/htlc_accepted.final-hop.json");
    assert_eq!(keys(&call), keys(&rec));
    assert_eq!(keys(&call["params"]["onion"]), keys(&rec["params"]["onion"]));
    assert_eq!(keys(&call["params"]["htlc"]), keys(&rec["params"]["htlc"]));
    assert!(call["id"].as_str().unwrap().starts_with("cln:htlc_accepted#"));
    assert_eq!(call["params"]["htlc"]["cltv_expiry_relative"], json!(11));
    assert_eq!(call["params"]["onion"]["outgoing_cltv_value"], json!(112));
    assert_eq!(call["params"]["onion"]["forward_msat"], json!(50_000_000));
    // The payload re-encodes the fields (the recorded one: amount 02, cltv 04, payment_data 08).
    let recorded = fixture("hooks/htlc_accepted.held-before-restart.json")["params"]["onion"].clone();
    let want =
        recorded["payload"].as_str().unwrap().replace(recorded["payment_secret"].as_str().unwrap(), &"aa".repeat(32));
    assert_eq!(call["params"]["onion"]["payload"], json!(want));
    assert!(held.outcome_within(Duration::from_millis(300)).await.is_none());
    let rows = rpc(&s, "listhtlcs", json!({})).await["result"]["htlcs"].clone();
    let rec = fixture("rpc/listhtlcs.ok-htlc-held-before-restart.json")["result"]["htlcs"][0].clone();
    assert_eq!(keys(&rows[0]), keys(&rec));
    assert_eq!(rows[0]["state"], json!("RCVD_ADD_ACK_REVOCATION"));
    assert_eq!((rows[0]["created_index"].clone(), rows[0]["updated_index"].clone()), (json!(1), json!(3)));

    // resolve with the preimage -> settled.
    let (pre, hash) = preimage(1);
    answer(&s, &hash, json!({"result": {"result": "resolve", "payment_key": pre}}));
    s.mine(1).await; // the fake re-checks its answers on notifications
    assert_eq!(held.outcome(T).await, HtlcOutcome::Settled { preimage: pre });
    assert_eq!(held.state(), "SENT_REMOVE_ACK_REVOCATION");
    assert_eq!(s.htlc_states()[0]["updated_index"], json!(8));

    // resolve with a wrong key -> **BROKEN** and a bare 400f from lightningd.
    let (_, h2) = preimage(2);
    answer(&s, &h2, json!({"result": {"result": "resolve", "payment_key": "11".repeat(32)}}));
    let o = s.send_htlc(spec(2)).await.outcome(T).await;
    assert_eq!(o, HtlcOutcome::Failed { message: "400f".into(), by_lightningd: true });
    let broken = s.broken_logs();
    assert!(broken[0].contains("Plugin returned a preimage (sha256(1111") && broken[0].contains(&h2), "{broken:?}");

    // fail with a message -> that message.
    let (_, h3) = preimage(3);
    answer(&s, &h3, json!({"result": {"result": "fail", "failure_message": "2002"}}));
    let o = s.send_htlc(spec(3)).await.outcome(T).await;
    assert_eq!(o, HtlcOutcome::Failed { message: "2002".into(), by_lightningd: false });

    // continue -> lightningd has no invoice: incorrect_or_unknown_payment_details(amount, height).
    let (_, h4) = preimage(4);
    answer(&s, &h4, json!({"result": {"result": "continue"}}));
    let o = s.send_htlc(spec(4)).await.outcome(T).await;
    assert_eq!(
        o,
        HtlcOutcome::Failed { message: format!("400f{:016x}{:08x}", 50_000_000u64, s.height()), by_lightningd: true }
    );
    assert!(o.is_unknown_payment_details());
    assert!(s.fatal().is_none());

    // A payment_key that is not 32 bytes: lightningd's fatal().
    let (_, h5) = preimage(5);
    answer(&s, &h5, json!({"result": {"result": "resolve", "payment_key": "abcd"}}));
    let h = s.send_htlc(spec(5)).await;
    for _ in 0..200 {
        if s.fatal().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(s.take_fatal().unwrap().contains("invalid 'payment_key'"));
    assert_eq!(h.state(), "RCVD_ADD_ACK_REVOCATION");
    let rows = s.htlc_states();
    assert_eq!(rows.len(), 5);
    let filtered = rpc(&s, "listhtlcs", json!({"id": "103x1x0"})).await["result"]["htlcs"].clone();
    assert_eq!(filtered.as_array().unwrap().len(), 5);
    let bad = rpc(&s, "listhtlcs", json!({"id": "nosuchchannel"})).await;
    assert_eq!(bad["error"], fixture("rpc/listhtlcs.err-bad-id.json")["error"]);
}

#[tokio::test]
async fn selftest_htlc_failed_back_when_plugin_killed() {
    let Some((_g, script)) = fake_plugin() else { return };
    let mut s = start_fake(&script).await;
    let (_, p) = peer(12);
    let (_, hash) = preimage(20);
    let h = s.send_htlc(HtlcSpec::new(&p, &hash, &"bb".repeat(32), 77_000_000, s.height() + 14)).await;
    s.wait_log(Some("info"), "htlc_accepted ").await;
    assert!(h.is_held());
    s.kill_plugin().await;
    // By the time kill_plugin returns: failed back as after `continue`, listhtlcs updated.
    let o = h.try_outcome().expect("failed back");
    assert!(matches!(o, HtlcOutcome::Failed { by_lightningd: true, .. }) && o.is_unknown_payment_details(), "{o:?}");
    let rows = rpc(&s, "listhtlcs", json!({})).await["result"]["htlcs"].clone();
    assert_eq!(rows[0]["state"], json!("SENT_REMOVE_ACK_REVOCATION"));

    // No plugin (so no hook): lightningd's own handling at once.
    let (_, h2) = preimage(21);
    let mut sp = HtlcSpec::new(&p, &h2, &"bb".repeat(32), 1_000, s.height() + 14);
    sp.id = s.next_htlc_id("103x1x0");
    assert_eq!(sp.id, 1);
    assert!(s.send_htlc(sp).await.try_outcome().unwrap().is_unknown_payment_details());

    // `plugin start` again (the fake is dynamic): init says startup false; same state.
    s.restart_plugin().await;
    s.wait_log(Some("info"), "init startup=false").await;
    assert_eq!(s.htlc_states().len(), 2);
    assert_eq!(rpc(&s, "getinfo", json!({})).await["result"]["blockheight"], json!(101));
}

#[tokio::test]
async fn selftest_htlc_replayed_after_lightningd_restart() {
    let Some((_g, script)) = fake_plugin() else { return };
    let mut s = start_fake(&script).await;
    let (_, p) = peer(13);
    s.peer_connects(&p).await;
    s.wait_log(Some("info"), "notified connect").await;
    let (pre, hash) = preimage(30);
    let h = s.send_htlc(HtlcSpec::new(&p, &hash, &"cc".repeat(32), 50_000_000, 112)).await;
    s.wait_log(Some("info"), "htlc_accepted ").await;
    // Held, then answered while running (the fake re-checks on notifications).
    answer(&s, &hash, json!({"result": {"result": "resolve", "payment_key": pre}}));
    s.mine(1).await;
    assert_eq!(h.outcome(T).await, HtlcOutcome::Settled { preimage: pre.clone() });

    // Held across a lightningd restart. The fake answers on `shutdown`, after lightningd
    // stopped listening: that answer is lost; the replay (after init) gets it again.

    let (pre2, hash2) = preimage(31);
    let mut sp = HtlcSpec::new(&p, &hash2, &"cc".repeat(32), 51_000_000, 113);
    sp.id = 1;
    let h2 = s.send_htlc(sp).await;
    s.wait_log(Some("info"), &hash2).await;
    answer(&s, &hash2, json!({"result": {"result": "resolve", "payment_key": pre2}}));
    s.restart_lightningd().await;
    assert!(!s.is_connected(&p), "peers disconnected by the restart");
    assert_eq!(h2.outcome(T).await, HtlcOutcome::Settled { preimage: pre2 });
    let ids = h2.hook_call_ids();
    assert_eq!(ids.len(), 2, "first call + one replay");
    assert_ne!(ids[0], ids[1]);
    // The replay came after init, equal to the first call but for id and cltv_expiry_relative.
    let logs = s.logs();
    let calls: Vec<Value> = logs
        .iter()
        .filter_map(|(_, m)| m.strip_prefix("htlc_accepted "))
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .filter(|c| c["params"]["htlc"]["payment_hash"] == json!(hash2))
        .collect();
    assert_eq!(calls.len(), 2);
    let (mut a, mut b) = (calls[0].clone(), calls[1].clone());
    assert_eq!(a["params"]["htlc"]["cltv_expiry_relative"], json!(113 - 102));
    assert_eq!(b["params"]["htlc"]["cltv_expiry_relative"], json!(113 - 102));
    for c in [&mut a, &mut b] {
        c.as_object_mut().unwrap().remove("id");
    }
    assert_eq!(a, b);
    let init_at = logs.iter().rposition(|(_, m)| m == "init startup=true").unwrap();
    let replay_at = logs.iter().rposition(|(_, m)| m.starts_with("htlc_accepted ")).unwrap();
    assert!(init_at < replay_at);
    assert!(logs.iter().any(|(_, m)| m.starts_with("notified shutdown")));
}

#[tokio::test]
async fn selftest_notifications_and_rpc_command() {
    let Some((_g, script)) = fake_plugin() else { return };
    let s = start_fake(&script).await;
    let (_, p) = peer(14);
    s.mine(2).await;
    let n = s.wait_notification("fake_event", |v| v["height"] == json!(103)).await;
    assert_eq!(n, json!({"height": 103}));
    assert_eq!(s.notifications("fake_event").len(), 2);
    assert!(s.notifications("undeclared_topic").is_empty());
    s.wait_log(Some("UNUSUAL"), "\"undeclared_topic\" it hasn't declared").await;
    let added: Vec<String> =
        s.logs().into_iter().filter(|(_, m)| m.starts_with("notified block_added")).map(|(_, m)| m).collect();
    assert_eq!(added.len(), 2, "one block_added per block");
    let shape = fixture("notifications/block_added.json")["params"]["block_added"].clone();
    let got: Value = serde_json::from_str(added[1].strip_prefix("notified block_added ").unwrap()).unwrap();
    assert_eq!(keys(&got["block_added"]), keys(&shape));
    assert_eq!(got["block_added"]["height"], json!(103));

    s.peer_connects(&p).await;
    let c = s.wait_log(Some("info"), "notified connect").await;
    let got: Value = serde_json::from_str(c.strip_prefix("notified connect ").unwrap()).unwrap();
    let rec = fixture("notifications/connect.in.json")["params"].clone();
    assert_eq!(keys(&got["connect"]), keys(&rec["connect"]));
    assert_eq!(got["connect"]["direction"], json!("in"));
    s.peer_disconnects(&p).await;
    let d = s.wait_log(Some("info"), "notified disconnect").await;
    let got: Value = serde_json::from_str(d.strip_prefix("notified disconnect ").unwrap()).unwrap();
    let mut want = fixture("notifications/disconnect.json")["params"].clone();
    want["disconnect"]["id"] = json!(p.to_string());
    assert_eq!(got, want);

    let r = s.rpc_command("close", json!({"id": p.to_string()})).await;
    let rec = fixture("hooks/rpc_command.close.json");
    let hook_id = r["return"]["result"]["hook_id"].as_str().unwrap();
    let (caller, n) = hook_id.split_once("/cln:rpc_command#").unwrap();
    assert!(caller.starts_with("cli:close#") && n.parse::<u64>().is_ok(), "{hook_id}");
    let params = &r["return"]["result"]["params"];
    assert_eq!(keys(&params["rpc_command"]), keys(&rec["params"]["rpc_command"]));
    assert_eq!(params["rpc_command"]["id"], json!(caller));
    assert_eq!(params["rpc_command"]["params"], json!({"id": p.to_string()}));
}
