//! How uprobes are attached, chosen once per session from what the kernel supports
//! (`multi::features`), best first:
//!
//! - [`LinkPath::Session`]: the allocator's entries and returns in one uprobe session
//!   link per object, one program (`lt_alloc_session`) whose entry half tells the kernel
//!   when the return half has nothing to do; the Go runtime's uprobes in uprobe_multi
//!   links.
//! - [`LinkPath::Multi`]: one uprobe_multi link per program and object, return probes
//!   in links of their own.
//! - [`LinkPath::Classic`]: one aya perf link per uprobe.
//!
//! All three run the same code in the kernel and see the same calls; they differ in
//! cost: a classic link takes the kernel about 0.1 s to detach, one after the other,
//! a multi or session link one wait for all its uprobes; and a session saves the return
//! probe of every call whose return has nothing to do.

use std::path::Path;

use super::{Uprobe, multi::Features, points::ProbePoint};
use crate::config::Links;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPath {
    Session,
    Multi,
    Classic,
}

impl LinkPath {
    /// The best path `features` allow, as `links` asks, and why not a better one.
    pub fn choose(links: Links, features: &Features) -> (Self, String) {
        if links == Links::Classic {
            return (Self::Classic, "asked for (--links classic or LEAKTRACER_LINKS=classic)".into());
        }
        let multi =
            [("uprobe_multi links", &features.uprobe_multi), ("process filtering", &features.pid_filter)];
        let session = [("uprobe sessions", &features.session), ("session kfuncs", &features.session_kfuncs)];
        let missing = |needs: &[(&str, &super::multi::Support)]| {
            needs.iter().find_map(|(what, s)| match s {
                super::multi::Support::Yes => None,
                super::multi::Support::No(why) => Some(format!("no {what}: {why}")),
            })
        };
        match (missing(&multi), missing(&session)) {
            (Some(why), _) => (Self::Classic, why),
            (None, _) if links == Links::Multi => {
                (Self::Multi, "sessions not asked for (--links multi or LEAKTRACER_LINKS=multi)".into())
            }
            (None, Some(why)) => (Self::Multi, why),
            (None, None) => (Self::Session, "the kernel has uprobe sessions".into()),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Session => "one uprobe session link per allocator object, uprobe_multi links for the rest",
            Self::Multi => "one uprobe_multi link per program and object",
            Self::Classic => "one perf link per uprobe",
        }
    }
}

/// Uprobes that go in one multi link: one program, one object.
#[derive(Debug)]
pub struct Group<'a> {
    pub program: &'static str,
    pub object: &'a Path,
    pub offsets: Vec<u64>,
    pub cookies: Vec<u64>,
    pub what: Vec<&'a str>,
}

/// `uprobes` by program and object, in the order each pair first appears (so return
/// probes listed first are attached first).
pub fn groups(uprobes: &[Uprobe]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for u in uprobes {
        let at = groups.iter().position(|g| g.program == u.program && g.object == u.object);
        let group = match at {
            Some(i) => &mut groups[i],
            None => {
                let g = Group {
                    program: u.program,
                    object: &u.object,
                    offsets: vec![],
                    cookies: vec![],
                    what: vec![],
                };
                groups.push(g);
                groups.last_mut().expect("just pushed")
            }
        };
        group.offsets.push(u.offset);
        group.cookies.push(u.cookie);
        group.what.push(&u.what);
    }
    groups
}

/// The allocator's probe points by object, for one session link each (in the order
/// each object first appears).
pub fn session_groups(points: &[ProbePoint]) -> Vec<(&Path, Vec<&ProbePoint>)> {
    let mut groups: Vec<(&Path, Vec<&ProbePoint>)> = Vec::new();
    for p in points {
        match groups.iter_mut().find(|(object, _)| *object == p.object) {
            Some((_, members)) => members.push(p),
            None => groups.push((&p.object, vec![p])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::probe::multi::Support;

    fn features(multi: bool, pid: bool, session: bool, kfuncs: bool) -> Features {
        let s = |b: bool| if b { Support::Yes } else { Support::No("EINVAL".into()) };
        Features {
            uprobe_multi: s(multi),
            pid_filter: s(pid),
            session: s(session),
            session_kfuncs: s(kfuncs),
        }
    }

    #[test]
    fn the_best_path_the_kernel_allows() {
        let choose = |links, f: &Features| LinkPath::choose(links, f).0;
        assert_eq!(choose(Links::Auto, &features(true, true, true, true)), LinkPath::Session);
        assert_eq!(choose(Links::Auto, &features(true, true, true, false)), LinkPath::Multi);
        assert_eq!(choose(Links::Auto, &features(true, true, false, false)), LinkPath::Multi);
        // Multi links that filter by thread would miss every other thread.
        assert_eq!(choose(Links::Auto, &features(true, false, true, true)), LinkPath::Classic);
        assert_eq!(choose(Links::Auto, &Features::none("old kernel")), LinkPath::Classic);
        assert_eq!(choose(Links::Classic, &features(true, true, true, true)), LinkPath::Classic);
        assert_eq!(choose(Links::Multi, &features(true, true, true, true)), LinkPath::Multi);
        assert_eq!(choose(Links::Multi, &features(true, false, true, true)), LinkPath::Classic);
        let (_, why) = LinkPath::choose(Links::Auto, &features(true, true, false, false));
        assert_eq!(why, "no uprobe sessions: EINVAL");
    }

    fn uprobe(program: &'static str, object: &str, offset: u64) -> Uprobe {
        Uprobe {
            program,
            object: PathBuf::from(object),
            what: format!("{offset:#x}"),
            offset,
            cookie: offset + 1,
        }
    }

    #[test]
    fn multi_links_group_by_program_and_object_in_order() {
        let uprobes = [
            uprobe("ret", "/lib/a", 1),
            uprobe("ret", "/lib/b", 2),
            uprobe("ret", "/lib/a", 3),
            uprobe("enter", "/lib/a", 1),
            uprobe("enter", "/lib/a", 3),
        ];
        let groups = groups(&uprobes);
        let summary: Vec<(&str, &Path, Vec<u64>, Vec<u64>)> =
            groups.iter().map(|g| (g.program, g.object, g.offsets.clone(), g.cookies.clone())).collect();
        assert_eq!(
            summary,
            [
                ("ret", Path::new("/lib/a"), vec![1, 3], vec![2, 4]),
                ("ret", Path::new("/lib/b"), vec![2], vec![3]),
                ("enter", Path::new("/lib/a"), vec![1, 3], vec![2, 4]),
            ]
        );
        assert_eq!(groups[0].what, ["0x1", "0x3"]);
    }

    #[test]
    fn sessions_group_points_by_object() {
        let point = |name, object: &str| ProbePoint {
            name,
            func: 1,
            object: PathBuf::from(object),
            display: object.to_string(),
            offset: 0,
            skip: 0,
        };
        let points = [point("malloc", "/exe"), point("calloc", "/libc"), point("free", "/exe")];
        let groups = session_groups(&points);
        let names: Vec<(&Path, Vec<&str>)> =
            groups.iter().map(|(o, ps)| (*o, ps.iter().map(|p| p.name).collect())).collect();
        assert_eq!(
            names,
            [(Path::new("/exe"), vec!["malloc", "free"]), (Path::new("/libc"), vec!["calloc"])]
        );
    }
}
