//! File descriptors: the live table, keyed by descriptor number, each pointing at the
//! site (call stack and syscall) that made it. Descriptors open before attach are read
//! from `/proc/PID/fd` and charged to one site of their own; exec's closing of
//! close-on-exec descriptors is found by looking at `/proc/PID/fd` again.

use std::collections::BTreeMap;

use super::{
    Coverage,
    sites::{SiteIdx, SiteKey, SiteKind, Sites},
};
use crate::stacks::{StackId, StackTable};

/// `detail` of the site of descriptors open before attach.
pub const PREEXISTING: u64 = u64::MAX - 1;

/// x86-64 numbers of the syscalls that put a new descriptor at a number the caller
/// chose, closing what was there.
const DUP2: u32 = 33;
const DUP3: u32 = 292;

#[derive(Debug, Clone, Copy)]
struct Open {
    site: SiteIdx,
    born_ns: u64,
}

#[derive(Default)]
pub struct Fds {
    live: BTreeMap<i32, Open>,
}

impl Fds {
    /// The descriptors open now (at attach, or after exec), charged to the site of
    /// descriptors open before tracing saw them.
    pub fn preexisting(&mut self, fds: &[i32], ts_ns: u64, sites: &mut Sites) {
        let site = sites.intern(SiteKey { kind: SiteKind::Fd, stack: None, detail: PREEXISTING });
        for &fd in fds {
            self.live.entry(fd).or_insert_with(|| {
                sites.get_mut(site).born(0, 1.0);
                Open { site, born_ns: ts_ns }
            });
        }
    }

    pub fn open(&mut self, new: NewFd, sites: &mut Sites, stacks: &mut StackTable, coverage: &mut Coverage) {
        if self.live.contains_key(&new.fd) {
            // dup2/dup3 close what was at the number; anything else means a close was
            // not seen.
            if !matches!(new.syscall, DUP2 | DUP3) {
                coverage.fd_reused += 1;
            }
            self.close_one(new.fd, sites);
        }
        if let Some(id) = new.stack {
            stacks.ensure(id);
        }
        let site =
            sites.intern(SiteKey { kind: SiteKind::Fd, stack: new.stack, detail: u64::from(new.syscall) });
        sites.get_mut(site).born(0, 1.0);
        self.live.insert(new.fd, Open { site, born_ns: new.ts_ns });
    }

    /// `close` (first == last) or `close_range`.
    pub fn close(&mut self, first: u32, last: u32, sites: &mut Sites, coverage: &mut Coverage) {
        let (first, last) =
            (i32::try_from(first).unwrap_or(i32::MAX), i32::try_from(last).unwrap_or(i32::MAX));
        if first == last {
            if !self.close_one(first, sites) {
                coverage.unknown_closes += 1;
            }
            return;
        }
        let closing: Vec<i32> = self.live.range(first..=last).map(|(fd, _)| *fd).collect();
        for fd in closing {
            self.close_one(fd, sites);
        }
    }

    fn close_one(&mut self, fd: i32, sites: &mut Sites) -> bool {
        match self.live.remove(&fd) {
            Some(open) => {
                sites.get_mut(open.site).released(0, true, 1.0);
                true
            }
            None => false,
        }
    }

    /// After exec: what `/proc/PID/fd` no longer lists was closed (close-on-exec).
    pub fn reconcile(&mut self, open_now: &[i32], sites: &mut Sites) {
        let gone: Vec<i32> =
            self.live.keys().filter(|fd| open_now.binary_search(fd).is_err()).copied().collect();
        for fd in gone {
            self.close_one(fd, sites);
        }
    }

    pub fn live(&self, per_site: &mut [(f64, f64)], old_enough: &dyn Fn(u64) -> bool) -> u64 {
        for open in self.live.values() {
            if old_enough(open.born_ns) {
                per_site[open.site as usize].0 += 1.0;
            }
        }
        self.live.len() as u64
    }

    pub fn births(&self, f: &mut dyn FnMut(SiteIdx, u64)) {
        for open in self.live.values() {
            f(open.site, open.born_ns);
        }
    }

    /// The live descriptors of a site.
    pub fn of_site(&self, site: SiteIdx) -> impl Iterator<Item = i32> + '_ {
        self.live.iter().filter(move |(_, o)| o.site == site).map(|(fd, _)| *fd)
    }
}

/// A new descriptor, as the aggregator hands it over.
pub struct NewFd {
    pub ts_ns: u64,
    pub fd: i32,
    pub syscall: u32,
    pub stack: Option<StackId>,
}

/// The name of a descriptor-making syscall (x86-64 numbers).
pub fn syscall_name(nr: u64) -> &'static str {
    match nr {
        2 => "open",
        22 => "pipe",
        32 => "dup",
        33 => "dup2",
        41 => "socket",
        43 => "accept",
        53 => "socketpair",
        72 => "fcntl",
        85 => "creat",
        213 => "epoll_create",
        253 => "inotify_init",
        257 => "openat",
        282 => "signalfd",
        283 => "timerfd_create",
        284 => "eventfd",
        288 => "accept4",
        289 => "signalfd4",
        290 => "eventfd2",
        291 => "epoll_create1",
        292 => "dup3",
        293 => "pipe2",
        294 => "inotify_init1",
        304 => "open_by_handle_at",
        319 => "memfd_create",
        323 => "userfaultfd",
        434 => "pidfd_open",
        437 => "openat2",
        PREEXISTING => "open before attach",
        _ => "fd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site_live(sites: &Sites, idx: SiteIdx) -> f64 {
        sites.get(idx).live_count
    }

    fn table() -> (Fds, Sites, Coverage) {
        (Fds::default(), Sites::default(), Coverage::default())
    }

    #[test]
    fn opens_and_closes_by_site_with_ranges_and_dup2() {
        let (mut fds, mut sites, mut cov) = table();
        let mut stacks = crate::stacks::StackTable::new(
            Box::new(crate::stacks::table::NoStacks),
            crate::stacks::modules::ModuleMap::from_entries(&[]),
        );
        fds.preexisting(&[0, 1, 2], 0, &mut sites);
        let pre = sites.intern(SiteKey { kind: SiteKind::Fd, stack: None, detail: PREEXISTING });
        for fd in 3..10 {
            fds.open(NewFd { ts_ns: 1, fd, syscall: 41, stack: None }, &mut sites, &mut stacks, &mut cov);
        }
        let sockets = sites.intern(SiteKey { kind: SiteKind::Fd, stack: None, detail: 41 });
        assert_eq!((site_live(&sites, pre), site_live(&sites, sockets)), (3.0, 7.0));
        fds.close(5, 5, &mut sites, &mut cov);
        fds.close(7, u32::MAX, &mut sites, &mut cov);
        assert_eq!(site_live(&sites, sockets), 3.0);
        // dup2 onto stdout closes the old one quietly; an open at a live number without
        // dup2 means a missed close.
        fds.open(NewFd { ts_ns: 2, fd: 1, syscall: DUP2, stack: None }, &mut sites, &mut stacks, &mut cov);
        fds.open(NewFd { ts_ns: 2, fd: 3, syscall: 257, stack: None }, &mut sites, &mut stacks, &mut cov);
        assert_eq!(cov.fd_reused, 1);
        fds.close(42, 42, &mut sites, &mut cov);
        assert_eq!(cov.unknown_closes, 1);
        // exec closed everything but 0-2.
        fds.reconcile(&[0, 1, 2], &mut sites);
        let total: f64 = sites.iter().map(|(_, s)| s.live_count).sum();
        assert_eq!(total, 3.0);
    }
}
