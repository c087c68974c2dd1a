//! Sites as reports show them: raw sites (one per distinct stack) whose symbolized stacks
//! are the same (an unrolled loop calls from several addresses of one source line) are
//! one site.

use crate::aggregate::sites::{SiteIdx, Sites};

/// One reported site: raw sites with the same identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The first raw site: the group's stable id and the stack shown.
    pub first: SiteIdx,
    pub members: Vec<SiteIdx>,
    pub live_count: u64,
    pub live_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
}

/// Groups raw sites by identity key (`keys[site]`), summing live figures (`live[site]`)
/// and running totals, and ranks the groups: most live bytes first, then most live
/// blocks, then oldest. With `top` = 0 every group is kept (nothing live last);
/// otherwise the `top` groups with something live.
pub fn group_and_rank(keys: &[u64], live: &[(u64, u64)], sites: &Sites, top: usize) -> Vec<Group> {
    let mut by_key: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (idx, site) in sites.iter() {
        let i = *by_key.entry(keys[idx as usize]).or_insert_with(|| {
            groups.push(Group {
                first: idx,
                members: Vec::new(),
                live_count: 0,
                live_bytes: 0,
                allocs: 0,
                frees: 0,
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.members.push(idx);
        g.live_count += live[idx as usize].0;
        g.live_bytes += live[idx as usize].1;
        g.allocs += site.allocs;
        g.frees += site.frees;
    }
    if top != 0 {
        groups.retain(|g| g.live_count > 0);
    }
    groups.sort_by_key(|g| (std::cmp::Reverse(g.live_bytes), std::cmp::Reverse(g.live_count), g.first));
    if top != 0 {
        groups.truncate(top);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::sites::{SiteKey, SiteKind},
        event::StackId,
    };

    fn sites(n: u64) -> Sites {
        let mut sites = Sites::default();
        for i in 0..n {
            let s = sites.intern(SiteKey { kind: SiteKind::Heap, stack: Some(StackId(i + 1)), func: 1 });
            sites.get_mut(s).born(1);
        }
        sites
    }

    #[test]
    fn same_key_sites_merge_and_rank_by_bytes() {
        let sites = sites(4);
        // Sites 0 and 2 share an identity.
        let keys = [7, 8, 7, 9];
        let live = [(1, 10), (1, 15), (2, 10), (0, 0)];
        let groups = group_and_rank(&keys, &live, &sites, 10);
        assert_eq!(groups.len(), 2, "the site with nothing live is left out");
        assert_eq!((groups[0].first, groups[0].members.clone()), (0, vec![0, 2]));
        assert_eq!((groups[0].live_count, groups[0].live_bytes, groups[0].allocs), (3, 20, 2));
        assert_eq!(groups[1].first, 1);
        // top = 1 keeps the largest; top = 0 keeps all, the empty one last.
        assert_eq!(group_and_rank(&keys, &live, &sites, 1).len(), 1);
        let all = group_and_rank(&keys, &live, &sites, 0);
        assert_eq!(all.iter().map(|g| g.first).collect::<Vec<_>>(), [0, 1, 3]);
    }

    #[test]
    fn ties_go_to_more_blocks_then_the_older_site() {
        let sites = sites(3);
        let live = [(1, 10), (2, 10), (2, 10)];
        let groups = group_and_rank(&[1, 2, 3], &live, &sites, 0);
        assert_eq!(groups.iter().map(|g| g.first).collect::<Vec<_>>(), [1, 2, 0]);
    }
}
