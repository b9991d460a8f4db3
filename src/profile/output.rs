//! Symbolisation and the profile's formats: pprof (a hand-encoded protobuf,
//! gzipped with `flate2`), folded stacks, a flame graph SVG and a text
//! report. Runs on the writing thread only, never on an allocation path.
//!
//! The protobuf is encoded by hand (a varint and a length prefix are all it
//! takes for `profile.proto`'s dozen fields) rather than with `prost`,
//! whose build (a `protoc` step or its generated code, proc macros) would
//! cost the feature more build time than the whole profiler. The flame
//! graph is drawn here too (a hundred lines) rather than with `inferno`,
//! whose dependencies (a dozen crates: XML writer, hashing, threading)
//! would likewise outweigh it; its output follows the usual flame graph
//! look (root at the bottom, widths proportional to bytes, a title per
//! frame).

use super::{Profile, Site};
use std::collections::HashMap;
use std::io::{self, Write};

/// One symbolised frame.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

/// Symbols of addresses, each resolved once.
#[derive(Default)]
pub(crate) struct Symbols {
    map: HashMap<usize, Vec<Frame>>,
}

/// Whether a function belongs to the allocator's own path (left out of the
/// stacks shown): segalloc's, the unwinder's, the global allocator's shims,
/// the C `malloc` family.
fn internal(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "segalloc::",
        "<segalloc::",
        "backtrace::",
        "_Unwind_",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rg_",
        "__rdl_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
    ];
    const C: &[&str] = &[
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "aligned_alloc",
        "memalign",
        "posix_memalign",
        "valloc",
        "pvalloc",
        "_Znwm",
        "_Znam",
        "_ZnwmSt11align_val_t",
        "_ZnamSt11align_val_t",
        "operator new",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || C.contains(&name)
}

impl Symbols {
    /// The frames (inlined ones included, innermost first) at `addr`.
    fn at(&mut self, addr: usize) -> &[Frame] {
        self.map.entry(addr).or_insert_with(|| {
            let mut v = Vec::new();
            backtrace::resolve(addr as *mut core::ffi::c_void, |s| {
                let name = s
                    .name()
                    .map(|n| format!("{n:#}"))
                    .unwrap_or_else(|| format!("{addr:#x}"));
                let file = s
                    .filename()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                v.push(Frame {
                    name,
                    file,
                    line: s.lineno().unwrap_or(0),
                });
            });
            if v.is_empty() {
                v.push(Frame {
                    name: format!("{addr:#x}"),
                    file: String::new(),
                    line: 0,
                });
            }
            v
        })
    }

    /// The addresses of `frames` (innermost first) past the allocator's own.
    fn user_addrs<'a>(&mut self, frames: &'a [usize]) -> &'a [usize] {
        let mut i = 0;
        while i < frames.len() && self.at(frames[i]).iter().all(|f| internal(&f.name)) {
            i += 1;
        }
        if i == frames.len() {
            // All internal (a stack the unwinder cut short): keep it all.
            return frames;
        }
        &frames[i..]
    }

    /// The symbolised frames of a stack, innermost first, past the
    /// allocator's own.
    pub(crate) fn frames(&mut self, frames: &[usize]) -> Vec<Frame> {
        let addrs = self.user_addrs(frames).to_vec();
        let mut out: Vec<Frame> = Vec::new();
        for a in addrs {
            out.extend(self.at(a).iter().cloned());
        }
        // Inlined internal frames at the top of the first user address.
        let skip = out.iter().take_while(|f| internal(&f.name)).count();
        if skip < out.len() {
            out.drain(..skip);
        }
        out
    }
}

// --- pprof -----------------------------------------------------------------

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn key(b: &mut Vec<u8>, field: u32, wire: u32) {
    varint(b, u64::from(field << 3 | wire));
}

fn uint(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(b, field, 0);
        varint(b, v);
    }
}

fn bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    key(b, field, 2);
    varint(b, v.len() as u64);
    b.extend_from_slice(v);
}

fn packed(b: &mut Vec<u8>, field: u32, vs: &[u64]) {
    let mut m = Vec::new();
    for &v in vs {
        varint(&mut m, v);
    }
    bytes(b, field, &m);
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as u64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The sample types, in the order of each sample's values.
pub(crate) const SAMPLE_TYPES: [(&str, &str); 5] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
    ("inuse_block_space", "bytes"),
];

pub(crate) fn pprof<W: Write>(p: &Profile, w: W) -> io::Result<()> {
    pprof_with(p, &mut Symbols::default(), w)
}

/// An executable mapping of the process (from `/proc/self/maps`).
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    file: String,
}

/// The process's executable file mappings, read when a profile is written
/// (a library loaded and unloaded since a sample was taken is missing).
fn mappings() -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let file = f.nth(2).unwrap_or("");
        if !perms.contains('x') || file.is_empty() {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let hex = |x: &str| u64::from_str_radix(x, 16).ok();
        if let (Some(start), Some(end), Some(offset)) = (hex(a), hex(b), hex(offset)) {
            v.push(Mapping {
                start,
                end,
                offset,
                file: file.to_owned(),
            });
        }
    }
    v
}

/// The `profile.proto` message of `p`, gzipped into `w`.
pub(crate) fn pprof_with<W: Write>(p: &Profile, syms: &mut Symbols, w: W) -> io::Result<()> {
    let mut out = Vec::new();
    let mut st = Strings::default();
    st.id("");
    for (t, u) in SAMPLE_TYPES {
        let mut m = Vec::new();
        uint(&mut m, 1, st.id(t));
        uint(&mut m, 2, st.id(u));
        bytes(&mut out, 1, &m);
    }
    let maps = mappings();
    for (i, m) in maps.iter().enumerate() {
        let mut mm = Vec::new();
        uint(&mut mm, 1, i as u64 + 1);
        uint(&mut mm, 2, m.start);
        uint(&mut mm, 3, m.end);
        uint(&mut mm, 4, m.offset);
        uint(&mut mm, 5, st.id(&m.file));
        // Functions, file names, lines and inlined frames are all given.
        for field in 7..=10 {
            uint(&mut mm, field, 1);
        }
        bytes(&mut out, 3, &mm);
    }
    // Locations by address, functions by (name, file).
    let mut locs: HashMap<usize, u64> = HashMap::new();
    let mut loc_msgs: Vec<Vec<u8>> = Vec::new();
    let mut funcs: HashMap<(String, String), u64> = HashMap::new();
    let mut func_msgs: Vec<Vec<u8>> = Vec::new();
    for s in &p.sites {
        let addrs = syms.user_addrs(&s.frames).to_vec();
        let mut ids = Vec::with_capacity(addrs.len());
        for a in addrs {
            let next = locs.len() as u64 + 1;
            let id = *locs.entry(a).or_insert(next);
            if id == next {
                let mut m = Vec::new();
                uint(&mut m, 1, id);
                let mapping = maps
                    .iter()
                    .position(|m| (m.start..m.end).contains(&(a as u64)))
                    .map_or(0, |i| i as u64 + 1);
                uint(&mut m, 2, mapping);
                uint(&mut m, 3, a as u64);
                for f in syms.at(a).to_vec() {
                    let fnext = funcs.len() as u64 + 1;
                    let fid = *funcs
                        .entry((f.name.clone(), f.file.clone()))
                        .or_insert(fnext);
                    if fid == fnext {
                        let mut fm = Vec::new();
                        uint(&mut fm, 1, fid);
                        uint(&mut fm, 2, st.id(&f.name));
                        uint(&mut fm, 3, st.id(&f.name));
                        uint(&mut fm, 4, st.id(&f.file));
                        func_msgs.push(fm);
                    }
                    let mut lm = Vec::new();
                    uint(&mut lm, 1, fid);
                    uint(&mut lm, 2, u64::from(f.line));
                    bytes(&mut m, 4, &lm);
                }
                loc_msgs.push(m);
            }
            ids.push(id);
        }
        let mut m = Vec::new();
        packed(&mut m, 1, &ids);
        packed(
            &mut m,
            2,
            &[
                s.alloc_blocks,
                s.alloc_bytes,
                s.live_blocks,
                s.live_bytes,
                s.live_block_bytes,
            ],
        );
        bytes(&mut out, 2, &m);
    }
    for m in &loc_msgs {
        bytes(&mut out, 4, m);
    }
    for m in &func_msgs {
        bytes(&mut out, 5, m);
    }
    let nanos = p
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let period_type = {
        let mut m = Vec::new();
        uint(&mut m, 1, st.id("space"));
        uint(&mut m, 2, st.id("bytes"));
        m
    };
    let comment = st.id(&format!(
        "segalloc heap profile: rate {} bytes, {} samples ({} live, {} dropped)",
        p.rate, p.samples, p.live_samples, p.dropped
    ));
    let default_type = st.id("inuse_space");
    for s in &st.table {
        bytes(&mut out, 6, s.as_bytes());
    }
    uint(&mut out, 9, nanos);
    bytes(&mut out, 11, &period_type);
    uint(&mut out, 12, p.rate as u64);
    uint(&mut out, 13, comment);
    uint(&mut out, 14, default_type);
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    gz.write_all(&out)?;
    gz.finish()?.flush()
}

// --- folded stacks and the flame graph ---------------------------------------

/// Each site holding memory: its frame names, outermost first, and bytes.
fn stacks(p: &Profile, syms: &mut Symbols) -> Vec<(Vec<String>, u64)> {
    let mut v = Vec::new();
    for s in p.sites.iter().filter(|s| s.live_bytes > 0) {
        let names: Vec<String> = syms
            .frames(&s.frames)
            .into_iter()
            .rev()
            .map(|f| f.name.replace(';', ","))
            .collect();
        v.push((names, s.live_bytes));
    }
    v
}

pub(crate) fn folded<W: Write>(p: &Profile, w: W) -> io::Result<()> {
    folded_with(p, &mut Symbols::default(), w)
}

pub(crate) fn folded_with<W: Write>(p: &Profile, syms: &mut Symbols, mut w: W) -> io::Result<()> {
    for (names, bytes) in stacks(p, syms) {
        writeln!(w, "{} {bytes}", names.join(";"))?;
    }
    w.flush()
}

#[derive(Default)]
struct Node {
    bytes: u64,
    children: Vec<(String, Node)>,
}

impl Node {
    fn add(&mut self, names: &[String], bytes: u64) {
        self.bytes += bytes;
        if let Some((first, rest)) = names.split_first() {
            let i = match self.children.iter().position(|(n, _)| n == first) {
                Some(i) => i,
                None => {
                    self.children.push((first.clone(), Node::default()));
                    self.children.len() - 1
                }
            };
            self.children[i].1.add(rest, bytes);
        }
    }

    fn depth(&self) -> usize {
        1 + self
            .children
            .iter()
            .map(|(_, c)| c.depth())
            .max()
            .unwrap_or(0)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn svg<W: Write>(p: &Profile, w: W) -> io::Result<()> {
    svg_with(p, &mut Symbols::default(), w)
}

const WIDTH: f64 = 1200.0;
const ROW: f64 = 16.0;

pub(crate) fn svg_with<W: Write>(p: &Profile, syms: &mut Symbols, mut w: W) -> io::Result<()> {
    let mut root = Node::default();
    let mut stacks = stacks(p, syms);
    stacks.sort();
    for (names, bytes) in &stacks {
        root.add(names, *bytes);
    }
    let depth = root.depth();
    let height = (depth as f64 + 3.0) * ROW;
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="11">"#
    )?;
    writeln!(
        w,
        r##"<rect width="100%" height="100%" fill="#f8f8f0"/><text x="{}" y="{}" text-anchor="middle" font-size="14">segalloc heap profile: {} bytes live (estimated), rate {} bytes, {} samples, {} dropped</text>"##,
        WIDTH / 2.0,
        ROW,
        root.bytes,
        p.rate,
        p.samples,
        p.dropped
    )?;
    let total = root.bytes.max(1) as f64;
    // Root ("all") at the bottom.
    let mut todo: Vec<(&str, &Node, f64, usize)> = vec![("all", &root, 0.0, 0)];
    while let Some((name, n, x, d)) = todo.pop() {
        let wpx = n.bytes as f64 / total * WIDTH;
        if wpx < 0.3 {
            continue;
        }
        let y = height - (d as f64 + 1.0) * ROW;
        let h = name
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        let (r, g, b) = (205 + h % 50, 80 + (h >> 8) % 130, (h >> 16) % 55);
        let pct = n.bytes as f64 * 100.0 / total;
        let label = escape(name);
        write!(
            w,
            r#"<g><title>{label} ({} bytes, {pct:.2}%)</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{}" fill="rgb({r},{g},{b})" rx="2"/>"#,
            n.bytes,
            (wpx - 0.5).max(0.1),
            ROW - 1.0
        )?;
        let chars = ((wpx - 6.0) / 7.0) as usize;
        if chars >= 3 {
            let shown: String = if name.chars().count() > chars {
                let mut s: String = name.chars().take(chars.saturating_sub(2)).collect();
                s.push_str("..");
                s
            } else {
                name.to_owned()
            };
            write!(
                w,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 3.0,
                y + ROW - 4.0,
                escape(&shown)
            )?;
        }
        writeln!(w, "</g>")?;
        let mut cx = x;
        for (cn, c) in &n.children {
            todo.push((cn, c, cx, d + 1));
            cx += c.bytes as f64 / total * WIDTH;
        }
    }
    writeln!(w, "</svg>")?;
    w.flush()
}

// --- the report ----------------------------------------------------------------

pub(crate) fn report<W: Write>(p: &Profile, w: W) -> io::Result<()> {
    report_with(p, &mut Symbols::default(), w)
}

fn site_line(s: &Site) -> String {
    let waste = s.live_waste();
    format!(
        "{} bytes live in {} blocks (block bytes {}, waste {} = {:.1}%), {} bytes allocated in {} blocks, {} live samples",
        s.live_bytes,
        s.live_blocks,
        s.live_block_bytes,
        waste,
        waste as f64 * 100.0 / s.live_block_bytes.max(1) as f64,
        s.alloc_bytes,
        s.alloc_blocks,
        s.live_samples
    )
}

pub(crate) fn report_with<W: Write>(p: &Profile, syms: &mut Symbols, mut w: W) -> io::Result<()> {
    // Stacks that differ only in the allocator's own frames (the fast or the
    // slow path took the sample) are one site here.
    let mut merged: Vec<(Vec<Frame>, Site)> = Vec::new();
    let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
    for s in p.leaks() {
        let user = syms.user_addrs(&s.frames).to_vec();
        match index.get(&user) {
            Some(&i) => {
                let m = &mut merged[i].1;
                m.live_bytes += s.live_bytes;
                m.live_blocks += s.live_blocks;
                m.live_block_bytes += s.live_block_bytes;
                m.alloc_bytes += s.alloc_bytes;
                m.alloc_blocks += s.alloc_blocks;
                m.alloc_block_bytes += s.alloc_block_bytes;
                m.live_samples += s.live_samples;
                m.samples += s.samples;
            }
            None => {
                index.insert(user, merged.len());
                merged.push((syms.frames(&s.frames), s.clone()));
            }
        }
    }
    merged.sort_by_key(|m| std::cmp::Reverse(m.1.live_bytes));
    writeln!(
        w,
        "segalloc heap profile: rate {} bytes; {} samples taken ({} stacks by frame pointers, {} by the unwinder: {} by its cached walk, {} by the system's), {} live, {} dropped (table full)",
        p.rate,
        p.samples,
        p.fp_samples,
        p.samples - p.fp_samples,
        p.dwarf_samples,
        p.samples - p.fp_samples - p.dwarf_samples,
        p.live_samples,
        p.dropped
    )?;
    writeln!(
        w,
        "{} bytes live (estimated) at {} sites still holding memory:",
        p.live_bytes(),
        merged.len()
    )?;
    for (i, (frames, s)) in merged.iter().enumerate() {
        writeln!(w, "\n#{} {}", i + 1, site_line(s))?;
        for f in frames {
            if f.file.is_empty() {
                writeln!(w, "    {}", f.name)?;
            } else {
                writeln!(w, "    {} at {}:{}", f.name, f.file, f.line)?;
            }
        }
    }
    w.flush()
}
