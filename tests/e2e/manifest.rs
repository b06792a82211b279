//! The manifest, `init`, and the ways the plugin refuses to start.

use serde_json::json;

use crate::standin::{Reply, StandIn};

#[tokio::test]
async fn manifest_declares_options_hook_filter_and_feature_bits() {
    let s = StandIn::builder().start().await;
    let m = &s.manifest;
    assert_eq!(m["dynamic"], json!(false), "feature bits need a non-dynamic plugin");
    // T-19 / ruling 18: bit 729 in init and node_announcement by default.
    let bits = format!("02{}", "00".repeat(91));
    assert_eq!(m["featurebits"]["init"], json!(bits));
    assert_eq!(m["featurebits"]["node"], json!(bits));
    // T-01: the hook asks only for 37913.
    let hooks = m["hooks"].as_array().unwrap();
    let cm = hooks.iter().find(|h| h["name"] == "custommsg").expect("custommsg hook");
    assert_eq!(cm["filters"], json!([37913]));
    let names: Vec<&str> = m["options"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    for want in [
        "lsps1-db-path",
        "lsps1-feature-bit",
        "lsps1-max-channel-balance-sat",
        "lsps1-token",
        "lsps1-deny-node",
        "lsps1-peer-requests-per-minute",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(names.iter().all(|n| n.starts_with("lsps1-")));
    let mut methods: Vec<&str> =
        m["rpcmethods"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        [
            "lsps1-allowclose",
            "lsps1-cancelorder",
            "lsps1-getorder",
            "lsps1-listheld",
            "lsps1-listleases",
            "lsps1-listorders",
            "lsps1-status"
        ]
    );
    // The lifecycle's hooks: htlc_accepted without filters (lightningd refuses
    // them there, fixture plugin.err-start-htlc_accepted-with-filters), rpc_command for
    // `close` only (fixture getmanifest.response.recorder-lifecycle).
    let ha = hooks.iter().find(|h| h["name"] == "htlc_accepted").expect("htlc_accepted hook");
    assert!(ha.get("filters").is_none_or(|f| f.as_array().is_some_and(|a| a.is_empty())), "{ha}");
    let rc = hooks.iter().find(|h| h["name"] == "rpc_command").expect("rpc_command hook");
    assert_eq!(rc["filters"], json!(["close"]));
    // The custom notification is declared, or lightningd drops it (fixtures README).
    assert_eq!(m["notifications"], json!([{"method": "lsps1_order_state_changed"}, {"method": "lsps1_lease_ended"}]));
    let subs: Vec<&str> = m["subscriptions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for want in ["block_added", "connect", "channel_state_changed"] {
        assert!(subs.contains(&want), "{want} not in {subs:?}");
    }
    assert!(s.disabled().is_none(), "{:?}", s.init_result);
    assert_eq!(s.init_result, json!({}));
    s.wait_log(Some("info"), "serving LSPS1 on regtest").await;
    // At init it learned the node and checked for CLN's own LSPS service.
    assert_eq!(s.calls("getinfo").len(), 1);
    // No order in flight: nothing to reconcile, so no listhtlcs at start.
    assert!(s.calls("listhtlcs").is_empty());
    assert_eq!(s.calls("listconfigs")[0], json!({"config": "experimental-lsps2-service"}));
    assert!(s.dir.join("lsps1.sqlite3").exists(), "store at <lightning-dir>/lsps1.sqlite3");
}

#[tokio::test]
async fn feature_bit_can_be_switched_off() {
    let s = StandIn::builder().env("LSPS1_FEATURE_BIT", "0").start().await;
    assert!(s.manifest.get("featurebits").is_none_or(|f| f.as_object().is_none_or(|o| o.is_empty())), "{}", s.manifest);
    assert!(s.disabled().is_none());
}

#[tokio::test]
async fn disables_itself_when_cln_lsps_service_is_enabled() {
    // What listconfigs shows while cln-lsps-service runs with its flag set.
    let s = StandIn::builder()
        .config(
            "experimental-lsps2-service",
            json!({"set": true, "source": "cmdline", "plugin": "/usr/local/libexec/c-lightning/plugins/cln-lsps-service"}),
        )
        .start()
        .await;
    let reason = s.disabled().expect("disabled");
    assert!(reason.contains("experimental-lsps2-service"), "{reason}");
    assert!(reason.contains("two answers"), "{reason}");
}

#[tokio::test]
async fn runs_when_cln_lsps_service_is_loaded_but_off() {
    let s = StandIn::builder()
        .config("experimental-lsps2-service", json!({"set": false, "source": "default", "plugin": "/usr/local/libexec/c-lightning/plugins/cln-lsps-service"}))
        .start()
        .await;
    assert!(s.disabled().is_none());
}

#[tokio::test]
async fn cannot_check_for_cln_lsps_service_fails_closed() {
    // Ruling 19: if lightningd will not say, do not risk two LSPS services.
    let s =
        StandIn::builder().reply("listconfigs", Reply::Error { code: -32603, message: "busy".into() }).start().await;
    let reason = s.disabled().expect("disabled");
    assert!(reason.contains("cannot tell whether"), "{reason}");
    assert_eq!(s.calls("listconfigs").len(), 3, "retried before giving up");
}

#[tokio::test]
async fn inconsistent_options_disable_with_the_option_named() {
    let s = StandIn::builder()
        .option("lsps1-min-initial-lsp-balance-sat", json!(5_000_000))
        .option("lsps1-max-initial-lsp-balance-sat", json!(1_000_000))
        .start()
        .await;
    let reason = s.disabled().expect("disabled");
    assert!(reason.contains("lsps1-min-initial-lsp-balance-sat"), "{reason}");
    let s = StandIn::builder().option("lsps1-deny-node", json!(["nonsense"])).start().await;
    assert!(s.disabled().expect("disabled").contains("lsps1-deny-node"));
}

#[tokio::test]
async fn a_newer_store_disables_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("future.sqlite3");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t (x); PRAGMA user_version = 42;").unwrap();
    let s = StandIn::builder().option("lsps1-db-path", json!(db.to_string_lossy())).start().await;
    let reason = s.disabled().expect("disabled");
    assert!(reason.contains("newer than this plugin"), "{reason}");
    let v: u32 = rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 42, "never reset");
}

#[tokio::test]
async fn an_unopenable_store_disables() {
    let s = StandIn::builder().option("lsps1-db-path", json!("/proc/no/such/dir/x.sqlite3")).start().await;
    assert!(s.disabled().expect("disabled").contains("cannot open the order store"));
}

#[tokio::test]
async fn getinfo_failure_disables() {
    let s = StandIn::builder().reply("getinfo", Reply::Error { code: -32603, message: "boom".into() }).start().await;
    assert!(s.disabled().expect("disabled").contains("cannot read the node's id"));
}

#[tokio::test]
async fn exits_cleanly_when_lightningd_closes_the_pipe() {
    let s = StandIn::builder().start().await;
    let status = s.shutdown().await;
    assert!(status.success(), "{status:?}");
}
