use super::*;
use crate::order::{Event, FailReason, PaymentMethod, Phase};

pub(crate) fn record(id: &str, peer: &str, now: i64) -> OrderRecord {
    OrderRecord {
        order_id: id.into(),
        created_at_ms: now,
        updated_at_ms: now,
        client_node_id: peer.into(),
        transport: Transport::P2p,
        lsp_balance_sat: 1_000_000,
        client_balance_sat: 0,
        required_channel_confirmations: 0,
        funding_confirms_within_blocks: 6,
        channel_expiry_blocks: 13_140,
        token: Some(String::new()),
        held_at_ms: None,
        refunded_after_open: false,
        refund_onchain_address: None,
        announce_channel: false,
        client_info: Some(serde_json::json!({"app": "ZEUS"})),
        phase: Phase::AwaitingPayment,
        failure_reason: None,
        fee_total_sat: 20_000,
        order_total_sat: 20_000,
        funding_feerate_perkw: 11_000,
        reserved_sat: 1_010_000,
        expires_at_ms: now + 3_600_000,
        paid_method: None,
        bolt11: Some(Bolt11Record {
            invoice: format!("lnbcrt-{id}"),
            payment_hash: format!("{:0>64}", id),
            preimage: "11".repeat(32),
            payment_secret: "22".repeat(32),
            expires_at_ms: now + 3_600_000,
            min_final_cltv: 144,
            fee_total_sat: 20_000,
            order_total_sat: 20_000,
        }),
        channel: None,
        onchain: None,
        reorg_flagged: false,
        node_id: None,
        client_ip: None,
    }
}

/// Run `test` on every backend: SQLite in memory, and a fresh PostgreSQL database when a
/// server can run here (skipped with the reason otherwise, unless
/// `LSPS1_REQUIRE_POSTGRES=1`). One suite, both stores.
pub(crate) fn for_each_backend(test: impl Fn(Store)) {
    test(Store::open_in_memory().unwrap());
    match super::test_postgres::fresh_database() {
        Ok(url) => test(Store::open_postgres(&url, None).unwrap()),
        Err(why) => eprintln!("SKIPPED on PostgreSQL: {why}"),
    }
}

fn roomy(now: i64) -> InsertLimits {
    InsertLimits { fundable_sat: u64::MAX / 4, max_unpaid_per_client: 100, max_unpaid_per_ip: 100, now_ms: now }
}

#[test]
fn insert_get_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lsps1.sqlite3");
    let r = record("a", "peer1", 1_000);
    {
        let s = Store::open(&path).unwrap();
        s.insert_order(&r, roomy(1_000)).unwrap();
        assert_eq!(s.get_order("a").unwrap().unwrap(), r);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::LATEST);
    assert_eq!(s.get_order("a").unwrap().unwrap(), r, "the order and its preimage survive a restart");
    assert_eq!(s.order_id_by_payment_hash(&r.bolt11.unwrap().payment_hash).unwrap().as_deref(), Some("a"));
    assert_eq!(s.events("a").unwrap().len(), 1);
    assert!(s.get_order("missing").unwrap().is_none());
}

#[test]
fn refuses_a_newer_schema_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lsps1.sqlite3");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
    }
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("newer than this plugin"));
    let c = Connection::open(&path).unwrap();
    let v: u32 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 99);
}

#[test]
fn refuses_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lsps1.sqlite3");
    std::fs::write(&path, b"this is not a database, and it must survive").unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::Open { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not a database, and it must survive");
}

#[test]
fn refuses_a_directory_it_cannot_write() {
    assert!(matches!(Store::open(Path::new("/nonexistent-dir/lsps1.sqlite3")), Err(StoreError::Open { .. })));
}

#[test]
fn wal_mode_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("x.sqlite3")).unwrap();
    let mode: String = s.sqlite_for_test().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn new_orders_commit_normal_and_everything_else_stays_full() {
    // The durability policy (Store::insert_order): only the order insert is NORMAL (1);
    // the connection is back to FULL (2) for the next write, also after a refused insert.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("x.sqlite3")).unwrap();
    let sync = |s: &Store| -> i64 { s.sqlite_for_test().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
    assert_eq!(sync(&s), 2);
    s.insert_order(&record("a", "p", 0), roomy(0)).unwrap();
    assert_eq!(sync(&s), 2);
    assert!(s.insert_order(&record("a", "p", 0), roomy(0)).is_err());
    assert_eq!(sync(&s), 2);
}

#[test]
fn events_are_append_only() {
    for_each_backend(|s| {
        s.insert_order(&record("a", "p", 0), roomy(0)).unwrap();
        assert!(s.exec_for_test("UPDATE events SET kind = 'x'").is_err());
        assert!(s.exec_for_test("DELETE FROM events").is_err());
    });
}

#[test]
fn duplicate_order_id_leaves_nothing_half_written() {
    for_each_backend(|s| {
        s.insert_order(&record("a", "p", 0), roomy(0)).unwrap();
        let mut dup = record("a", "p", 0);
        dup.bolt11.as_mut().unwrap().payment_hash = "ff".repeat(32);
        assert!(s.insert_order(&dup, roomy(0)).is_err());
        // Same payment hash, other id: the payment insert fails after the order row; the
        // transaction rolls back both.
        let mut clash = record("b", "p", 0);
        clash.bolt11.as_mut().unwrap().payment_hash = record("a", "p", 0).bolt11.unwrap().payment_hash;
        assert!(s.insert_order(&clash, roomy(0)).is_err());
        assert!(s.get_order("b").unwrap().is_none());
        assert!(s.events("b").unwrap().is_empty());
    });
}

#[test]
fn budget_and_quota_are_checked_in_the_transaction() {
    for_each_backend(|s| {
        let limits =
            InsertLimits { fundable_sat: 2_500_000, max_unpaid_per_client: 2, max_unpaid_per_ip: 100, now_ms: 0 };
        s.insert_order(&record("a", "p1", 0), limits).unwrap();
        s.insert_order(&record("b", "p2", 0), limits).unwrap();
        // Unpaid orders hold nothing back: nobody can lock the wallet by not paying.
        assert_eq!(s.reserved_sat().unwrap(), 0);
        s.insert_order(&record("c", "p3", 0), limits).unwrap();
        // Paid (held) and opening orders do.
        s.transition("a", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 1, None).unwrap();
        s.transition("b", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 1, None).unwrap();
        s.transition("b", Phase::PaymentHeld, Event::OpenStarted, 2, None).unwrap();
        assert_eq!(s.reserved_sat().unwrap(), 2_020_000);
        let e = s.insert_order(&record("d", "p4", 0), limits).unwrap_err();
        assert!(matches!(e, StoreError::InsufficientFunds { available_sat: 480_000, reserved_sat: 2_020_000 }), "{e}");
        // Quota: p3 has one unpaid order; a second is fine, a third is not.
        let roomy_quota = InsertLimits { fundable_sat: u64::MAX / 4, ..limits };
        s.insert_order(&record("e", "p3", 0), roomy_quota).unwrap();
        assert!(matches!(s.insert_order(&record("f", "p3", 0), roomy_quota), Err(StoreError::TooManyUnpaid(2))));
        assert_eq!(s.unpaid_count("p3", 0).unwrap(), 2);
        // Expired unpaid orders stop counting against the quota.
        let later = InsertLimits { now_ms: 3_600_000, ..roomy_quota };
        assert_eq!(s.unpaid_count("p3", 3_600_000).unwrap(), 0);
        s.insert_order(&record("g", "p3", 3_600_000), later).unwrap();
    });
}

#[test]
fn transitions_are_compare_and_set_and_logged() {
    for_each_backend(|s| {
        s.insert_order(&record("a", "p", 0), roomy(0)).unwrap();
        s.transition("a", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 5, None).unwrap();
        assert!(matches!(
            s.transition("a", Phase::AwaitingPayment, Event::Fail(FailReason::PaymentExpired), 6, None),
            Err(StoreError::Conflict(_))
        ));
        // The state machine, not the caller, decides where an event leads.
        assert!(matches!(
            s.transition("a", Phase::PaymentHeld, Event::FundingBroadcast, 6, None),
            Err(StoreError::Illegal(_))
        ));
        s.transition("a", Phase::PaymentHeld, Event::Fail(FailReason::PeerNotConnected), 7, None).unwrap();
        let r = s.get_order("a").unwrap().unwrap();
        assert_eq!(
            (r.phase, r.failure_reason.as_deref(), r.updated_at_ms),
            (Phase::Failed, Some("peer_not_connected"), 7)
        );
        assert_eq!(r.paid_method, Some(PaymentMethod::Bolt11));
        let kinds: Vec<String> = s.events("a").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["created", "payment_held", "peer_not_connected"]);
    });
}

#[test]
fn expiry_sweep_fails_only_due_unpaid_orders() {
    for_each_backend(|s| {
        s.insert_order(&record("due", "p", 0), roomy(0)).unwrap();
        s.insert_order(&record("later", "p", 1_000_000), roomy(1_000_000)).unwrap();
        s.insert_order(&record("held", "p", 0), roomy(0)).unwrap();
        s.transition("held", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 1, None).unwrap();
        assert_eq!(
            s.expire_unpaid(3_600_000).unwrap().into_iter().map(|(o, _)| o.order_id).collect::<Vec<_>>(),
            vec!["due".to_string()]
        );
        assert_eq!(s.get_order("due").unwrap().unwrap().phase, Phase::Failed);
        assert_eq!(s.get_order("later").unwrap().unwrap().phase, Phase::AwaitingPayment);
        assert_eq!(
            s.get_order("held").unwrap().unwrap().phase,
            Phase::PaymentHeld,
            "a held payment is not expired by the sweep"
        );
        assert!(s.expire_unpaid(3_600_000).unwrap().is_empty(), "idempotent");
        // Finished orders keep their record (no pruning into 101).
        assert!(s.get_order("due").unwrap().is_some());
    });
}

#[test]
fn list_filters() {
    for_each_backend(|s| {
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            s.insert_order(&record(id, if i == 2 { "p2" } else { "p1" }, i as i64 * 1000), roomy(0)).unwrap();
        }
        s.transition("b", Phase::AwaitingPayment, Event::Fail(FailReason::PaymentExpired), 10, None).unwrap();
        let ids = |f: OrderFilter| s.list_orders(&f).unwrap().into_iter().map(|o| o.order_id).collect::<Vec<_>>();
        assert_eq!(ids(OrderFilter::default()), ["c", "b", "a"]);
        assert_eq!(ids(OrderFilter { phases: Some(vec![Phase::Failed]), ..Default::default() }), ["b"]);
        assert_eq!(ids(OrderFilter { client_node_id: Some("p1".into()), ..Default::default() }), ["b", "a"]);
        assert_eq!(ids(OrderFilter { created_since_ms: Some(1000), ..Default::default() }), ["c", "b"]);
        assert_eq!(ids(OrderFilter { limit: Some(1), ..Default::default() }), ["c"]);
        assert!(ids(OrderFilter { phases: Some(vec![]), ..Default::default() }).is_empty());
        assert_eq!(ids(OrderFilter { id_prefix: Some("b".into()), ..Default::default() }), ["b"]);
        assert!(ids(OrderFilter { id_prefix: Some("B".into()), ..Default::default() }).is_empty());
    });
}

#[test]
fn concurrent_inserts_cannot_both_pass_the_quota() {
    for_each_backend(|s| {
        let limits =
            InsertLimits { fundable_sat: u64::MAX / 4, max_unpaid_per_client: 2, max_unpaid_per_ip: 100, now_ms: 0 };
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.insert_order(&record(&format!("o{i}"), "same-peer", 0), limits).is_ok())
            })
            .collect();
        let ok = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
        assert_eq!(ok, 2);
        assert_eq!(s.unpaid_count("same-peer", 0).unwrap(), 2);
    });
}

fn htlc(id: u64, amount_msat: u64, order: &OrderRecord, at: i64) -> HtlcRecord {
    HtlcRecord {
        key: HtlcKey { short_channel_id: "103x1x0".into(), id },
        payment_hash: order.bolt11.as_ref().unwrap().payment_hash.clone(),
        amount_msat,
        cltv_expiry: 250,
        received_at_ms: at,
        resolution: None,
    }
}

/// A decision stand-in: hold, complete once the parts cover 20,000,000 msat.
fn hold_until_full(h: &HtlcRecord) -> impl Fn(&OrderRecord, &[HtlcRecord]) -> ((), HtlcWrite) + '_ {
    move |_, set| {
        let sum: u64 = set.iter().filter(|x| x.resolution.is_none()).map(|x| x.amount_msat).sum();
        ((), HtlcWrite::Hold { complete: sum + h.amount_msat >= 20_000_000 })
    }
}

#[test]
fn p05_a_completing_part_holds_the_order_in_the_same_transaction() {
    for_each_backend(|s| {
        let o = record("a", "p", 0);
        s.insert_order(&o, roomy(0)).unwrap();
        let a = htlc(0, 12_000_000, &o, 10);
        let (_, after) = s.apply_htlc(&a, 10, hold_until_full(&a)).unwrap().unwrap();
        assert_eq!(after.phase, Phase::AwaitingPayment);
        // The same HTLC asked to be held again is refused, never counted twice (a replay is
        // decided `Wait` and writes nothing).
        assert!(matches!(
            s.apply_htlc(&a, 11, |_, _| ((), HtlcWrite::Hold { complete: false })),
            Err(StoreError::Conflict(_))
        ));
        let b = htlc(1, 8_000_000, &o, 12);
        let (_, after) = s.apply_htlc(&b, 12, hold_until_full(&b)).unwrap().unwrap();
        assert_eq!((after.phase, after.held_at_ms), (Phase::PaymentHeld, Some(12)));
        assert_eq!(s.reserved_sat().unwrap(), o.reserved_sat, "a held order reserves its channel");
        let (_, set) = s.order_with_htlcs("a").unwrap().unwrap();
        assert_eq!(set.len(), 2);
        assert!(
            s.apply_htlc(&HtlcRecord { payment_hash: "ff".repeat(32), ..b }, 13, |_, _| ((), HtlcWrite::Nothing))
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn settle_and_refund_mark_every_htlc_once() {
    for_each_backend(|s| {
        for id in ["ok", "bad"] {
            let o = record(id, "p", 0);
            s.insert_order(&o, roomy(0)).unwrap();
            let h = HtlcRecord { key: HtlcKey { short_channel_id: id.into(), id: 0 }, ..htlc(0, 20_000_000, &o, 1) };
            s.apply_htlc(&h, 1, hold_until_full(&h)).unwrap();
            s.start_open(id, 2, &serde_json::json!({})).unwrap();
            assert!(
                matches!(s.start_open(id, 2, &serde_json::json!({})), Err(StoreError::Conflict(_))),
                "one open per order"
            );
        }
        let ch = ChannelRecord {
            channel_id: Some("cc".repeat(32)),
            funding_txid: "dd".repeat(32),
            funding_outnum: 1,
            funded_at_ms: 3,
            expires_at_ms: 3 + 600_000,
            lease_end_block: Some(1_000),
        };
        let keys = s.complete_order("ok", &ch, 3, false, &serde_json::json!({})).unwrap();
        assert_eq!(keys.len(), 1);
        let (o, set) = s.order_with_htlcs("ok").unwrap().unwrap();
        assert_eq!(
            (o.phase, o.channel.as_ref(), set[0].resolution),
            (Phase::Completed, Some(&ch), Some(Resolution::Settled))
        );
        assert!(s.channel_recorded(&"cc".repeat(32)).unwrap());
        assert!(s.complete_order("ok", &ch, 4, false, &serde_json::json!({})).is_err(), "never two channels");
        assert_eq!(s.active_leases(999).unwrap().len(), 1);
        assert!(s.active_leases(1_000).unwrap().is_empty());

        let keys = s
            .fail_order("bad", Phase::Opening, FailReason::OpenFailed, 5, &serde_json::json!({"error": "no"}))
            .unwrap();
        assert_eq!(keys.len(), 1);
        let (o, set) = s.order_with_htlcs("bad").unwrap().unwrap();
        assert_eq!((o.phase, set[0].resolution), (Phase::Failed, Some(Resolution::Failed)));
        assert_eq!(s.reserved_sat().unwrap(), 0);
        assert!(s.fail_order("bad", Phase::Opening, FailReason::OpenFailed, 6, &serde_json::json!({})).is_err());
    });
}

#[test]
fn mpp_timeout_fails_only_an_incomplete_waiting_set() {
    for_each_backend(|s| {
        let o = record("a", "p", 0);
        s.insert_order(&o, roomy(0)).unwrap();
        let a = htlc(0, 5_000_000, &o, 100);
        s.apply_htlc(&a, 100, hold_until_full(&a)).unwrap();
        assert!(s.fail_incomplete_parts("a", 99).unwrap().is_empty(), "not yet due");
        assert_eq!(s.fail_incomplete_parts("a", 100).unwrap().len(), 1);
        assert_eq!(s.get_order("a").unwrap().unwrap().phase, Phase::AwaitingPayment, "the payer may retry");
        assert_eq!(s.order_of_htlc(&a.key).unwrap().as_deref(), Some("a"));
    });
}

#[test]
fn version_1_stores_migrate_and_keep_their_orders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(schema::MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(
            "INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat, \
             client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks, \
             token, announce_channel, phase, fee_total_sat, order_total_sat, funding_feerate_perkw, reserved_sat, \
             expires_at_ms) VALUES ('old', 1, 1, 'p', 'p2p', 100000, 0, 0, 6, 100, 'tok', 0, 'awaiting_payment', \
             1, 1, 253, 100001, 5)",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::LATEST);
    let o = s.get_order("old").unwrap().unwrap();
    assert_eq!((o.token.as_deref(), o.held_at_ms, o.refunded_after_open), (Some("tok"), None, false));
}

#[test]
fn a_null_token_is_kept_as_null() {
    for_each_backend(|s| {
        s.insert_order(&OrderRecord { token: None, ..record("n", "p", 0) }, roomy(0)).unwrap();
        assert_eq!(s.get_order("n").unwrap().unwrap().token, None);
    });
}

#[test]
fn one_funding_outpoint_never_serves_two_orders() {
    for_each_backend(|s| {
        for id in ["a", "b"] {
            let o = record(id, "p", 0);
            s.insert_order(&o, roomy(0)).unwrap();
            let h = HtlcRecord { key: HtlcKey { short_channel_id: id.into(), id: 0 }, ..htlc(0, 20_000_000, &o, 1) };
            s.apply_htlc(&h, 1, hold_until_full(&h)).unwrap();
            s.start_open(id, 2, &serde_json::json!({"known_channels": ["ee".repeat(32)]})).unwrap();
        }
        assert_eq!(s.channels_before_open("a").unwrap(), vec!["ee".repeat(32)]);
        let ch = ChannelRecord {
            channel_id: None,
            funding_txid: "dd".repeat(32),
            funding_outnum: 0,
            funded_at_ms: 3,
            expires_at_ms: 4,
            lease_end_block: Some(10),
        };
        s.complete_order("a", &ch, 3, false, &serde_json::json!({})).unwrap();
        assert!(s.complete_order("b", &ch, 3, false, &serde_json::json!({})).is_err());
        let (b, set) = s.order_with_htlcs("b").unwrap().unwrap();
        assert_eq!((b.phase, set[0].resolution), (Phase::Opening, None), "nothing of b moved");
    });
}

/// A history over several days: orders completed (with leases), failed while held
/// (refunds), expired unpaid, and one still held.
fn status_history(s: &Store) {
    let day = DAY_MS;
    for i in 0..12u32 {
        let id = format!("o{i}");
        let created = i64::from(i) * day / 3;
        let o = OrderRecord {
            lsp_balance_sat: 100_000 * u64::from(i + 1),
            fee_total_sat: 1_000 + u64::from(i),
            ..record(&id, &format!("p{}", i % 3), created)
        };
        s.insert_order(&o, roomy(created)).unwrap();
        if i % 4 == 3 {
            continue; // left unpaid
        }
        let h = HtlcRecord {
            key: HtlcKey { short_channel_id: id.clone(), id: 0 },
            cltv_expiry: 500 + i,
            ..htlc(0, 20_000_000 + u64::from(i), &o, created + 1)
        };
        s.apply_htlc(&h, created + 1, hold_until_full(&h)).unwrap();
        match i % 4 {
            0 => {
                s.start_open(&id, created + 2, &serde_json::json!({})).unwrap();
                let ch = ChannelRecord {
                    channel_id: Some(format!("{:0>64}", i)),
                    funding_txid: format!("{:0>64}", i + 100),
                    funding_outnum: 0,
                    funded_at_ms: created + 3,
                    expires_at_ms: created + 4,
                    lease_end_block: Some(100 + 100 * i),
                };
                s.complete_order(&id, &ch, created + 3, false, &serde_json::json!({})).unwrap();
            }
            1 => {
                s.fail_order(&id, Phase::PaymentHeld, FailReason::CltvDeadline, created + 2, &serde_json::json!({}))
                    .unwrap();
            }
            _ => {} // still held
        }
    }
}

#[test]
fn status_figures_match_the_order_book() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    let s = Store::open(&path).unwrap();
    status_history(&s);
    let now = 4 * DAY_MS + 5;
    let f = s.status_figures(now, 450, 7).unwrap();

    // The same figures, counted the slow way from the tables themselves.
    let c = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| -> u64 { c.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64 };
    for (phase, n) in &f.by_phase {
        assert_eq!(*n, count(&format!("SELECT COUNT(*) FROM orders WHERE phase = '{phase}'")), "{phase}");
    }
    assert_eq!(f.by_phase.iter().map(|(_, n)| n).sum::<u64>(), 12);
    // Revenue is the fee of the option the order was paid with.
    assert_eq!(
        f.revenue_all_sat,
        count(
            "SELECT SUM(p.fee_total_sat) FROM orders o JOIN payments p ON p.order_id = o.order_id \
             AND p.method = o.paid_method WHERE o.phase = 'completed'"
        )
    );
    assert_eq!(f.capacity_all_sat, count("SELECT SUM(lsp_balance_sat) FROM orders WHERE phase = 'completed'"));
    assert_eq!(f.held.htlcs, count("SELECT COUNT(*) FROM htlcs WHERE resolution IS NULL"));
    assert_eq!(f.held.htlc_msat, count("SELECT SUM(amount_msat) FROM htlcs WHERE resolution IS NULL"));
    assert_eq!(f.held.earliest_cltv_expiry, Some(502));
    assert_eq!(f.refunds, vec![("cltv_deadline".to_string(), 3)]);
    // Today (day 4) holds o12? No: orders 0..12 span days 0..3; completions on their own day.
    let completed_today =
        count(&format!("SELECT COUNT(*) FROM orders WHERE phase = 'completed' AND updated_at_ms / {DAY_MS} = 4"));
    assert_eq!(f.days.last().unwrap().completed, completed_today);
    assert_eq!(f.days.len(), 7);
    assert_eq!(f.revenue_windows[2], f.revenue_all_sat, "everything happened within 30 days");
    assert_eq!(f.days.iter().map(|d| d.created).sum::<u64>(), 12);
    // Leases end at 100, 500, 900 (orders 0, 4, 8); at height 450 two run, one within a day.
    assert_eq!((f.leases.active, f.leases.ending_within_1_day), (2, 1));
    assert_eq!(f.leases.leased_sat, 500_000 + 900_000);
    let held = s.held_orders().unwrap();
    assert_eq!(held.iter().map(|h| h.order_id.as_str()).collect::<Vec<_>>(), ["o2", "o6", "o10"]);
    assert_eq!(held[0].earliest_cltv_expiry, Some(502));
}

#[test]
fn version_4_stores_get_their_totals_on_migration() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sqlite3");
    let s = Store::open(&live).unwrap();
    status_history(&s);
    let want = s.status_figures(4 * DAY_MS, 450, 30).unwrap();
    drop(s);
    // The same rows in a store at version 4, then opened (migrated) by this version.
    let old = dir.path().join("v4.sqlite3");
    {
        let c = rusqlite::Connection::open(&old).unwrap();
        for step in &schema::MIGRATIONS[..4] {
            c.execute_batch(step).unwrap();
        }
        c.pragma_update(None, "user_version", 4).unwrap();
        c.execute("ATTACH DATABASE ?1 AS live", [live.to_str().unwrap()]).unwrap();
        for table in ["orders", "payments", "htlcs", "channels", "events", "chain_outputs", "chain_refunds"] {
            let cols: Vec<String> = c
                .prepare(&format!("PRAGMA main.table_info({table})"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(1))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let cols = cols.join(", ");
            c.execute_batch(&format!("INSERT INTO main.{table} ({cols}) SELECT {cols} FROM live.{table}")).unwrap();
        }
    }
    let s = Store::open(&old).unwrap();
    assert_eq!(s.status_figures(4 * DAY_MS, 450, 30).unwrap(), want);
}

#[test]
fn leases_end_once_and_move_by_compare_and_set() {
    for_each_backend(|s| {
        status_history(&s);
        assert!(s.end_leases(99, 1).unwrap().is_empty());
        let ended = s.end_leases(500, 1).unwrap();
        assert_eq!(ended.iter().map(|l| l.order_id.as_str()).collect::<Vec<_>>(), ["o0", "o4"]);
        assert!(s.end_leases(500, 2).unwrap().is_empty(), "once");
        assert_eq!(s.lease_of("o0").unwrap().map(|l| l.state), Some(LeaseState::Ended));
        let l = s.lease_of("o4").unwrap().unwrap();
        assert_eq!((l.active_height, l.activity_count), (Some(500), None));
        s.note_activity("o4", 7, 520).unwrap();
        s.note_activity("o4", 7, 530).unwrap();
        let l = s.lease_of("o4").unwrap().unwrap();
        assert_eq!((l.active_height, l.activity_count), (Some(520), Some(7)), "moves only when the count moves");
        let d = serde_json::json!({});
        assert!(s.set_lease_state("o4", LeaseState::Ended, LeaseState::Closing, 3, &d).unwrap());
        assert!(!s.set_lease_state("o4", LeaseState::Ended, LeaseState::Closing, 3, &d).unwrap(), "compare-and-set");
        assert_eq!(s.leases_until(10_000, 0).unwrap().len(), 3, "ended, closing and the one still running");
        assert_eq!(s.leases_until(10_000, 101).unwrap().len(), 2, "an ended lease before the window is left out");
        assert!(s.set_lease_state("o4", LeaseState::Closing, LeaseState::Closed, 4, &d).unwrap());
        assert_eq!(s.leases_until(10_000, 0).unwrap().len(), 2);
        assert!(s.events("o4").unwrap().iter().any(|e| e.kind == "lease_closing"));
    });
}

#[test]
fn a_payment_refunded_after_the_open_earns_nothing() {
    for_each_backend(|s| {
        let o = record("g", "p", 0);
        s.insert_order(&o, roomy(0)).unwrap();
        let h = HtlcRecord { key: HtlcKey { short_channel_id: "g".into(), id: 0 }, ..htlc(0, 20_000_000, &o, 1) };
        s.apply_htlc(&h, 1, hold_until_full(&h)).unwrap();
        s.start_open("g", 2, &serde_json::json!({})).unwrap();
        let ch = ChannelRecord {
            channel_id: None,
            funding_txid: "dd".repeat(32),
            funding_outnum: 0,
            funded_at_ms: 3,
            expires_at_ms: 4,
            lease_end_block: Some(10),
        };
        s.complete_order("g", &ch, 3, true, &serde_json::json!({})).unwrap();
        let f = s.status_figures(5, 1, 1).unwrap();
        assert_eq!((f.revenue_all_sat, f.capacity_all_sat), (0, 1_000_000), "the channel was sold, not paid for");
        assert_eq!(f.refunds, vec![("refunded_after_open".to_string(), 1)]);
    });
}
