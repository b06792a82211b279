//! The store's backend-neutral functions on both backends, side by side: the same rows, the
//! same calls, the same answers from SQLite and from a real PostgreSQL (skipped, with the
//! reason, where there is none, unless `LSPS1_REQUIRE_POSTGRES=1`).

use super::test_postgres as postgres;

use serde_json::json;

use super::db::Db;
use super::pg::PgBackend;
use super::status::*;
use super::{LeaseState, schema};

/// Orders, payments, HTLCs, channels and events as the store writes them, in SQL both
/// backends take: a completed order with a lease ending at 500, one held with two HTLCs, one
/// failed after being held, one unpaid.
const ROWS: &str = "
INSERT INTO orders (order_id, created_at_ms, updated_at_ms, client_node_id, transport, lsp_balance_sat,
  client_balance_sat, required_channel_confirmations, funding_confirms_within_blocks, channel_expiry_blocks,
  token, announce_channel, phase, fee_total_sat, order_total_sat, funding_feerate_perkw, reserved_sat, expires_at_ms)
VALUES
 ('a', 86400000, 86400000, 'p1', 'p2p', 100000, 0, 0, 6, 100, '', 0, 'awaiting_payment', 1000, 1000, 253, 0, 9999999999999),
 ('b', 86400001, 86400001, 'p2', 'p2p', 200000, 0, 0, 6, 100, '', 0, 'awaiting_payment', 2000, 2000, 253, 0, 9999999999999),
 ('c', 86400002, 86400002, 'p1', 'rest', 300000, 0, 0, 6, 100, '', 0, 'awaiting_payment', 3000, 3000, 253, 0, 9999999999999),
 ('d', 86400003, 86400003, 'p3', 'p2p', 400000, 0, 0, 6, 100, '', 0, 'awaiting_payment', 4000, 4000, 253, 0, 9999999999999);
INSERT INTO payments (order_id, method, expires_at_ms, fee_total_sat, order_total_sat) VALUES
 ('a', 'bolt11', 1, 1000, 1000), ('b', 'bolt11', 1, 2000, 2000), ('c', 'bolt11', 1, 3000, 3000), ('d', 'bolt11', 1, 4000, 4000);
UPDATE orders SET phase = 'payment_held', paid_method = 'bolt11', held_at_ms = 172800000, updated_at_ms = 172800000
  WHERE order_id IN ('a', 'b', 'c');
UPDATE orders SET phase = 'opening', updated_at_ms = 172800000 WHERE order_id = 'a';
UPDATE orders SET phase = 'completed', updated_at_ms = 172800000 WHERE order_id = 'a';
INSERT INTO events (order_id, at_ms, kind, from_phase, to_phase) VALUES ('a', 172800000, 'funding_broadcast', 'opening', 'completed');
UPDATE orders SET phase = 'failed', failure_reason = 'cltv_deadline', updated_at_ms = 172800000 WHERE order_id = 'c';
INSERT INTO channels (order_id, channel_id, funding_txid, funding_outnum, funded_at_ms, expires_at_ms, lease_end_block)
  VALUES ('a', 'cc', 'aa', 0, 1, 2, 500);
INSERT INTO htlcs (payment_hash, short_channel_id, htlc_id, amount_msat, cltv_expiry, received_at_ms, resolution, order_id) VALUES
 ('h', '1x1x1', 0, 1000000, 700, 1, NULL, 'b'), ('h', '1x1x1', 1, 1000000, 650, 1, NULL, 'b'), ('g', '1x1x1', 2, 5, 600, 1, 'settled', 'a');
";

/// What the calls answer, as text, for comparing the two backends.
fn script(db: &dyn Db) -> Vec<String> {
    let mut out = vec![];
    out.push(format!("{:?}", status_figures_in(db, 3 * 86_400_000, 450, 7).unwrap()));
    out.push(format!("{:?}", held_orders_in(db, "").unwrap()));
    out.push(format!("{:?}", leases_until_in(db, 10_000, 0, "").unwrap()));
    out.push(format!("{:?}", end_leases_in(db, 499, 10, "").unwrap()));
    out.push(format!("{:?}", end_leases_in(db, 500, 11, "").unwrap()));
    out.push(format!("{:?}", end_leases_in(db, 501, 12, "").unwrap()));
    note_activity_in(db, "a", 3, 510).unwrap();
    note_activity_in(db, "a", 3, 520).unwrap();
    out.push(format!("{:?}", lease_of_in(db, "a").unwrap()));
    let d = json!({"why": "test"});
    out.push(format!("{:?}", set_lease_state_in(db, "a", LeaseState::Ended, LeaseState::Closing, 13, &d).unwrap()));
    out.push(format!("{:?}", set_lease_state_in(db, "a", LeaseState::Ended, LeaseState::Closing, 14, &d).unwrap()));
    out.push(format!("{:?}", lease_close_refused_in(db, "a", 530, 15, &d).unwrap()));
    out.push(format!("{:?}", lease_of_in(db, "a").unwrap()));
    out.push(format!("{:?}", lease_channel_closed_in(db, "CC", 16, &d).unwrap()));
    out.push(format!("{:?}", lease_of_in(db, "a").unwrap().map(|l| l.state)));
    out.push(format!("{:?}", leases_until_in(db, 10_000, 0, "").unwrap()));
    out.push(format!("{:?}", status_figures_in(db, 3 * 86_400_000, 501, 3).unwrap()));
    out
}

#[test]
fn status_and_leases_answer_the_same_on_both_backends() {
    // SQLite, as the plugin opens it.
    let lite = rusqlite::Connection::open_in_memory().unwrap();
    for step in schema::MIGRATIONS {
        lite.execute_batch(step).unwrap();
    }
    lite.execute_batch(ROWS).unwrap();
    let want = script(&lite);

    let url = match postgres::fresh_database() {
        Ok(url) => url,
        Err(why) => {
            eprintln!("SKIPPED the PostgreSQL half: {why}");
            return;
        }
    };
    let backend = PgBackend::connect(&url, None).unwrap();
    backend.batch(ROWS).unwrap();
    let got = backend.read(false, &|db: &dyn Db| Ok(script(db))).unwrap();
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "call {i} differs between SQLite and PostgreSQL");
    }
    assert_eq!(want.len(), got.len());
}

/// Orders made, moved and read through the same code on both backends.
fn order_script(db: &dyn Db) -> Vec<String> {
    use super::tests::record;
    use super::{InsertLimits, insert_order_db, order_db, transition_db};
    use crate::order::{Event, FailReason, PaymentMethod, Phase};
    let limits =
        |now| InsertLimits { fundable_sat: 3_100_000, max_unpaid_per_client: 2, max_unpaid_per_ip: 9, now_ms: now };
    let mut out = vec![];
    for (id, peer) in [("o1", "p"), ("o2", "p"), ("o3", "p"), ("o4", "q"), ("o5", "q")] {
        out.push(format!("{id}: {:?}", insert_order_db(db, &record(id, peer, 1_000), limits(1_000)).err()));
    }
    out.push(format!(
        "{:?}",
        transition_db(db, "o1", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 2_000, None)
    ));
    out.push(format!(
        "{:?}",
        transition_db(db, "o1", Phase::AwaitingPayment, Event::PaymentHeld(PaymentMethod::Bolt11), 2_001, None).err()
    ));
    out.push(format!(
        "{:?}",
        transition_db(
            db,
            "o2",
            Phase::AwaitingPayment,
            Event::Fail(FailReason::PaymentExpired),
            2_002,
            Some(&json!({"x": 1}))
        )
    ));
    // A held order reserves its funds: the budget now refuses a new one.
    let tight = InsertLimits { fundable_sat: 1_500_000, max_unpaid_per_client: 9, max_unpaid_per_ip: 9, now_ms: 2_000 };
    out.push(format!("o6: {:?}", insert_order_db(db, &record("o6", "r", 2_000), tight).err()));
    out.push(format!("{:?}", transition_db(db, "o1", Phase::PaymentHeld, Event::PaymentReorged, 2_003, None)));
    for id in ["o1", "o2", "o4", "nope"] {
        out.push(format!("{:?}", order_db(db, id).unwrap()));
    }
    out
}

#[test]
fn orders_are_made_moved_and_read_the_same_on_both_backends() {
    let lite = rusqlite::Connection::open_in_memory().unwrap();
    for step in schema::MIGRATIONS {
        lite.execute_batch(step).unwrap();
    }
    let want = order_script(&lite);
    assert!(want[2].contains("TooManyUnpaid"), "{want:?}");
    assert!(want[8].contains("InsufficientFunds"), "{want:?}");
    let url = match postgres::fresh_database() {
        Ok(url) => url,
        Err(why) => {
            eprintln!("SKIPPED the PostgreSQL half: {why}");
            return;
        }
    };
    let backend = PgBackend::connect(&url, None).unwrap();
    let got = backend.read(false, &|db: &dyn Db| Ok(order_script(db))).unwrap();
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "step {i} differs between SQLite and PostgreSQL");
    }
    assert_eq!(want.len(), got.len());
}

/// A purchase and a refund through the lifecycle's transactions, on any backend.
fn purchase_script(db: &dyn Db) -> Vec<String> {
    use super::lifecycle::{apply_htlc_db, complete_order_db, fail_order_db, htlcs_db};
    use super::tests::record;
    use super::{
        ChannelRecord, HtlcKey, HtlcRecord, HtlcWrite, InsertLimits, insert_order_db, order_db, transition_db,
    };
    use crate::order::{Event, FailReason, Phase};
    let limits = InsertLimits { fundable_sat: u64::MAX / 4, max_unpaid_per_client: 9, max_unpaid_per_ip: 9, now_ms: 0 };
    let mut out = vec![];
    for id in ["buy", "lose"] {
        insert_order_db(db, &record(id, "p", 0), limits).unwrap();
    }
    let part = |order: &str, n: u64, amount: u64| HtlcRecord {
        key: HtlcKey { short_channel_id: format!("{order}x1x0"), id: n },
        payment_hash: format!("{:0>64}", order),
        amount_msat: amount,
        cltv_expiry: 900,
        received_at_ms: 10 + n as i64,
        resolution: None,
    };
    // Two parts of one payment: the second completes the set and holds the order.
    for (n, complete) in [(0, false), (1, true)] {
        let r = apply_htlc_db(db, "buy", &part("buy", n, 10_000_000), 20, |o, set| {
            ((o.phase, set.len()), HtlcWrite::Hold { complete })
        });
        out.push(format!("{:?}", r.map(|o| o.map(|(d, o)| (d, o.phase)))));
    }
    out.push(format!(
        "{:?}",
        apply_htlc_db(db, "buy", &part("buy", 1, 10_000_000), 21, |_, _| ((), HtlcWrite::Hold { complete: false }))
            .err()
    ));
    out.push(format!("{:?}", transition_db(db, "buy", Phase::PaymentHeld, Event::OpenStarted, 30, None)));
    let ch = ChannelRecord {
        channel_id: Some("ab".repeat(32)),
        funding_txid: "cd".repeat(32),
        funding_outnum: 1,
        funded_at_ms: 40,
        expires_at_ms: 50,
        lease_end_block: Some(1_000),
    };
    out.push(format!("{:?}", complete_order_db(db, "buy", &ch, 40, false, &json!({"h": 1}))));
    out.push(format!("{:?}", complete_order_db(db, "buy", &ch, 41, false, &json!({})).err()));
    out.push(format!("{:?}", htlcs_db(db, "buy")));
    // A held payment refunded at its margin.
    apply_htlc_db(db, "lose", &part("lose", 0, 20_000_000), 60, |_, _| ((), HtlcWrite::Hold { complete: true }))
        .unwrap();
    out.push(format!("{:?}", fail_order_db(db, "lose", Phase::PaymentHeld, FailReason::CltvDeadline, 70, &json!({}))));
    for id in ["buy", "lose"] {
        out.push(format!("{:?}", order_db(db, id).unwrap()));
    }
    out.push(format!("{:?}", status_figures_in(db, 100, 500, 1).unwrap()));
    use super::{OrderFilter, events_db, list_orders_db};
    for f in [
        OrderFilter::default(),
        OrderFilter { phases: Some(vec![Phase::Failed]), ..OrderFilter::default() },
        OrderFilter { id_prefix: Some("bu".into()), limit: Some(5), offset: Some(0), ..OrderFilter::default() },
        OrderFilter { client_node_id: Some("nobody".into()), ..OrderFilter::default() },
        OrderFilter { offset: Some(1), ..OrderFilter::default() },
    ] {
        let ids: Vec<String> = list_orders_db(db, &f, None).unwrap().into_iter().map(|o| o.order_id).collect();
        out.push(format!("{f:?} -> {ids:?}"));
    }
    // The event log without its sequence numbers' origin (both start at 1).
    out.push(format!("{:?}", events_db(db, "buy").unwrap()));
    out.push(format!("{:?}", super::lifecycle::active_leases_db(db, 999, "").unwrap()));
    out.push(format!("{:?}", super::lifecycle::active_leases_db(db, 1_000, "").unwrap()));
    out
}

#[test]
fn a_purchase_and_a_refund_are_recorded_the_same_on_both_backends() {
    let lite = rusqlite::Connection::open_in_memory().unwrap();
    for step in schema::MIGRATIONS {
        lite.execute_batch(step).unwrap();
    }
    let want = purchase_script(&lite);
    assert!(want[1].contains("PaymentHeld"), "{want:?}");
    let url = match postgres::fresh_database() {
        Ok(url) => url,
        Err(why) => {
            eprintln!("SKIPPED the PostgreSQL half: {why}");
            return;
        }
    };
    let backend = PgBackend::connect(&url, None).unwrap();
    let got = backend.read(false, &|db: &dyn Db| Ok(purchase_script(db))).unwrap();
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "step {i} differs between SQLite and PostgreSQL");
    }
    assert_eq!(want.len(), got.len());
}
