//! Which sites a report shows, in what order.

use crate::identify::Group;

/// What ranking needs to know of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rank {
    pub live_count: u64,
    pub live_bytes: u64,
    /// Leak suspect (leak or growing), and how strongly: leaks before growing sites.
    pub suspect: Option<u8>,
    pub bytes_per_min: f64,
    pub count_per_min: f64,
}

/// Orders groups for a report: leak suspects first (leaks, then growing sites, fastest
/// growth first), then the rest by live bytes, then live count, then age. With `top` = 0
/// every group is kept; otherwise the first `top` of those with something live.
pub fn rank(groups: Vec<(&Group, Rank)>, top: usize) -> Vec<(&Group, Rank)> {
    let mut groups: Vec<(&Group, Rank)> =
        groups.into_iter().filter(|(_, r)| top == 0 || r.live_count > 0).collect();
    groups.sort_by(|(ga, a), (gb, b)| {
        let suspect = |r: &Rank| r.suspect.unwrap_or(u8::MAX);
        suspect(a)
            .cmp(&suspect(b))
            .then_with(|| {
                if a.suspect.is_some() {
                    b.bytes_per_min
                        .total_cmp(&a.bytes_per_min)
                        .then(b.count_per_min.total_cmp(&a.count_per_min))
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then(b.live_bytes.cmp(&a.live_bytes))
            .then(b.live_count.cmp(&a.live_count))
            .then(ga.first.cmp(&gb.first))
    });
    if top != 0 {
        groups.truncate(top);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank_of(live_count: u64, live_bytes: u64, suspect: Option<u8>, bytes_per_min: f64) -> Rank {
        Rank { live_count, live_bytes, suspect, bytes_per_min, count_per_min: 0.0 }
    }

    #[test]
    fn suspects_first_then_live_bytes() {
        let groups: Vec<Group> =
            (0..6).map(|first| Group { first, members: vec![first], runtime_heap: false }).collect();
        let ranked = rank(
            vec![
                (&groups[0], rank_of(5, 5000, None, 0.0)),
                (&groups[1], rank_of(1, 10, Some(1), 50.0)),
                (&groups[2], rank_of(1, 10, Some(0), 5.0)),
                (&groups[3], rank_of(1, 10, Some(0), 500.0)),
                (&groups[4], rank_of(0, 0, None, 0.0)),
                (&groups[5], rank_of(2, 5000, None, 0.0)),
            ],
            10,
        );
        let order: Vec<u32> = ranked.iter().map(|(g, _)| g.first).collect();
        assert_eq!(order, [3, 2, 1, 0, 5], "nothing live is left out");
        assert_eq!(rank(ranked.clone(), 2).len(), 2);
    }

    #[test]
    fn top_zero_keeps_everything() {
        let groups: Vec<Group> =
            (0..2).map(|first| Group { first, members: vec![first], runtime_heap: false }).collect();
        let ranked =
            rank(vec![(&groups[0], rank_of(0, 0, None, 0.0)), (&groups[1], rank_of(3, 30, None, 0.0))], 0);
        assert_eq!(ranked.iter().map(|(g, _)| g.first).collect::<Vec<_>>(), [1, 0]);
    }
}
