//! Per-peer request limits (ruling 10): a token bucket per peer, a cap on
//! requests in flight per peer and overall, and a bounded peer table, so no peer can
//! exhaust the plugin's memory or the node's RPC whatever it sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;

/// Limits, from the `lsps1-peer-*` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Sustained requests per minute per peer.
    pub requests_per_minute: u32,
    /// Requests a peer may send at once after being quiet.
    pub burst: u32,
    /// Requests of one peer being handled at the same time.
    pub max_inflight_per_peer: u32,
    /// Requests being handled at the same time, all peers together.
    pub max_inflight_total: u32,
    /// Peers tracked at once; idle entries are evicted beyond this.
    pub max_tracked_peers: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            requests_per_minute: 60,
            burst: 20,
            max_inflight_per_peer: 4,
            max_inflight_total: 256,
            max_tracked_peers: 10_000,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimited,
    TooManyInFlight,
    Overloaded,
}

impl Refusal {
    /// A short name for counting (the operator's metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::TooManyInFlight => "in_flight",
            Refusal::Overloaded => "overloaded",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate limit exceeded: too many requests from this peer, retry later",
            Refusal::TooManyInFlight => "too many requests from this peer are still being handled, retry later",
            Refusal::Overloaded => "the LSP is busy, retry later",
        }
    }
}

// Token counts are kept in thousandths of a request so refill stays integer arithmetic.
const MILLI: u64 = 1000;

#[derive(Debug)]
struct PeerState {
    millitokens: u64,
    last_refill: Instant,
    inflight: u32,
    last_notice: Option<Instant>,
}

#[derive(Debug)]
struct Table<K> {
    peers: HashMap<K, PeerState>,
    inflight_total: u32,
}

/// Admission control shared by every request handler, per client key: a peer's node id
/// over P2P, an IP address over REST.
#[derive(Debug)]
pub struct Limiter<K> {
    limits: PeerLimits,
    table: Arc<Mutex<Table<K>>>,
}

impl<K> Clone for Limiter<K> {
    fn clone(&self) -> Self {
        Limiter { limits: self.limits, table: self.table.clone() }
    }
}

/// The P2P limiter, by node id.
pub type PeerLimiter = Limiter<PublicKey>;

/// Held while a request is handled; releases its in-flight slot when dropped.
#[derive(Debug)]
pub struct InFlight<K: Hash + Eq> {
    peer: K,
    table: Arc<Mutex<Table<K>>>,
}

impl<K: Hash + Eq> Drop for InFlight<K> {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.inflight_total = t.inflight_total.saturating_sub(1);
        if let Some(p) = t.peers.get_mut(&self.peer) {
            p.inflight = p.inflight.saturating_sub(1);
        }
    }
}

/// How often a refused peer is told so; further refusals in between are dropped silently,
/// so a flood does not turn into a flood of error replies.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(limits: PeerLimits) -> Self {
        Limiter { limits, table: Arc::new(Mutex::new(Table { peers: HashMap::new(), inflight_total: 0 })) }
    }

    pub fn limits(&self) -> PeerLimits {
        self.limits
    }

    /// Admit one full-cost request of `peer` at `now`. On refusal, the bool says whether to
    /// send the peer an error reply (at most one per [`NOTICE_INTERVAL`]).
    pub fn admit(&self, peer: K, now: Instant) -> Result<InFlight<K>, (Refusal, bool)> {
        self.admit_costing(peer, now, Cost::Full)
    }

    /// Admit one request of the given cost (polling is welcome).
    pub fn admit_costing(&self, peer: K, now: Instant, cost: Cost) -> Result<InFlight<K>, (Refusal, bool)> {
        let cost = cost.millitokens();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let l = self.limits;
        if !t.peers.contains_key(&peer) && t.peers.len() >= l.max_tracked_peers {
            let full = u64::from(l.burst) * MILLI;
            let rate = u64::from(l.requests_per_minute);
            // Evict peers that are idle and whose bucket would be full by now.
            t.peers.retain(|_, s| {
                let refill = refill_amount(now.saturating_duration_since(s.last_refill), rate);
                s.inflight > 0 || s.millitokens.saturating_add(refill) < full
            });
            if t.peers.len() >= l.max_tracked_peers {
                return Err((Refusal::Overloaded, false));
            }
        }
        let inflight_total = t.inflight_total;
        let state = t.peers.entry(peer.clone()).or_insert_with(|| PeerState {
            millitokens: u64::from(l.burst) * MILLI,
            last_refill: now,
            inflight: 0,
            last_notice: None,
        });
        let elapsed = now.saturating_duration_since(state.last_refill);
        let refill = refill_amount(elapsed, u64::from(l.requests_per_minute));
        if refill > 0 {
            state.millitokens = (state.millitokens.saturating_add(refill)).min(u64::from(l.burst) * MILLI);
            state.last_refill = now;
        }
        let refusal = if state.millitokens < cost {
            Some(Refusal::RateLimited)
        } else if state.inflight >= l.max_inflight_per_peer {
            Some(Refusal::TooManyInFlight)
        } else if inflight_total >= l.max_inflight_total {
            Some(Refusal::Overloaded)
        } else {
            None
        };
        if let Some(r) = refusal {
            let notify = state.last_notice.is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_INTERVAL);
            if notify {
                state.last_notice = Some(now);
            }
            return Err((r, notify));
        }
        state.millitokens -= cost;
        state.inflight += 1;
        t.inflight_total += 1;
        Ok(InFlight { peer, table: self.table.clone() })
    }

    /// Peers currently tracked (for tests and diagnostics).
    pub fn tracked_peers(&self) -> usize {
        self.table.lock().map(|t| t.peers.len()).unwrap_or(0)
    }
}

/// What a request costs against its peer's rate. Reads (`get_order`, `get_info`,
/// `list_protocols`) cost a tenth of a request: a wallet polling `get_order` twice a second
/// uses a third of the default rate (60/min) and is never refused, while `create_order`,
/// which signs an invoice and writes the store, and anything unrecognised cost one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    Read,
    Full,
}

impl Cost {
    fn millitokens(self) -> u64 {
        match self {
            Cost::Read => MILLI / 10,
            Cost::Full => MILLI,
        }
    }

    /// The cost of a raw LSPS0 payload, judged before parsing it: a payload that names a
    /// read method and not `create_order` is a read. Erring towards `Full` is safe.
    pub fn of_payload(payload: &[u8]) -> Cost {
        let has = |needle: &[u8]| payload.windows(needle.len()).any(|w| w == needle);
        if has(b"lsps1.create_order") {
            return Cost::Full;
        }
        if has(b"\"lsps1.get_order\"") || has(b"\"lsps1.get_info\"") || has(b"\"lsps0.list_protocols\"") {
            Cost::Read
        } else {
            Cost::Full
        }
    }
}

fn refill_amount(elapsed: Duration, per_minute: u64) -> u64 {
    // millitokens = elapsed_ms * per_minute * 1000 / 60000
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    ms.saturating_mul(per_minute) / 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PublicKey {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let sk = bitcoin::secp256k1::SecretKey::from_slice(&[n.max(1); 32]).unwrap();
        PublicKey::from_secret_key(&secp, &sk)
    }

    #[test]
    fn burst_then_refill() {
        let l = PeerLimiter::new(PeerLimits {
            requests_per_minute: 60,
            burst: 3,
            max_inflight_per_peer: 10,
            ..Default::default()
        });
        let t0 = Instant::now();
        let mut held = vec![];
        for _ in 0..3 {
            held.push(l.admit(peer(1), t0).unwrap());
        }
        assert_eq!(l.admit(peer(1), t0).unwrap_err(), (Refusal::RateLimited, true));
        // The second refusal within the notice interval is silent.
        assert_eq!(l.admit(peer(1), t0).unwrap_err(), (Refusal::RateLimited, false));
        // Another peer is unaffected.
        assert!(l.admit(peer(2), t0).is_ok());
        // 60/min = one per second.
        assert!(l.admit(peer(1), t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.admit(peer(1), t0 + Duration::from_millis(1000)).is_err());
    }

    #[test]
    fn polling_get_order_twice_a_second_is_never_refused() {
        // Defaults: 60/min, burst 20. Ten minutes of a wallet polling every 500 ms.
        let l = PeerLimiter::new(PeerLimits::default());
        let t0 = Instant::now();
        let poll = br#"{"jsonrpc":"2.0","id":"x","method":"lsps1.get_order","params":{"order_id":"a"}}"#;
        assert_eq!(Cost::of_payload(poll), Cost::Read);
        for i in 0..1200u64 {
            let at = t0 + Duration::from_millis(500 * i);
            assert!(l.admit_costing(peer(1), at, Cost::of_payload(poll)).is_ok(), "poll {i} refused");
        }
        // A create_order flood is still stopped after the burst.
        let create = br#"{"jsonrpc":"2.0","id":"y","method":"lsps1.create_order","params":{}}"#;
        assert_eq!(Cost::of_payload(create), Cost::Full);
        let t1 = t0 + Duration::from_secs(1000);
        let admitted = (0..100).filter(|_| l.admit_costing(peer(2), t1, Cost::of_payload(create)).is_ok()).count();
        assert_eq!(admitted, 20);
        // A read flood is stopped too, ten times later.
        let reads = (0..1000).filter(|_| l.admit_costing(peer(3), t1, Cost::Read).is_ok()).count();
        assert_eq!(reads, 200);
        assert_eq!(Cost::of_payload(b"garbage"), Cost::Full);
    }

    #[test]
    fn inflight_is_released_on_drop() {
        let l = PeerLimiter::new(PeerLimits { burst: 100, max_inflight_per_peer: 2, ..Default::default() });
        let t0 = Instant::now();
        let a = l.admit(peer(1), t0).unwrap();
        let _b = l.admit(peer(1), t0).unwrap();
        assert_eq!(l.admit(peer(1), t0).unwrap_err().0, Refusal::TooManyInFlight);
        drop(a);
        assert!(l.admit(peer(1), t0).is_ok());
    }

    #[test]
    fn total_inflight_cap() {
        let l = PeerLimiter::new(PeerLimits { max_inflight_total: 2, ..Default::default() });
        let t0 = Instant::now();
        let _a = l.admit(peer(1), t0).unwrap();
        let _b = l.admit(peer(2), t0).unwrap();
        // Told once (ruling 10: a refusal gets error 1), then silent within the interval.
        assert_eq!(l.admit(peer(3), t0).unwrap_err(), (Refusal::Overloaded, true));
        assert_eq!(l.admit(peer(3), t0).unwrap_err(), (Refusal::Overloaded, false));
    }

    #[test]
    fn peer_table_is_bounded() {
        let l = PeerLimiter::new(PeerLimits { max_tracked_peers: 5, burst: 2, ..Default::default() });
        let t0 = Instant::now();
        for n in 1..=5 {
            drop(l.admit(peer(n), t0).unwrap());
        }
        // All five spent a token just now, so none is evictable yet.
        assert_eq!(l.admit(peer(6), t0).unwrap_err().0, Refusal::Overloaded);
        // A minute later every bucket is full again and idle peers are evicted.
        assert!(l.admit(peer(6), t0 + Duration::from_secs(60)).is_ok());
        assert!(l.tracked_peers() <= 5);
    }
}
