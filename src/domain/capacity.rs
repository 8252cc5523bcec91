//! Capacity arithmetic: how many seats are taken at the busiest instant of a
//! window. Used by the writer to admit a booking and by availability to compute
//! `remaining` per slot, so both answer from the same rule.
//!
//! A booking holds its party size over the half-open range [start, end): one
//! ending at 12:00 and one starting at 12:00 never overlap.

/// One confirmed booking's hold on a resource, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub start: i64,
    pub end: i64,
    pub size: u32,
}

/// The piecewise-constant load of a resource over time, built once so that many
/// windows (all the slots of an availability answer) can be asked cheaply.
#[derive(Debug, Clone, Default)]
pub struct LoadProfile {
    /// Change points, ascending; `loads[i]` holds on [points[i], points[i+1]).
    points: Vec<i64>,
    loads: Vec<u32>,
}

impl LoadProfile {
    pub fn new(holds: impl IntoIterator<Item = Hold>) -> Self {
        let mut deltas: Vec<(i64, i64)> = Vec::new();
        for hold in holds {
            if hold.end > hold.start && hold.size > 0 {
                deltas.push((hold.start, i64::from(hold.size)));
                deltas.push((hold.end, -i64::from(hold.size)));
            }
        }
        deltas.sort_unstable();
        let mut points = Vec::with_capacity(deltas.len());
        let mut loads = Vec::with_capacity(deltas.len());
        let mut load: i64 = 0;
        let mut i = 0;
        while i < deltas.len() {
            let at = deltas[i].0;
            while i < deltas.len() && deltas[i].0 == at {
                load += deltas[i].1;
                i += 1;
            }
            points.push(at);
            loads.push(u32::try_from(load.max(0)).unwrap_or(u32::MAX));
        }
        LoadProfile { points, loads }
    }

    /// The highest load at any instant of [start, end).
    pub fn peak(&self, start: i64, end: i64) -> u32 {
        if end <= start || self.points.is_empty() {
            return 0;
        }
        // The segment in force at `start` begins at the last point <= start.
        let first = self.points.partition_point(|&p| p <= start);
        let mut peak = if first > 0 { self.loads[first - 1] } else { 0 };
        for (point, load) in self.points[first..].iter().zip(&self.loads[first..]) {
            if *point >= end {
                break;
            }
            peak = peak.max(*load);
        }
        peak
    }
}

/// Whether `size` more seats fit over [start, end) next to `holds`.
pub fn fits(
    holds: impl IntoIterator<Item = Hold>,
    start: i64,
    end: i64,
    size: u32,
    capacity: u32,
) -> bool {
    let peak = LoadProfile::new(holds).peak(start, end);
    u64::from(peak) + u64::from(size) <= u64::from(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(start: i64, end: i64, size: u32) -> Hold {
        Hold { start, end, size }
    }

    #[test]
    fn empty_profile_has_no_load() {
        assert_eq!(LoadProfile::new([]).peak(0, 100), 0);
        assert!(fits([], 0, 10, 3, 3));
        assert!(!fits([], 0, 10, 4, 3));
    }

    #[test]
    fn half_open_ranges_do_not_touch() {
        let holds = [hold(10, 12, 1)];
        assert!(fits(holds, 12, 13, 1, 1));
        assert!(fits(holds, 8, 10, 1, 1));
        assert!(!fits(holds, 11, 13, 1, 1));
    }

    #[test]
    fn peak_is_the_busiest_instant_not_the_sum() {
        // [10,12) and [12,14) never overlap: peak 1, so capacity 2 leaves room.
        let holds = [hold(10, 12, 1), hold(12, 14, 1)];
        assert_eq!(LoadProfile::new(holds).peak(9, 15), 1);
        assert!(fits(holds, 9, 15, 1, 2));
        // Overlapping [10,12) and [11,13) peak at 2 during [11,12) only.
        let holds = [hold(10, 12, 1), hold(11, 13, 1)];
        let profile = LoadProfile::new(holds);
        assert_eq!(profile.peak(11, 12), 2);
        assert_eq!(profile.peak(12, 13), 1);
        assert_eq!(profile.peak(10, 11), 1);
        assert_eq!(profile.peak(13, 20), 0);
        assert!(!fits(holds, 11, 11 + 1, 1, 2));
        assert!(fits(holds, 12, 13, 1, 2));
    }

    #[test]
    fn party_sizes_add_up() {
        let holds = [hold(0, 10, 3), hold(5, 15, 4)];
        let profile = LoadProfile::new(holds);
        assert_eq!(profile.peak(0, 5), 3);
        assert_eq!(profile.peak(0, 6), 7);
        assert_eq!(profile.peak(10, 15), 4);
        assert!(fits(holds, 6, 9, 3, 10));
        assert!(!fits(holds, 6, 9, 4, 10));
    }

    #[test]
    fn window_starting_inside_a_segment_sees_its_load() {
        let profile = LoadProfile::new([hold(0, 100, 2)]);
        assert_eq!(profile.peak(50, 60), 2);
        assert_eq!(profile.peak(100, 110), 0);
        assert_eq!(profile.peak(60, 50), 0);
    }

    #[test]
    fn matches_brute_force_on_random_holds() {
        // Deterministic LCG so the test is reproducible without a rand crate.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: i64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as i64).rem_euclid(n)
        };
        for _ in 0..200 {
            let holds: Vec<Hold> = (0..next(12))
                .map(|_| {
                    let start = next(50);
                    hold(start, start + 1 + next(20), 1 + next(3) as u32)
                })
                .collect();
            let profile = LoadProfile::new(holds.iter().copied());
            let start = next(60);
            let end = start + 1 + next(20);
            let brute = (start..end)
                .map(|t| {
                    holds
                        .iter()
                        .filter(|h| h.start <= t && t < h.end)
                        .map(|h| h.size)
                        .sum::<u32>()
                })
                .max()
                .unwrap_or(0);
            assert_eq!(profile.peak(start, end), brute);
        }
    }
}
