//! Windows as panes. A hopping window of `size` every `slide` (tumbling: slide = size) is
//! aggregated in panes of g = gcd(size, slide): each event goes into exactly one pane, and a
//! window is the merge of its size/g consecutive panes. Copying each event into every window
//! it belongs to would cost size/slide times the work and memory. Windows start at multiples
//! of the slide from the epoch (as Flink's HOP and TUMBLE align them).

use std::collections::BTreeMap;
use std::ops::Range;

use crate::agg::Merge;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    size_ms: u64,
    slide_ms: u64,
    pane_ms: u64,
}

/// A window definition this engine cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowError {
    /// The size or slide is zero.
    Empty,
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowError::Empty => f.write_str("a window's size and slide must be at least 1 ms"),
        }
    }
}

impl std::error::Error for WindowError {}

impl Hop {
    pub fn new(size_ms: u64, slide_ms: u64) -> Result<Hop, WindowError> {
        if size_ms == 0 || slide_ms == 0 {
            return Err(WindowError::Empty);
        }
        Ok(Hop { size_ms, slide_ms, pane_ms: gcd(size_ms, slide_ms) })
    }

    pub fn tumbling(size_ms: u64) -> Result<Hop, WindowError> {
        Hop::new(size_ms, size_ms)
    }

    pub fn pane_ms(&self) -> u64 {
        self.pane_ms
    }

    /// The pane an event time falls in.
    pub fn pane_of(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.pane_ms as i64)
    }

    /// The panes of the window starting at `start_ms` (a multiple of the slide).
    pub fn panes_of_window(&self, start_ms: i64) -> Range<i64> {
        let first = start_ms.div_euclid(self.pane_ms as i64);
        first..first + (self.size_ms / self.pane_ms) as i64
    }

    /// The starts of the windows an event time belongs to, earliest first (none when the
    /// slide is larger than the size and the time falls in a gap).
    pub fn windows_of(&self, time_ms: i64) -> impl Iterator<Item = i64> {
        let (size, slide) = (self.size_ms as i64, self.slide_ms as i64);
        // Starts k·slide with k·slide <= t < k·slide + size.
        let last = time_ms.div_euclid(slide) * slide;
        let first = ((time_ms - size).div_euclid(slide) + 1) * slide;
        (0..).map(move |index| first + index * slide).take_while(move |start| *start <= last)
    }

    /// The window starting at `start_ms`, merged from the panes present.
    pub fn combine<S: Merge + Default>(&self, panes: &BTreeMap<i64, S>, start_ms: i64) -> S {
        let mut window = S::default();
        for (_, pane) in panes.range(self.panes_of_window(start_ms)) {
            window.merge(pane);
        }
        window
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{Count, MinMax, Sum};
    use proptest::prelude::*;

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct All {
        count: Count,
        sum: Sum,
        extremes: MinMax,
    }

    impl All {
        fn add(&mut self, value: i64) {
            self.count.add();
            self.sum.add_i64(value);
            self.extremes.add_i64(value);
        }
    }

    impl Merge for All {
        fn merge(&mut self, other: &All) {
            self.count.merge(&other.count);
            self.sum.merge(&other.sum);
            self.extremes.merge(&other.extremes);
        }
    }

    proptest! {
        #[test]
        fn windows_from_panes_equal_windows_computed_directly(
            events in proptest::collection::vec((-5_000i64..5_000, any::<i32>()), 0..300),
            size in 1u64..400,
            slide in 1u64..400,
        ) {
            let hop = Hop::new(size, slide).unwrap();
            let mut panes: BTreeMap<i64, All> = BTreeMap::new();
            let mut direct: BTreeMap<i64, All> = BTreeMap::new();
            for (time, value) in &events {
                panes.entry(hop.pane_of(*time)).or_default().add(i64::from(*value));
                for start in hop.windows_of(*time) {
                    prop_assert!(start <= *time && *time < start + size as i64);
                    prop_assert_eq!(start.rem_euclid(slide as i64), 0);
                    direct.entry(start).or_default().add(i64::from(*value));
                }
            }
            // Every window that holds an event, and only those, by brute force too.
            for (time, _) in &events {
                let lowest = (time - size as i64 - slide as i64).div_euclid(slide as i64) * slide as i64;
                let brute: Vec<i64> = (0..)
                    .map(|index| lowest + index * slide as i64)
                    .take_while(|start| start <= time)
                    .filter(|start| start <= time && *time < start + size as i64)
                    .collect();
                prop_assert_eq!(hop.windows_of(*time).collect::<Vec<_>>(), brute);
            }
            for (start, expected) in &direct {
                prop_assert_eq!(&hop.combine(&panes, *start), expected);
            }
        }
    }

    #[test]
    fn panes_are_the_gcd_and_empty_windows_are_refused() {
        assert_eq!(Hop::new(60_000, 10_000).unwrap().pane_ms(), 10_000);
        assert_eq!(Hop::new(10_000, 4_000).unwrap().pane_ms(), 2_000);
        assert_eq!(Hop::tumbling(5).unwrap().panes_of_window(10), 2..3);
        assert_eq!(Hop::new(0, 1), Err(WindowError::Empty));
        assert_eq!(
            Hop::new(3, 0).unwrap_err().to_string(),
            "a window's size and slide must be at least 1 ms"
        );
    }
}
