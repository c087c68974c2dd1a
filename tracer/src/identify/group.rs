//! Sites as reports show them: raw sites (one per distinct stack) whose identities are
//! the same (an unrolled loop calls from several addresses of one source line) are one
//! site, identified by its first raw site. Groups only grow: a site keeps its group, and
//! a group its id, for the whole run.

use std::collections::HashMap;

use crate::aggregate::sites::SiteIdx;

/// One reported site: raw sites with the same identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The first raw site: the group's stable id and the stack shown.
    pub first: SiteIdx,
    pub members: Vec<SiteIdx>,
    /// Mappings the Go runtime made for its own heap: they back the Go heap sites (as an
    /// allocator's arenas back its blocks), so they are no site of their own.
    pub runtime_heap: bool,
}

#[derive(Debug, Default)]
pub struct Grouping {
    by_key: HashMap<u64, usize>,
    groups: Vec<Group>,
}

impl Grouping {
    /// Puts raw site `site` (sites come in index order) in the group of identity `key`.
    pub fn add(&mut self, site: SiteIdx, key: u64, runtime_heap: bool) {
        let groups = &mut self.groups;
        let i = *self.by_key.entry(key).or_insert_with(|| {
            groups.push(Group { first: site, members: Vec::new(), runtime_heap });
            groups.len() - 1
        });
        self.groups[i].members.push(site);
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Raw sites grouped so far.
    pub fn sites(&self) -> usize {
        self.groups.iter().map(|g| g.members.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_sites_are_one_group_in_order_of_appearance() {
        let mut grouping = Grouping::default();
        for (site, key) in [7, 8, 7, 9].into_iter().enumerate() {
            grouping.add(site as SiteIdx, key, false);
        }
        let groups = grouping.groups();
        assert_eq!(groups.len(), 3);
        assert_eq!((groups[0].first, groups[0].members.clone()), (0, vec![0, 2]));
        assert_eq!((groups[1].first, groups[2].first), (1, 3));
        assert_eq!(grouping.sites(), 4);
    }
}
