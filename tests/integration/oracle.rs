//! Test oracles for leaktracer: parsers for the Go runtime's own views.
//!
//! * [`parse_goroutine_dump`]: the goroutine dump printed by
//!   `pprof.Lookup("goroutine").WriteTo(w, 2)` == `runtime.Stack(buf, true)`
//!   (also the `goroutineleak` profile at debug=2), Go 1.19 .. 1.27.
//! * [`parse_heap_profile`]: the legacy text heap profile,
//!   `pprof.Lookup("heap").WriteTo(w, 1)`.
//!
//! std only, no dependencies. Format notes by version (observed, see NOTES.md):
//! * header `goroutine N [STATE]:`; STATE = wait reason or status, optionally
//!   followed by ` (leaked)` (1.26+ `_Gleaked`), ` (scan)`, ` (durable)`, then
//!   `, N minutes`, `, locked to thread`, `, synctest bubble N` (1.25+).
//! * `gp=0x.. m=N mp=0x..` / `m=nil` between the id and `[` (1.23+ with
//!   GOTRACEBACK>=system, or for the throwing goroutine).
//! * pprof labels ` {k: v, "quoted key": "v"}` after `]` (1.27 default,
//!   GODEBUG=tracebacklabels=1 earlier versions do not have it).
//! * `created by F` (<= 1.20) vs `created by F in goroutine N` (1.21+).
//! * deep stacks: Go <= 1.20 cuts after 100 frames (hidden runtime frames
//!   count) and prints `...additional frames elided...` only if 100 frames were
//!   printed, so parked goroutines are cut silently at ~97 printed frames
//!   ([`Elided::Unmarked`], heuristic); Go 1.21+ prints the innermost 50 and
//!   outermost 50 frames around `...N frames elided...`.
//! * frame args: `(0xc000010000, {0x4b1234, 0x5})`, `(...)` for inlined
//!   frames, `0x1?` for possibly-inaccurate values (1.18+).

use std::collections::BTreeMap;
use std::fmt;

// ============================================================== common

/// A parse error with the 1-based input line where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

fn perr<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, msg: msg.into() })
}

/// `"/a/b/goroutines.go"` -> `"goroutines.go"`.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `"file.go:57"` with the basename of `file`.
pub fn site_key(file: &str, line: u32) -> String {
    format!("{}:{}", basename(file), line)
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(s, 16).ok()
}

/// Splits `"/path/file.go:57"` into (`"/path/file.go"`, 57).
fn split_file_line(s: &str) -> Option<(String, u32)> {
    let (file, line) = s.rsplit_once(':')?;
    let line: u32 = line.parse().ok()?;
    if file.is_empty() {
        return None;
    }
    Some((file.to_string(), line))
}

// ============================================================== goroutine dump

/// One stack frame: `func(args)` then `\tfile:line [+0xoff] [fp=.. sp=.. pc=..]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Function as printed, e.g. `main.(*server).accept.func1`, `panic`.
    pub func: String,
    /// Argument text inside the parentheses (`...` for inlined frames).
    pub args: String,
    pub file: String,
    pub line: u32,
    /// Offset of the frame PC from the function entry (`+0x65`); None for inlined frames.
    pub pc_off: Option<u64>,
    /// Anything after the offset (`fp=... sp=... pc=...` at GOTRACEBACK=system).
    pub extra: String,
}

impl Frame {
    /// `"file.go:LINE"` (basename).
    pub fn site(&self) -> String {
        site_key(&self.file, self.line)
    }
    /// Inlined frames print `(...)` and no PC offset.
    pub fn inlined(&self) -> bool {
        self.args == "..." && self.pc_off.is_none()
    }
}

/// `created by F [in goroutine N]` + `\tfile:line +0xoff` (the `go` statement).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreatedBy {
    pub func: String,
    /// Parent goroutine id (Go 1.21+ prints `in goroutine N`; None before).
    pub parent_goid: Option<u64>,
    pub file: String,
    pub line: u32,
    pub pc_off: Option<u64>,
}

impl CreatedBy {
    pub fn site(&self) -> String {
        site_key(&self.file, self.line)
    }
}

/// Frames left out of a deep stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elided {
    /// `...additional frames elided...` (Go <= 1.20): the outermost frames are missing.
    Tail,
    /// `...N frames elided...` (Go 1.21+): N middle frames missing, outermost ones printed.
    Middle(u64),
    /// No marker, but the stack was probably cut (heuristic). Go <= 1.20 stops a
    /// traceback after 100 frames *including the hidden runtime frames* and only
    /// prints "...additional frames elided..." when 100 frames were *printed*, so a
    /// parked goroutine's deep stack is cut silently at ~97 printed frames. A
    /// stack with >= [`UNMARKED_TRUNCATION_FRAMES`] printed frames and no marker
    /// gets this value; its outermost frames (and start function) are unknown.
    Unmarked,
}

/// Printed-frame count from which a marker-less stack is treated as truncated.
pub const UNMARKED_TRUNCATION_FRAMES: usize = 90;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Goroutine {
    pub id: u64,
    /// `gp=0x..`, `m=3`, `mp=0x..` pairs printed before `[` (GOTRACEBACK>=system).
    pub header_fields: Vec<(String, String)>,
    /// Everything between `[` and `]` exactly as printed.
    pub state: String,
    /// The wait reason / status: first comma-separated part of `state`, with the
    /// ` (leaked)` and ` (scan)` markers removed (`(nil chan)`, `(no cases)`,
    /// `(durable)`, `(idle)` are part of the reason names and kept).
    pub wait_reason: String,
    /// `, N minutes` (only printed when N >= 1).
    pub minutes: Option<u64>,
    pub locked_to_thread: bool,
    /// ` (leaked)`: Go 1.26+ goroutine leak detector verdict (`_Gleaked`).
    pub leaked: bool,
    pub scan: bool,
    /// `, synctest bubble N` (Go 1.25+).
    pub bubble: Option<u64>,
    /// Unrecognised `, ...` parts of the state.
    pub state_extra: Vec<String>,
    /// pprof labels printed after the state (`{k: v}`; Go 1.27 by default).
    pub labels: Vec<(String, String)>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    pub elided: Option<Elided>,
    pub created_by: Option<CreatedBy>,
    /// Tab-indented lines that were neither frames nor file lines
    /// (e.g. `goroutine running on other thread; stack unavailable`).
    pub notes: Vec<String>,
}

impl Goroutine {
    /// `state` without the `, N minutes` part (stable across time).
    pub fn state_no_minutes(&self) -> String {
        self.state.split(", ").filter(|p| !is_minutes(p)).collect::<Vec<_>>().join(", ")
    }

    /// `state` without `, N minutes` and without the ` (leaked)` / ` (scan)`
    /// markers: the wait reason plus `, locked to thread` and other parts, e.g.
    /// `chan receive, locked to thread`. Stable across time and leak checks.
    pub fn state_normalized(&self) -> String {
        let mut parts = vec![self.wait_reason.clone()];
        if self.locked_to_thread {
            parts.push("locked to thread".to_string());
        }
        parts.extend(self.state_extra.iter().cloned());
        if let Some(b) = self.bubble {
            parts.push(format!("synctest bubble {}", b));
        }
        parts.join(", ")
    }

    /// The goroutine's start function: the outermost printed frame, unless the
    /// outer frames were elided (Go <= 1.20 deep stacks). Note: for `go f(x)` the
    /// runtime's startpc is a compiler wrapper (`main.g.gowrap1` in 1.22+,
    /// `main.g.funcN` before) that tracebacks hide, so this is `f`.
    pub fn start_func(&self) -> Option<&str> {
        if matches!(self.elided, Some(Elided::Tail) | Some(Elided::Unmarked)) {
            return None;
        }
        self.frames.last().map(|f| f.func.as_str())
    }

    /// Creation site `file.go:LINE` of the `go` statement (basename).
    pub fn creation_site(&self) -> Option<String> {
        self.created_by.as_ref().map(|c| c.site())
    }

    /// Innermost frame whose function starts with `prefix` (e.g. `"main."`).
    pub fn top_frame_in(&self, prefix: &str) -> Option<&Frame> {
        self.frames.iter().find(|f| f.func.starts_with(prefix))
    }

    /// Blocked forever as far as the dump can tell: nil-channel send/receive and
    /// `select {}`. (A `select` whose channels are all nil prints plain `select`;
    /// telling it apart needs `g.waiting == nil`, which the dump does not show.)
    pub fn blocked_forever(&self) -> bool {
        matches!(
            self.wait_reason.as_str(),
            "chan send (nil chan)" | "chan receive (nil chan)" | "select (no cases)"
        )
    }

    /// Runtime-internal goroutine (roughly `runtime.isSystemGoroutine`): started
    /// in package runtime (other than runtime.main) or created by package runtime.
    pub fn is_runtime(&self) -> bool {
        match self.start_func() {
            Some(f) if f == "runtime.main" || f == "main.main" => false,
            Some(f) if f.starts_with("runtime.") => true,
            _ => self.created_by.as_ref().is_some_and(|c| c.func.starts_with("runtime.")),
        }
    }
}

fn is_minutes(p: &str) -> bool {
    p.strip_suffix(" minutes").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a debug=2 goroutine dump. Unknown lines outside goroutine blocks are
/// an error; the parser is otherwise lenient about frame details.
pub fn parse_goroutine_dump(text: &str) -> Result<Vec<Goroutine>, ParseError> {
    let mut out = parse_goroutine_blocks(text)?;
    for g in &mut out {
        if g.elided.is_none() && g.frames.len() >= UNMARKED_TRUNCATION_FRAMES {
            g.elided = Some(Elided::Unmarked);
        }
    }
    Ok(out)
}

fn parse_goroutine_blocks(text: &str) -> Result<Vec<Goroutine>, ParseError> {
    let mut out = Vec::new();
    let mut cur: Option<Goroutine> = None;
    // what the next tab-indented line belongs to
    enum Pending {
        None,
        Frame,
        CreatedBy,
    }
    let mut pending = Pending::None;
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            if let Some(g) = cur.take() {
                out.push(g);
            }
            pending = Pending::None;
            continue;
        }
        if line.starts_with("goroutine ") && !line.starts_with('\t') && line.ends_with(':') {
            if let Some(g) = cur.take() {
                out.push(g);
            }
            cur = Some(parse_header(line, ln)?);
            pending = Pending::None;
            continue;
        }
        let g = match cur.as_mut() {
            Some(g) => g,
            None => {
                if line.starts_with("goroutine profile:") {
                    return perr(ln, "debug=1 goroutine profile, expected a debug=2 dump");
                }
                return perr(ln, format!("unexpected line outside a goroutine: {:?}", line));
            }
        };
        if let Some(rest) = line.strip_prefix('\t') {
            match pending {
                Pending::Frame => {
                    let f = g.frames.last_mut().unwrap();
                    match parse_file_line(rest) {
                        Some((file, l, off, extra)) => {
                            f.file = file;
                            f.line = l;
                            f.pc_off = off;
                            f.extra = extra;
                        }
                        None => g.notes.push(rest.to_string()),
                    }
                }
                Pending::CreatedBy => {
                    let c = g.created_by.as_mut().unwrap();
                    match parse_file_line(rest) {
                        Some((file, l, off, _)) => {
                            c.file = file;
                            c.line = l;
                            c.pc_off = off;
                        }
                        None => g.notes.push(rest.to_string()),
                    }
                }
                Pending::None => g.notes.push(rest.to_string()),
            }
            pending = Pending::None;
            continue;
        }
        if line == "...additional frames elided..." {
            g.elided = Some(Elided::Tail);
            pending = Pending::None;
            continue;
        }
        if let Some(n) = line.strip_prefix("...").and_then(|r| r.strip_suffix(" frames elided...")) {
            let n: u64 = match n.parse() {
                Ok(n) => n,
                Err(_) => return perr(ln, "bad elided-frames count"),
            };
            g.elided = Some(Elided::Middle(n));
            pending = Pending::None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("created by ") {
            let (func, parent) = match rest.rsplit_once(" in goroutine ") {
                Some((f, n)) => match n.parse::<u64>() {
                    Ok(n) => (f.to_string(), Some(n)),
                    Err(_) => (rest.to_string(), None),
                },
                None => (rest.to_string(), None),
            };
            g.created_by = Some(CreatedBy { func, parent_goid: parent, ..Default::default() });
            pending = Pending::CreatedBy;
            continue;
        }
        // a function line: NAME(ARGS)
        match split_call(line) {
            Some((func, args)) => {
                g.frames.push(Frame { func, args, ..Default::default() });
                pending = Pending::Frame;
            }
            None => {
                g.notes.push(line.to_string());
                pending = Pending::None;
            }
        }
    }
    if let Some(g) = cur.take() {
        out.push(g);
    }
    Ok(out)
}

/// `goroutine 18 [chan send, 2 minutes]:` (+ variants, see module docs).
fn parse_header(line: &str, ln: usize) -> Result<Goroutine, ParseError> {
    let body = &line["goroutine ".len()..line.len() - 1]; // drop trailing ':'
    let open = match body.find(" [") {
        Some(i) => i,
        None => return perr(ln, "goroutine header without [state]"),
    };
    let mut g = Goroutine::default();
    let mut head = body[..open].split_whitespace();
    g.id = match head.next().and_then(|s| s.parse().ok()) {
        Some(id) => id,
        None => return perr(ln, "bad goroutine id"),
    };
    for kv in head {
        match kv.split_once('=') {
            Some((k, v)) => g.header_fields.push((k.to_string(), v.to_string())),
            None => return perr(ln, format!("bad header field {:?}", kv)),
        }
    }
    let after = &body[open + 2..];
    // the state ends at the first ']' (no wait reason contains ']')
    let close = match after.find(']') {
        Some(i) => i,
        None => return perr(ln, "unterminated [state]"),
    };
    g.state = after[..close].to_string();
    let tail = after[close + 1..].trim();
    if !tail.is_empty() {
        match tail.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(l) => g.labels = parse_labels(l),
            None => return perr(ln, format!("unexpected text after state: {:?}", tail)),
        }
    }
    let mut parts = g.state.split(", ");
    let mut reason = parts.next().unwrap_or("").to_string();
    for p in parts {
        if is_minutes(p) {
            g.minutes = p.trim_end_matches(" minutes").parse().ok();
        } else if p == "locked to thread" {
            g.locked_to_thread = true;
        } else if let Some(b) = p.strip_prefix("synctest bubble ") {
            g.bubble = b.parse().ok();
        } else {
            g.state_extra.push(p.to_string());
        }
    }
    loop {
        if let Some(r) = reason.strip_suffix(" (leaked)") {
            g.leaked = true;
            reason = r.to_string();
        } else if let Some(r) = reason.strip_suffix(" (scan)") {
            g.scan = true;
            reason = r.to_string();
        } else {
            break;
        }
    }
    g.wait_reason = reason;
    Ok(g)
}

/// `k: v, "k 2": "v,2"` (values quoted with Go syntax when needed).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let read = |i: &mut usize, stop: &[char]| -> String {
        let mut t = String::new();
        while *i < b.len() && b[*i] == ' ' {
            *i += 1;
        }
        if *i < b.len() && b[*i] == '"' {
            *i += 1;
            while *i < b.len() && b[*i] != '"' {
                if b[*i] == '\\' && *i + 1 < b.len() {
                    *i += 1;
                    t.push(match b[*i] {
                        'n' => '\n',
                        't' => '\t',
                        c => c,
                    });
                } else {
                    t.push(b[*i]);
                }
                *i += 1;
            }
            *i += 1; // closing quote
        } else {
            while *i < b.len() && !stop.contains(&b[*i]) {
                t.push(b[*i]);
                *i += 1;
            }
        }
        t
    };
    while i < b.len() {
        let k = read(&mut i, &[':']);
        while i < b.len() && b[i] != ':' {
            i += 1;
        }
        i += 1; // ':'
        let v = read(&mut i, &[',']);
        while i < b.len() && b[i] != ',' {
            i += 1;
        }
        i += 1; // ','
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    out
}

/// Splits `main.(*T).m.func1(0x1, {0x2, 0x3})` into name and argument text.
fn split_call(line: &str) -> Option<(String, String)> {
    if !line.ends_with(')') {
        return None;
    }
    let bytes = line.as_bytes();
    let mut depth = 0i32;
    for i in (0..bytes.len()).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    if i == 0 {
                        return None;
                    }
                    let name = &line[..i];
                    let args = &line[i + 1..line.len() - 1];
                    return Some((name.to_string(), args.to_string()));
                }
            }
            _ => {}
        }
    }
    None
}

/// `/p/f.go:57 +0x65 fp=0x.. sp=0x.. pc=0x..` -> (file, line, off, extra).
fn parse_file_line(s: &str) -> Option<(String, u32, Option<u64>, String)> {
    let s = s.trim();
    // the location ends at " +0x" (offset) or " fp=" or the end of the line
    let end = s.find(" +0x").or_else(|| s.find(" fp=")).unwrap_or(s.len());
    let (file, line) = split_file_line(&s[..end])?;
    let mut rest = s[end..].trim();
    let mut off = None;
    if let Some(r) = rest.strip_prefix('+') {
        let (tok, more) = r.split_once(' ').unwrap_or((r, ""));
        off = parse_hex(tok);
        rest = more.trim();
    }
    Some((file, line, off, rest.to_string()))
}

// -------------------------------------------------------------- aggregation

/// Live goroutines per creation site (`file.go:LINE` of the go statement).
pub fn count_by_creation_site(gs: &[Goroutine]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for g in gs {
        if let Some(s) = g.creation_site() {
            *m.entry(s).or_insert(0) += 1;
        }
    }
    m
}

/// Live goroutines per wait reason (`wait_reason`, e.g. `chan send`).
pub fn count_by_wait_reason(gs: &[Goroutine]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for g in gs {
        *m.entry(g.wait_reason.clone()).or_insert(0) += 1;
    }
    m
}

/// Per creation site: per wait reason counts.
pub fn count_by_site_and_reason(gs: &[Goroutine]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for g in gs {
        if let Some(s) = g.creation_site() {
            *m.entry(s).or_default().entry(g.wait_reason.clone()).or_insert(0) += 1;
        }
    }
    m
}

/// Per start function: per `state_normalized()` counts.
pub fn count_by_start_and_state(gs: &[Goroutine]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for g in gs {
        let start = g.start_func().unwrap_or("?").to_string();
        *m.entry(start).or_default().entry(g.state_normalized()).or_insert(0) += 1;
    }
    m
}

/// Summary of one creation site.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteSummary {
    pub count: usize,
    /// `created by` functions seen for this site (normally exactly one).
    pub creators: BTreeMap<String, usize>,
    pub start_funcs: BTreeMap<String, usize>,
    pub wait_reasons: BTreeMap<String, usize>,
}

/// Creation site -> summary (count, creator, start functions, wait reasons).
pub fn summarize_sites(gs: &[Goroutine]) -> BTreeMap<String, SiteSummary> {
    let mut m: BTreeMap<String, SiteSummary> = BTreeMap::new();
    for g in gs {
        let (site, creator) = match &g.created_by {
            Some(c) => (c.site(), c.func.clone()),
            None => continue,
        };
        let e = m.entry(site).or_default();
        e.count += 1;
        *e.creators.entry(creator).or_insert(0) += 1;
        *e.start_funcs.entry(g.start_func().unwrap_or("?").to_string()).or_insert(0) += 1;
        *e.wait_reasons.entry(g.wait_reason.clone()).or_insert(0) += 1;
    }
    m
}

/// Where goroutines are parked: innermost frame in `prefix` (e.g. `main.`) ->
/// count per `state_normalized()`.
pub fn count_by_block_site(gs: &[Goroutine], prefix: &str) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for g in gs {
        if let Some(f) = g.top_frame_in(prefix) {
            *m.entry(f.site()).or_default().entry(g.state_normalized()).or_insert(0) += 1;
        }
    }
    m
}

// ============================================================== heap profile

/// One frame line `#\t0x4b7d59\tmain.load+0x39\t/path/goheap.go:231`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeapFrame {
    pub pc: u64,
    pub func: String,
    pub func_off: Option<u64>,
    pub file: String,
    pub line: u32,
}

impl HeapFrame {
    pub fn site(&self) -> String {
        site_key(&self.file, self.line)
    }
}

/// `inuse_objects: inuse_bytes [alloc_objects: alloc_bytes] @ addrs` + frames.
/// Counts are the runtime's raw sampled counts (not scaled).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeapRecord {
    pub inuse_objects: u64,
    pub inuse_bytes: u64,
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    pub addrs: Vec<u64>,
    /// Innermost first; several lines may share one address (inlining).
    pub frames: Vec<HeapFrame>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeapProfile {
    /// Totals from the `heap profile:` header.
    pub total_inuse_objects: u64,
    pub total_inuse_bytes: u64,
    pub total_alloc_objects: u64,
    pub total_alloc_bytes: u64,
    /// `@ heap/N`: N = 2 * MemProfileRate.
    pub header_rate: u64,
    pub records: Vec<HeapRecord>,
    /// `# Name = value` lines of the trailing runtime.MemStats section.
    pub memstats: BTreeMap<String, String>,
}

impl HeapProfile {
    /// runtime.MemProfileRate at the time of writing.
    pub fn mem_profile_rate(&self) -> u64 {
        self.header_rate / 2
    }
}

/// pprof's unsampling (runtime/pprof protomem.go scaleHeapSample):
/// (count, size) -> estimated (count, size) for a Poisson sampling rate.
pub fn scale_heap_sample(count: u64, size: u64, rate: u64) -> (f64, f64) {
    if count == 0 || size == 0 {
        return (0.0, 0.0);
    }
    if rate <= 1 {
        return (count as f64, size as f64);
    }
    let avg = size as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-avg / rate as f64).exp());
    (count as f64 * scale, size as f64 * scale)
}

fn parse_count_pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// `A: B [C: D]` -> (A, B, C, D).
fn parse_counts4(s: &str) -> Option<(u64, u64, u64, u64)> {
    let (first, rest) = s.split_once('[')?;
    let inner = rest.trim().strip_suffix(']')?;
    let (a, b) = parse_count_pair(first)?;
    let (c, d) = parse_count_pair(inner)?;
    Some((a, b, c, d))
}

/// Parses `pprof.Lookup("heap").WriteTo(w, 1)` output.
pub fn parse_heap_profile(text: &str) -> Result<HeapProfile, ParseError> {
    let mut p = HeapProfile::default();
    let mut lines = text.lines().enumerate().peekable();
    // header
    loop {
        let (i, l) = match lines.next() {
            Some(x) => x,
            None => return perr(0, "empty heap profile"),
        };
        let l = l.trim_end();
        if l.is_empty() {
            continue;
        }
        let rest = match l.strip_prefix("heap profile: ") {
            Some(r) => r,
            None => return perr(i + 1, format!("not a debug=1 heap profile: {:?}", l)),
        };
        let (counts, rate) = match rest.split_once(" @ ") {
            Some(x) => x,
            None => return perr(i + 1, "header without '@'"),
        };
        let (a, b, c, d) = match parse_counts4(counts) {
            Some(x) => x,
            None => return perr(i + 1, "bad header counts"),
        };
        p.total_inuse_objects = a;
        p.total_inuse_bytes = b;
        p.total_alloc_objects = c;
        p.total_alloc_bytes = d;
        p.header_rate = match rate.trim().strip_prefix("heap/").and_then(|r| r.parse().ok()) {
            Some(r) => r,
            None => return perr(i + 1, "bad header rate"),
        };
        break;
    }
    let mut in_memstats = false;
    for (i, l) in lines {
        let ln = i + 1;
        let l = l.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        if l.starts_with("# runtime.MemStats") {
            in_memstats = true;
            continue;
        }
        if in_memstats {
            if let Some(kv) = l.strip_prefix("# ")
                && let Some((k, v)) = kv.split_once(" = ")
            {
                p.memstats.insert(k.trim().to_string(), v.trim().to_string());
            }
            continue;
        }
        if let Some(fr) = l.strip_prefix("#\t") {
            let rec = match p.records.last_mut() {
                Some(r) => r,
                None => return perr(ln, "frame before any record"),
            };
            // fields are separated by one or more tabs (text/tabwriter padding)
            let parts: Vec<&str> = fr.split('\t').filter(|f| !f.is_empty()).collect();
            if parts.len() < 3 {
                return perr(ln, format!("bad frame line {:?}", l));
            }
            let pc = parse_hex(parts[0].trim()).unwrap_or(0);
            let (func, off) = match parts[1].rsplit_once("+0x") {
                Some((f, o)) => (f.to_string(), u64::from_str_radix(o, 16).ok()),
                None => (parts[1].to_string(), None),
            };
            let (file, line) = split_file_line(parts[2].trim()).unwrap_or_default();
            rec.frames.push(HeapFrame { pc, func, func_off: off, file, line });
            continue;
        }
        if l.starts_with('#') {
            continue; // other comments
        }
        let (counts, addrs) = match l.split_once(" @") {
            Some(x) => x,
            None => return perr(ln, format!("unexpected line {:?}", l)),
        };
        let (a, b, c, d) = match parse_counts4(counts) {
            Some(x) => x,
            None => return perr(ln, "bad record counts"),
        };
        let addrs = addrs.split_whitespace().filter_map(parse_hex).collect();
        p.records.push(HeapRecord {
            inuse_objects: a,
            inuse_bytes: b,
            alloc_objects: c,
            alloc_bytes: d,
            addrs,
            frames: Vec::new(),
        });
    }
    Ok(p)
}

/// Totals for one aggregation key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeapTotals {
    pub records: usize,
    pub inuse_objects: u64,
    pub inuse_bytes: u64,
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    /// pprof-style estimates (each record unsampled separately).
    pub est_inuse_objects: f64,
    pub est_inuse_bytes: f64,
    pub est_alloc_objects: f64,
    pub est_alloc_bytes: f64,
}

impl HeapTotals {
    fn add(&mut self, r: &HeapRecord, rate: u64) {
        self.records += 1;
        self.inuse_objects += r.inuse_objects;
        self.inuse_bytes += r.inuse_bytes;
        self.alloc_objects += r.alloc_objects;
        self.alloc_bytes += r.alloc_bytes;
        let (o, b) = scale_heap_sample(r.inuse_objects, r.inuse_bytes, rate);
        self.est_inuse_objects += o;
        self.est_inuse_bytes += b;
        let (o, b) = scale_heap_sample(r.alloc_objects, r.alloc_bytes, rate);
        self.est_alloc_objects += o;
        self.est_alloc_bytes += b;
    }
}

/// Innermost frame whose function starts with `prefix`.
pub fn first_frame_in<'a>(r: &'a HeapRecord, prefix: &str) -> Option<&'a HeapFrame> {
    r.frames.iter().find(|f| f.func.starts_with(prefix))
}

/// Aggregates by the first (innermost) frame in package main: function name.
pub fn heap_by_main_func(p: &HeapProfile) -> BTreeMap<String, HeapTotals> {
    heap_by(p, "main.", |f| f.func.clone())
}

/// Aggregates by the first (innermost) frame in package main: `file.go:LINE`.
pub fn heap_by_main_line(p: &HeapProfile) -> BTreeMap<String, HeapTotals> {
    heap_by(p, "main.", |f| f.site())
}

impl HeapRecord {
    /// Object size of this record (the runtime keys buckets by stack AND size).
    pub fn object_size(&self) -> u64 {
        self.inuse_bytes
            .checked_div(self.inuse_objects)
            .or_else(|| self.alloc_bytes.checked_div(self.alloc_objects))
            .unwrap_or(0)
    }
}

/// Aggregates by (`file.go:LINE` of the first main frame, object size). With
/// MemProfileRate=1 the runtime's own allocations made inside a user allocation
/// (e.g. GC bookkeeping) are attributed to the same line with other sizes;
/// splitting by size separates them.
pub fn heap_by_main_line_and_size(p: &HeapProfile) -> BTreeMap<(String, u64), HeapTotals> {
    let rate = p.mem_profile_rate();
    let mut m: BTreeMap<(String, u64), HeapTotals> = BTreeMap::new();
    for r in &p.records {
        if let Some(f) = first_frame_in(r, "main.") {
            m.entry((f.site(), r.object_size())).or_default().add(r, rate);
        }
    }
    m
}

/// Generic aggregation by the innermost frame matching `prefix`.
pub fn heap_by(
    p: &HeapProfile,
    prefix: &str,
    key: impl Fn(&HeapFrame) -> String,
) -> BTreeMap<String, HeapTotals> {
    let rate = p.mem_profile_rate();
    let mut m: BTreeMap<String, HeapTotals> = BTreeMap::new();
    for r in &p.records {
        if let Some(f) = first_frame_in(r, prefix) {
            m.entry(key(f)).or_default().add(r, rate);
        }
    }
    m
}

// ============================================================== tests

/// The oracle's own tests: parsing known dumps of every format variant.
pub mod tests {
    use super::*;

    const DUMP_119: &str = "goroutine 1 [running]:
runtime/pprof.writeGoroutineStacks({0x5a1ee0, 0xc000012018})
\t/usr/lib/go-1.19/src/runtime/pprof/pprof.go:692 +0x70
main.main()
\t/w/goroutines.go:1160 +0x5e5

goroutine 18 [chan send]:
main.fetch.func1()
\t/w/goroutines.go:345 +0x65
created by main.fetch
\t/w/goroutines.go:342 +0xd6

goroutine 19 [chan send, 3 minutes]:
main.fetch.func1()
\t/w/goroutines.go:345 +0x65
created by main.fetch
\t/w/goroutines.go:342 +0xd6

goroutine 20 [semacquire]:
sync.runtime_SemacquireMutex(0x0?, 0x0?, 0x0?)
\t/usr/lib/go-1.19/src/runtime/sema.go:77 +0x25
sync.(*Mutex).lockSlow(0x5f7a20)
\t/usr/lib/go-1.19/src/sync/mutex.go:171 +0x165
sync.(*Mutex).Lock(...)
\t/usr/lib/go-1.19/src/sync/mutex.go:90
main.mutexWaiter()
\t/w/goroutines.go:700 +0x3c
created by main.startMutexWaiters
\t/w/goroutines.go:760 +0x5a

goroutine 7 [chan receive, locked to thread]:
main.lockedWaiter()
\t/w/goroutines.go:740 +0x3a
created by main.startMiscWaiters
\t/w/goroutines.go:800 +0x8e

goroutine 2 [force gc (idle)]:
runtime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)
\t/usr/lib/go-1.19/src/runtime/proc.go:363 +0xd6
runtime.goparkunlock(...)
\t/usr/lib/go-1.19/src/runtime/proc.go:369
runtime.forcegchelper()
\t/usr/lib/go-1.19/src/runtime/proc.go:302 +0xad
created by runtime.init.6
\t/usr/lib/go-1.19/src/runtime/proc.go:290 +0x25

goroutine 40 [chan receive]:
main.deepPark(0x0)
\t/w/goroutines.go:500 +0x3a
main.deepPark(0x1)
\t/w/goroutines.go:503 +0x25
...additional frames elided...
created by main.startDeep
\t/w/goroutines.go:510 +0x3e
";

    const DUMP_127: &str = "goroutine 33 [chan send (leaked)]:
main.fetch.func1()
\t/w/goroutines.go:345 +0x65
created by main.fetch in goroutine 1
\t/w/goroutines.go:342 +0xd6

goroutine 12 gp=0xc000003500 m=nil [select (no cases), 2 minutes]:
runtime.gopark(0x0?, 0x0?, 0x0?, 0x0?, 0x0?)
\t/go/src/runtime/proc.go:462 +0xce fp=0xc00004a6d8 sp=0xc00004a6b8 pc=0x43b9ae
main.selectNoCases()
\t/w/goroutines.go:560 +0x2c fp=0xc00004a7e0 sp=0xc00004a7c8 pc=0x4b0b6c
created by main.startNilWaiters in goroutine 1
\t/w/goroutines.go:590 +0x45 fp=0xc00004a7e8 sp=0xc00004a7e0 pc=0x4b0c45

goroutine 21 [chan receive] {pool: workers, \"odd key\": \"a, b\"}:
main.poolWorker.func1({0x5c0d48?, 0xc0000a2000?})
\t/w/goroutines.go:420 +0x4d
runtime/pprof.Do({0x5c0d10?, 0x6a3c20?}, {{0xc00001a0a0?, 0x0?, 0x0?}}, 0xc000062fb8)
\t/go/src/runtime/pprof/runtime.go:51 +0x9d
main.poolWorker()
\t/w/goroutines.go:418 +0x6a
created by main.startPool in goroutine 1
\t/w/goroutines.go:430 +0x29

goroutine 41 [chan receive]:
main.deepPark(0x0)
\t/w/goroutines.go:500 +0x3a
...201 frames elided...
main.deepPark(0x12c)
\t/w/goroutines.go:503 +0x25
main.startDeep.func1()
\t/w/goroutines.go:512 +0x1f
created by main.startDeep in goroutine 1
\t/w/goroutines.go:510 +0x3e
";

    pub fn parses_119_dump() {
        let gs = parse_goroutine_dump(DUMP_119).unwrap();
        assert_eq!(gs.len(), 7);
        let g1 = &gs[0];
        assert_eq!(g1.id, 1);
        assert_eq!(g1.state, "running");
        assert!(g1.created_by.is_none());
        assert_eq!(g1.frames[0].func, "runtime/pprof.writeGoroutineStacks");
        assert_eq!(g1.frames[0].args, "{0x5a1ee0, 0xc000012018}");
        assert_eq!(g1.frames[0].pc_off, Some(0x70));
        assert_eq!(g1.start_func(), Some("main.main"));

        let g18 = &gs[1];
        assert_eq!(g18.wait_reason, "chan send");
        let c = g18.created_by.as_ref().unwrap();
        assert_eq!(c.func, "main.fetch");
        assert_eq!(c.parent_goid, None);
        assert_eq!(c.file, "/w/goroutines.go");
        assert_eq!(c.line, 342);
        assert_eq!(c.pc_off, Some(0xd6));
        assert_eq!(g18.start_func(), Some("main.fetch.func1"));

        let g19 = &gs[2];
        assert_eq!(g19.minutes, Some(3));
        assert_eq!(g19.wait_reason, "chan send");
        assert_eq!(g19.state_no_minutes(), "chan send");

        let g20 = &gs[3];
        assert_eq!(g20.wait_reason, "semacquire");
        assert_eq!(g20.frames[2].func, "sync.(*Mutex).Lock");
        assert!(g20.frames[2].inlined());
        assert_eq!(g20.frames[2].line, 90);
        assert_eq!(g20.top_frame_in("main.").unwrap().site(), "goroutines.go:700");

        let g7 = &gs[4];
        assert!(g7.locked_to_thread);
        assert_eq!(g7.wait_reason, "chan receive");
        assert_eq!(g7.state_no_minutes(), "chan receive, locked to thread");
        assert_eq!(g7.state_normalized(), "chan receive, locked to thread");

        assert!(gs[5].is_runtime());
        assert!(!gs[1].is_runtime());
        assert_eq!(gs[6].elided, Some(Elided::Tail));
        assert_eq!(gs[6].start_func(), None);

        let sites = count_by_creation_site(&gs);
        assert_eq!(sites["goroutines.go:342"], 2);
        assert_eq!(sites["goroutines.go:760"], 1);
        let reasons = count_by_wait_reason(&gs);
        assert_eq!(reasons["chan send"], 2);
        assert_eq!(reasons["chan receive"], 2);
        let sr = count_by_site_and_reason(&gs);
        assert_eq!(sr["goroutines.go:342"]["chan send"], 2);
        let sum = summarize_sites(&gs);
        assert_eq!(sum["goroutines.go:342"].creators["main.fetch"], 2);
        assert_eq!(sum["goroutines.go:342"].start_funcs["main.fetch.func1"], 2);
        let blk = count_by_block_site(&gs, "main.");
        assert_eq!(blk["goroutines.go:345"]["chan send"], 2);
    }

    pub fn parses_127_dump() {
        let gs = parse_goroutine_dump(DUMP_127).unwrap();
        assert_eq!(gs.len(), 4);
        assert!(gs[0].leaked);
        assert_eq!(gs[0].wait_reason, "chan send");
        assert_eq!(gs[0].state_no_minutes(), "chan send (leaked)");
        assert_eq!(gs[0].state_normalized(), "chan send");
        assert_eq!(gs[0].created_by.as_ref().unwrap().parent_goid, Some(1));
        assert_eq!(gs[0].created_by.as_ref().unwrap().func, "main.fetch");

        let g = &gs[1];
        assert_eq!(g.id, 12);
        assert_eq!(g.header_fields, vec![("gp".into(), "0xc000003500".into()), ("m".into(), "nil".into())]);
        assert_eq!(g.wait_reason, "select (no cases)");
        assert_eq!(g.minutes, Some(2));
        assert!(g.blocked_forever());
        assert_eq!(g.frames[0].extra, "fp=0xc00004a6d8 sp=0xc00004a6b8 pc=0x43b9ae");
        assert_eq!(g.frames[0].pc_off, Some(0xce));
        assert_eq!(g.created_by.as_ref().unwrap().line, 590);

        let p = &gs[2];
        assert_eq!(p.labels, vec![("pool".into(), "workers".into()), ("odd key".into(), "a, b".into())]);
        assert_eq!(p.start_func(), Some("main.poolWorker"));
        assert_eq!(p.frames[1].func, "runtime/pprof.Do");

        let d = &gs[3];
        assert_eq!(d.elided, Some(Elided::Middle(201)));
        assert_eq!(d.start_func(), Some("main.startDeep.func1"));
        let st = count_by_start_and_state(&gs);
        assert_eq!(st["main.startDeep.func1"]["chan receive"], 1);
    }

    pub fn unmarked_truncation_heuristic() {
        let mut d = String::from("goroutine 21 [chan receive]:\n");
        for _ in 0..97 {
            d.push_str("main.deepPark(0x0?)\n\t/w/goroutines.go:832 +0x4c\n");
        }
        d.push_str("created by main.startDeep\n\t/w/goroutines.go:838 +0x2e\n");
        let gs = parse_goroutine_dump(&d).unwrap();
        assert_eq!(gs[0].frames.len(), 97);
        assert_eq!(gs[0].elided, Some(Elided::Unmarked));
        assert_eq!(gs[0].start_func(), None);
        assert_eq!(gs[0].creation_site().unwrap(), "goroutines.go:838");
    }

    pub fn rejects_garbage_and_debug1() {
        assert!(parse_goroutine_dump("hello\n").is_err());
        let e = parse_goroutine_dump("goroutine profile: total 3\n3 @ 0x1 0x2\n").unwrap_err();
        assert!(e.msg.contains("debug=1"));
        assert!(parse_goroutine_dump("goroutine x [running]:\n").is_err());
        assert_eq!(parse_goroutine_dump("").unwrap().len(), 0);
    }

    pub fn split_call_handles_methods_and_generics() {
        assert_eq!(
            split_call("main.(*server).accept.func1()"),
            Some(("main.(*server).accept.func1".into(), "".into()))
        );
        assert_eq!(
            split_call("main.F[...](0x1, {0x2, 0x3})"),
            Some(("main.F[...]".into(), "0x1, {0x2, 0x3}".into()))
        );
        assert_eq!(split_call("sync.(*Mutex).Lock(...)"), Some(("sync.(*Mutex).Lock".into(), "...".into())));
        assert_eq!(split_call("no parens"), None);
    }

    pub fn file_line_variants() {
        assert_eq!(
            parse_file_line("/a b/c.go:12 +0x1f"),
            Some(("/a b/c.go".into(), 12, Some(0x1f), String::new()))
        );
        assert_eq!(parse_file_line("/a/c.go:12"), Some(("/a/c.go".into(), 12, None, String::new())));
        assert_eq!(parse_file_line("goroutine running on other thread; stack unavailable"), None);
    }

    const HEAP: &str = "heap profile: 3: 196608 [13: 851968] @ heap/1048576
2: 131072 [2: 131072] @ 0x40f0c5 0x4b7d5a 0x4b80e5 0x43a1e5
#\t0x4b7d59\tmain.loadUnbounded+0x39\t\t/w/goheap.go:231
#\t0x4b80e4\tmain.step+0x64\t\t\t/w/goheap.go:260
#\t0x43a1e4\truntime.main+0x1f4\t/go/src/runtime/proc.go:250

1: 65536 [1: 65536] @ 0x40f0c5 0x4b7e1a
#\t0x4b7e19\tmain.loadBounded+0x39\t/w/goheap.go:240

0: 0 [10: 655360] @ 0x40f0c5 0x4b7f1a
#\t0x4b7f19\tmain.makeGarbage+0x39\t/w/goheap.go:249

0: 0 [0: 0] @ 0x40f0c5
#\t0x40f0c4\truntime.malg+0x24\t/go/src/runtime/proc.go:4000


# runtime.MemStats
# Alloc = 2412344
# HeapAlloc = 2412344
# NumGC = 4
";

    pub fn parses_heap_profile() {
        let p = parse_heap_profile(HEAP).unwrap();
        assert_eq!(p.total_inuse_objects, 3);
        assert_eq!(p.total_inuse_bytes, 196608);
        assert_eq!(p.total_alloc_objects, 13);
        assert_eq!(p.total_alloc_bytes, 851968);
        assert_eq!(p.header_rate, 1048576);
        assert_eq!(p.mem_profile_rate(), 524288);
        assert_eq!(p.records.len(), 4);
        assert_eq!(p.records[0].addrs.len(), 4);
        assert_eq!(p.records[0].frames[0].func, "main.loadUnbounded");
        assert_eq!(p.records[0].frames[0].func_off, Some(0x39));
        assert_eq!(p.records[0].frames[0].line, 231);
        assert_eq!(p.memstats["NumGC"], "4");

        let by_func = heap_by_main_func(&p);
        assert_eq!(by_func["main.loadUnbounded"].inuse_objects, 2);
        assert_eq!(by_func["main.loadUnbounded"].inuse_bytes, 131072);
        assert_eq!(by_func["main.makeGarbage"].inuse_bytes, 0);
        assert_eq!(by_func["main.makeGarbage"].alloc_objects, 10);
        assert!(!by_func.contains_key("runtime.malg"));
        let by_line = heap_by_main_line(&p);
        assert_eq!(by_line["goheap.go:240"].inuse_bytes, 65536);
        assert_eq!(p.records[0].frames[1].file, "/w/goheap.go");
        assert_eq!(p.records[0].frames[1].line, 260);
        let bs = heap_by_main_line_and_size(&p);
        assert_eq!(bs[&("goheap.go:231".to_string(), 65536)].inuse_objects, 2);
        assert_eq!(bs[&("goheap.go:249".to_string(), 65536)].alloc_objects, 10);
        // 64 KiB objects at rate 512 KiB: scale = 1/(1-exp(-1/8)) ~ 8.51
        let est = by_func["main.loadUnbounded"].est_inuse_bytes;
        assert!((est / 131072.0 - 8.51).abs() < 0.01, "{}", est);
    }

    pub fn heap_scale_rate_one_is_exact() {
        assert_eq!(scale_heap_sample(3, 300, 1), (3.0, 300.0));
        assert_eq!(scale_heap_sample(0, 0, 512 * 1024), (0.0, 0.0));
        let p = parse_heap_profile(
            "heap profile: 1: 8 [1: 8] @ heap/2\n1: 8 [1: 8] @ 0x1\n#\t0x1\tmain.f+0x1\t/x/a.go:3\n",
        )
        .unwrap();
        assert_eq!(p.mem_profile_rate(), 1);
        assert_eq!(heap_by_main_line(&p)["a.go:3"].est_inuse_bytes, 8.0);
    }

    pub fn heap_rejects_other_formats() {
        assert!(parse_heap_profile("goroutine 1 [running]:\n").is_err());
        assert!(parse_heap_profile("").is_err());
        assert!(parse_heap_profile("heap profile: 1: 2 [3: 4] @ heap/x\n").is_err());
    }

    // Verbatim excerpts of real dumps (results/go1.27/plain/gr-pool.goroutines,
    // results/go1.21/plain/gr-deep-block.goroutines, results/go1.19/plain/hp-both-rate1.heap).
    const REAL_127_POOL: &str = "goroutine 5 [chan receive] {pool: workers}:
main.poolWorker.func1({0x621ba8?, 0x3d2d49b2a390?})
	/work/scratch/gofix/tests/go/goroutines/goroutines.go:489 +0x4a
runtime/pprof.Do({0x621b70?, 0x64ee80?}, {{0x3d2d49b340a0?, 0x0?, 0x0?}}, 0x6220c0)
	/root/.cache/leaktracer/go/1.27.3/go/src/runtime/pprof/runtime.go:57 +0x8c
main.poolWorker()
	/work/scratch/gofix/tests/go/goroutines/goroutines.go:488 +0x6c
created by main.startPool in goroutine 1
	/work/scratch/gofix/tests/go/goroutines/goroutines.go:499 +0x57
";
    const REAL_119_HEAP: &str = "heap profile: 190: 8675552 [1335: 79735840] @ heap/2
100: 6553600 [100: 6553600] @ 0x4c336f 0x4c35e5 0x4c4b25 0x437cf2 0x464201
#	0x4c336e	main.loadUnbounded+0x2e	/work/scratch/gofix/tests/go/goheap/goheap.go:243
#	0x4c35e4	main.step+0xc4		/work/scratch/gofix/tests/go/goheap/goheap.go:285
#	0x4c4b24	main.main+0x8c4		/work/scratch/gofix/tests/go/goheap/goheap.go:418
#	0x437cf1	runtime.main+0x211	/usr/lib/go-1.19/src/runtime/proc.go:250
";

    pub fn real_excerpts() {
        let gs = parse_goroutine_dump(REAL_127_POOL).unwrap();
        assert_eq!(gs[0].labels, vec![("pool".to_string(), "workers".to_string())]);
        assert_eq!(gs[0].start_func(), Some("main.poolWorker"));
        assert_eq!(gs[0].creation_site().unwrap(), "goroutines.go:499");
        assert_eq!(gs[0].created_by.as_ref().unwrap().parent_goid, Some(1));
        assert_eq!(gs[0].frames[1].args, "{0x621b70?, 0x64ee80?}, {{0x3d2d49b340a0?, 0x0?, 0x0?}}, 0x6220c0");
        let p = parse_heap_profile(REAL_119_HEAP).unwrap();
        assert_eq!(p.mem_profile_rate(), 1);
        let l = heap_by_main_line(&p);
        assert_eq!(l["goheap.go:243"].inuse_bytes, 6553600);
        assert_eq!(p.records[0].frames[1].func, "main.step");
        assert_eq!(p.records[0].frames[1].line, 285);
    }

    /// These tests, for the runner.
    pub fn trials() -> Vec<libtest_mimic::Trial> {
        vec![
            crate::harness::plain_trial("oracle::parses_119_dump", parses_119_dump),
            crate::harness::plain_trial("oracle::parses_127_dump", parses_127_dump),
            crate::harness::plain_trial(
                "oracle::unmarked_truncation_heuristic",
                unmarked_truncation_heuristic,
            ),
            crate::harness::plain_trial("oracle::rejects_garbage_and_debug1", rejects_garbage_and_debug1),
            crate::harness::plain_trial(
                "oracle::split_call_handles_methods_and_generics",
                split_call_handles_methods_and_generics,
            ),
            crate::harness::plain_trial("oracle::file_line_variants", file_line_variants),
            crate::harness::plain_trial("oracle::parses_heap_profile", parses_heap_profile),
            crate::harness::plain_trial("oracle::heap_scale_rate_one_is_exact", heap_scale_rate_one_is_exact),
            crate::harness::plain_trial("oracle::heap_rejects_other_formats", heap_rejects_other_formats),
            crate::harness::plain_trial("oracle::real_excerpts", real_excerpts),
        ]
    }
}
