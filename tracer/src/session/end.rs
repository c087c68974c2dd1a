//! How the target ended, for the final report: from the kernel's own records (the OOM
//! killer's victim, the exit status, a fatal signal and its sender) and the limit that
//! applied while it lived.

use std::time::{Duration, SystemTime};

use super::Stop;
use crate::{
    aggregate::ending::Ending,
    clock::monotonic_ns,
    report::{OomInfo, TargetEnd},
    target::{
        launch::Exit,
        limits::{LimitSource, MemoryLimit},
    },
};

/// The end, as reports say it.
pub fn target_end(
    stop: Stop,
    ending: &Ending,
    limit: Option<&MemoryLimit>,
    last_rss: Option<u64>,
) -> TargetEnd {
    let Stop::TargetExited(exit) = stop else {
        return TargetEnd {
            how: "detached".into(),
            status: None,
            signal: None,
            sender: None,
            time: now(),
            oom: None,
        };
    };
    let time = ending.exited_ns.or(ending.oom.map(|o| o.ts_ns)).map_or_else(now, wall_time);
    if let Some(oom) = ending.oom {
        let cgroup_limit = limit.filter(|l| l.source != LimitSource::Ram);
        let info = OomInfo {
            cgroup: cgroup_limit.and_then(|l| l.cgroup.clone()),
            limit_bytes: cgroup_limit.map(|l| l.bytes),
            rss_bytes: if oom.rss_bytes > 0 { oom.rss_bytes } else { last_rss.unwrap_or(0) },
            constraint: if cgroup_limit.is_some() { "memcg" } else { "global" }.into(),
        };
        return TargetEnd {
            how: "oom_kill".into(),
            status: None,
            signal: Some(9),
            sender: None,
            time,
            oom: Some(info),
        };
    }
    // Our own child's status is certain; for another's, the kernel's record.
    let (status, signal) = match exit {
        Some(Exit::Code(code)) => (Some(code), None),
        Some(Exit::Signal(sig)) => (None, Some(sig)),
        None => (ending.exit_status(), ending.killed_by()),
    };
    let sender = ending
        .signal
        .as_ref()
        .filter(|s| Some(s.sig) == signal)
        .map(|s| format!("pid {} ({})", s.sender_pid, s.sender_comm));
    let how = if signal.is_some() { "signal" } else { "exit" };
    TargetEnd { how: how.into(), status, signal, sender, time, oom: None }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The wall-clock time of a CLOCK_MONOTONIC timestamp.
fn wall_time(ts_ns: u64) -> String {
    let ago = Duration::from_nanos(monotonic_ns().saturating_sub(ts_ns));
    humantime::format_rfc3339_seconds(SystemTime::now() - ago).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::ending::{FatalSignal, OomKill};

    #[test]
    fn the_oom_killer_names_the_cgroup_and_its_limit() {
        let ending = Ending {
            oom: Some(OomKill { ts_ns: monotonic_ns(), rss_bytes: 192 << 20, total_vm_bytes: 0 }),
            ..Ending::default()
        };
        let limit =
            MemoryLimit { bytes: 200 << 20, source: LimitSource::CgroupV2, cgroup: Some("/ltoom".into()) };
        let end = target_end(Stop::TargetExited(Some(Exit::Signal(9))), &ending, Some(&limit), None);
        assert_eq!(end.how, "oom_kill");
        let oom = end.oom.unwrap();
        assert_eq!(
            (oom.cgroup.as_deref(), oom.limit_bytes, oom.rss_bytes),
            (Some("/ltoom"), Some(200 << 20), 192 << 20)
        );
        assert_eq!(oom.constraint, "memcg");
    }

    #[test]
    fn signals_exits_and_detaching() {
        let ending = Ending {
            signal: Some(FatalSignal { ts_ns: 0, sig: 9, sender_pid: 77, sender_comm: "kill".into() }),
            exit_code: Some(9),
            exited_ns: Some(monotonic_ns()),
            oom: None,
        };
        let end = target_end(Stop::TargetExited(None), &ending, None, None);
        assert_eq!(
            (end.how.as_str(), end.signal, end.sender.as_deref()),
            ("signal", Some(9), Some("pid 77 (kill)"))
        );
        let exit = Ending { exit_code: Some(3 << 8), ..Ending::default() };
        let end = target_end(Stop::TargetExited(None), &exit, None, None);
        assert_eq!((end.how.as_str(), end.status), ("exit", Some(3)));
        assert_eq!(target_end(Stop::Duration, &exit, None, None).how, "detached");
    }
}
