//! TOP-K items: exact counts per item, ranked when finished (count descending, then the
//! item's bytes ascending, so ties rank the same everywhere). KDA's TOP_K_ITEMS_TUMBLING is
//! documented as approximate; exact counts give the answer it approximates.

use std::collections::HashMap;

use super::Merge;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopK {
    counts: HashMap<Vec<u8>, u64>,
}

impl TopK {
    /// An item, by its canonical bytes.
    pub fn add(&mut self, item: &[u8]) {
        match self.counts.get_mut(item) {
            Some(count) => *count += 1,
            None => {
                self.counts.insert(item.to_vec(), 1);
            }
        }
    }

    /// Every item and its count, in the items' byte order (to store the state).
    pub fn entries(&self) -> Vec<(&[u8], u64)> {
        let mut entries: Vec<(&[u8], u64)> =
            self.counts.iter().map(|(item, count)| (item.as_slice(), *count)).collect();
        entries.sort_unstable();
        entries
    }

    /// An item seen `count` times (to rebuild a stored state).
    pub fn add_count(&mut self, item: &[u8], count: u64) {
        *self.counts.entry(item.to_vec()).or_insert(0) += count;
    }

    /// The `k` most frequent items with their counts.
    pub fn top(&self, k: usize) -> Vec<(&[u8], u64)> {
        let mut ranked: Vec<(&[u8], u64)> =
            self.counts.iter().map(|(item, count)| (item.as_slice(), *count)).collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(k);
        ranked
    }
}

impl Merge for TopK {
    fn merge(&mut self, other: &TopK) {
        for (item, count) in &other.counts {
            *self.counts.entry(item.clone()).or_default() += count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_count_then_by_item_and_merges() {
        let mut a = TopK::default();
        for item in ["b", "a", "c", "a", "b", "d"] {
            a.add(item.as_bytes());
        }
        assert_eq!(a.top(3), vec![(&b"a"[..], 2), (&b"b"[..], 2), (&b"c"[..], 1)]);
        let mut b = TopK::default();
        b.add(b"d");
        b.add(b"d");
        b.merge(&a);
        assert_eq!(b.top(1), vec![(&b"d"[..], 3)]);
        assert_eq!(TopK::default().top(5), Vec::<(&[u8], u64)>::new());
    }
}
