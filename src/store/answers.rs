//! Answers read from the store, kept by key and reused while they still hold: the store has
//! not been written since they were read ([`super::Store::generation`]) and their own deadline
//! (an unpaid order's lazy expiry) has not passed. Wallets poll `get_order` every few
//! seconds; between two writes every poll is answered without SQLite.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most answers kept; past it the map starts over.
const MAX_ANSWERS: usize = 4096;

struct Answer<V> {
    generation: u64,
    until_ms: i64,
    value: V,
}

pub struct Answers<V> {
    map: Mutex<HashMap<String, Answer<V>>>,
}

impl<V> Default for Answers<V> {
    fn default() -> Self {
        Answers { map: Mutex::new(HashMap::new()) }
    }
}

impl<V: Clone> Answers<V> {
    /// The answer kept for `key` and its deadline, if it still holds at `generation` (read
    /// before anything else of the store) and `now_ms`.
    pub fn get(&self, key: &str, generation: u64, now_ms: i64) -> Option<(V, i64)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|a| a.generation == generation && now_ms < a.until_ms)
            .map(|a| (a.value.clone(), a.until_ms))
    }

    /// Keep `value`, read at `generation` (taken before the read), valid until `until_ms`.
    pub fn put(&self, key: String, generation: u64, until_ms: i64, value: V) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ANSWERS {
            map.clear();
        }
        map.insert(key, Answer { generation, until_ms, value });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_holds_for_its_generation_until_its_deadline() {
        let a = Answers::default();
        a.put("o".into(), 7, 1_000, "x");
        assert_eq!(a.get("o", 7, 999), Some(("x", 1_000)));
        assert_eq!(a.get("o", 8, 999), None, "the store was written since");
        assert_eq!(a.get("o", 7, 1_000), None, "its deadline passed");
        assert_eq!(a.get("p", 7, 0), None);
    }
}
