//! Runtime options: every tunable in one table, with its default, read once
//! from its `SEGALLOC_*` environment variable when segalloc first maps
//! memory (without allocating: `getenv` and a parse of the bytes), and settable at
//! run time from Rust ([`set_option`]) and C (`segalloc_option_set`).
//!
//! A malformed or out-of-range value, or an unknown `SEGALLOC_*` name given
//! to [`set_option`], prints one line on stderr naming it and keeps the value
//! in force; nothing aborts. Values are plain relaxed atomics, read on slow
//! paths only, so a change takes effect at the next slow path that consults
//! it. The lowest layer: it imports nothing else of the crate.

use core::sync::atomic::{AtomicUsize, Ordering};

/// How an option's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionKind {
    /// Bytes, with an optional `K`, `M` or `G` suffix (powers of 1024).
    Bytes,
    /// Milliseconds.
    Millis,
    /// A count.
    Count,
    /// `1`/`0` (also `true`/`false`, `yes`/`no`, `on`/`off`).
    Flag,
    /// One of these words; the value is its index (the number is accepted
    /// too).
    Choice(&'static [&'static str]),
}

/// One runtime option (see the module docs and the README's table).
pub struct RuntimeOption {
    /// Its name; the environment variable is `SEGALLOC_` and the name in
    /// capitals.
    pub name: &'static str,
    /// The environment variable that sets it at start-up.
    pub env: &'static str,
    /// How its value is written.
    pub kind: OptionKind,
    /// Its value when nothing sets it.
    pub default: usize,
    /// The largest value it takes (the smallest is 0).
    pub max: usize,
    /// What it does, in a line.
    pub what: &'static str,
    value: AtomicUsize,
}

impl RuntimeOption {
    const fn new(
        name: &'static str,
        env: &'static str,
        kind: OptionKind,
        default: usize,
        max: usize,
        what: &'static str,
    ) -> Self {
        RuntimeOption {
            name,
            env,
            kind,
            default,
            max,
            what,
            value: AtomicUsize::new(default),
        }
    }

    /// The value in force.
    #[inline]
    pub fn get(&self) -> usize {
        self.value.load(Ordering::Relaxed)
    }

    /// The word for the value in force, for an option that takes words.
    ///
    /// ```
    /// let o = segalloc::runtime_options().find(|o| o.name == "page_source").unwrap();
    /// assert_eq!(o.word(), Some("mmap"));
    /// ```
    pub fn word(&self) -> Option<&'static str> {
        match self.kind {
            OptionKind::Choice(words) => words.get(self.get()).copied(),
            _ => None,
        }
    }

    /// Sets the value (already checked against `max`).
    pub(crate) fn set(&self, v: usize) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// Sets the value for the program (already checked against `max`): the
    /// variables are read first if they were not yet, so that a call made
    /// before segalloc's first mapping is not undone by them.
    pub(crate) fn set_by_program(&self, v: usize) {
        init_once();
        self.set(v);
    }
}

const MIB: usize = 1 << 20;
/// The default of [`LARGE_CACHE`] (`large_cache::BUDGET`).
pub(crate) const LARGE_CACHE_DEFAULT: usize = 128 * MIB;

/// Milliseconds free memory waits before it is purged (heaps' dirty pages,
/// the large-block cache, parked heaps).
pub(crate) static PURGE_DELAY_MS: RuntimeOption = RuntimeOption::new(
    "purge_delay_ms",
    "SEGALLOC_PURGE_DELAY_MS",
    OptionKind::Millis,
    100,
    3_600_000,
    "how long free memory stays resident before it is purged (dirty pages, cached large blocks, parked heaps)",
);
/// The least resident free memory a heap keeps before purging.
pub(crate) static PURGE_MIN: RuntimeOption = RuntimeOption::new(
    "purge_min",
    "SEGALLOC_PURGE_MIN",
    OptionKind::Bytes,
    MIB,
    1 << 40,
    "free memory each heap may keep resident at least (also an eighth of its use, and room to regrow to its recent peak)",
);
/// Wholly free segments kept process-wide for reuse.
pub(crate) static SEGMENT_CACHE: RuntimeOption = RuntimeOption::new(
    "segment_cache",
    "SEGALLOC_SEGMENT_CACHE",
    OptionKind::Count,
    8,
    1 << 16,
    "wholly free 4 MiB segments kept mapped for reuse by any thread",
);
/// Resident bytes those kept segments may hold.
pub(crate) static SEGMENT_CACHE_RESIDENT: RuntimeOption = RuntimeOption::new(
    "segment_cache_resident",
    "SEGALLOC_SEGMENT_CACHE_RESIDENT",
    OptionKind::Bytes,
    2 * MIB,
    1 << 40,
    "resident memory the kept free segments may hold; past it they are purged first",
);
/// Heaps of exited threads kept whole for new threads.
pub(crate) static PARKED_HEAPS: RuntimeOption = RuntimeOption::new(
    "parked_heaps",
    "SEGALLOC_PARKED_HEAPS",
    OptionKind::Count,
    8,
    1024,
    "heaps of exited threads kept whole for the next threads (0: none)",
);
/// The most memory segalloc commits (0: no limit).
pub(crate) static LIMIT: RuntimeOption = RuntimeOption::new(
    "limit",
    "SEGALLOC_LIMIT",
    OptionKind::Bytes,
    0,
    1 << 50,
    "the most memory segalloc commits, as stats().committed counts it (0: no limit); past it, after giving back free memory and its caches, an allocation fails (null, ENOMEM)",
);
/// Most bytes the large-block cache holds.
pub(crate) static LARGE_CACHE: RuntimeOption = RuntimeOption::new(
    "large_cache",
    "SEGALLOC_LARGE_CACHE",
    OptionKind::Bytes,
    LARGE_CACHE_DEFAULT,
    1 << 40,
    "most bytes of freed large blocks kept mapped for reuse (0: none)",
);
/// The words [`PAGE_SOURCE`] takes, in the order of their values.
pub(crate) const PAGE_SOURCES: &[&str] = &["mmap", "brk"];
/// Where small-object segments come from: 0 `mmap`, 1 `brk`.
pub(crate) static PAGE_SOURCE: RuntimeOption = RuntimeOption::new(
    "page_source",
    "SEGALLOC_PAGE_SOURCE",
    OptionKind::Choice(PAGE_SOURCES),
    0,
    1,
    "where segments come from: mmap, or brk (the program break, falling back to mmap; only where segalloc owns the heap)",
);
/// Past this much committed memory, purge eagerly (0: never).
pub(crate) static LIMIT_SOFT: RuntimeOption = RuntimeOption::new(
    "limit_soft",
    "SEGALLOC_LIMIT_SOFT",
    OptionKind::Bytes,
    0,
    1 << 50,
    "past this much committed memory (0: none), free memory is purged and the caches emptied at once; no allocation fails",
);
/// Ask for transparent huge pages.
pub(crate) static THP: RuntimeOption = RuntimeOption::new(
    "thp",
    "SEGALLOC_THP",
    OptionKind::Flag,
    0,
    1,
    "1: mark segments and large blocks for transparent huge pages (madvise MADV_HUGEPAGE), for large heaps with random access",
);
/// Give back the OS pages of pages in use that hold no live block.
pub(crate) static SUB_PURGE: RuntimeOption = RuntimeOption::new(
    "sub_purge",
    "SEGALLOC_SUB_PURGE",
    OptionKind::Flag,
    1,
    1,
    "1: inside sparse pages in use, the 4 KiB OS pages that hold no live block are purged too, on the purge delay and by collect() (0: only wholly free pages)",
);
/// Purge idle heaps from a background thread.
pub(crate) static BACKGROUND: RuntimeOption = RuntimeOption::new(
    "background",
    "SEGALLOC_BACKGROUND",
    OptionKind::Flag,
    0,
    1,
    "1: a background thread, started once main has begun, purges the free memory of heaps whose threads stopped allocating, and the expired caches, on the purge delay",
);
/// Merge sparse pages with disjoint live blocks (see `mesh`).
pub(crate) static MESH: RuntimeOption = RuntimeOption::new(
    "mesh",
    "SEGALLOC_MESH",
    OptionKind::Flag,
    0,
    1,
    "1: collect() also meshes, and so does the timed purge: pages of one size class whose live blocks sit at disjoint offsets share one physical page (memfd), the other is given back; fresh blocks are handed out in a rotated order (each OS page's from a random block)",
);
/// One stderr line per notable event.
pub(crate) static VERBOSE: RuntimeOption = RuntimeOption::new(
    "verbose",
    "SEGALLOC_VERBOSE",
    OptionKind::Flag,
    0,
    1,
    "1: one line on stderr for each option read from the environment, mapping that fails, limit hit, and the background thread's start; and if huge pages are asked for but the kernel has them off",
);
/// Print the statistics (and these options) at exit.
pub(crate) static SHOW_STATS: RuntimeOption = RuntimeOption::new(
    "show_stats",
    "SEGALLOC_SHOW_STATS",
    OptionKind::Flag,
    0,
    1,
    "print the statistics and the options in force on stderr at exit",
);

/// Start the heap profiler at start-up (feature `profiling`).
#[cfg(feature = "profiling")]
pub(crate) static PROF: RuntimeOption = RuntimeOption::new(
    "prof",
    "SEGALLOC_PROF",
    OptionKind::Flag,
    0,
    1,
    "1 (feature profiling): sample allocations for the heap profiler from the first allocation on (set at run time: each thread starts, or with 0 stops, within 1 MiB of its allocations); SEGALLOC_PROF_OUT=prefix writes the profile at exit",
);
/// The heap profiler's mean bytes between samples (feature `profiling`).
#[cfg(feature = "profiling")]
pub(crate) static PROF_RATE: RuntimeOption = RuntimeOption::new(
    "prof_rate",
    "SEGALLOC_PROF_RATE",
    OptionKind::Bytes,
    512 * 1024,
    1 << 40,
    "(feature profiling) mean bytes allocated between two samples of the heap profiler (0: the default, 512K)",
);

/// How the heap profiler takes stacks (feature `profiling`): the unwind
/// tables (a cached walk, `sample::dwarf`, falling back to the system
/// unwinder), frame pointers (`sample::fp`), or the system unwinder only.
#[cfg(feature = "profiling")]
pub(crate) static PROF_UNWIND: RuntimeOption = RuntimeOption::new(
    "prof_unwind",
    "SEGALLOC_PROF_UNWIND",
    OptionKind::Choice(PROF_UNWINDERS),
    0,
    2,
    "(feature profiling) how samples' stacks are taken: dwarf (the unwind tables, with a cache of rules; works with any build), fp (frame pointers: whole only in code built with -C force-frame-pointers=yes / -fno-omit-frame-pointer) or unwinder (the system unwinder alone, _Unwind_Backtrace: the slowest)",
);
/// The words of [`PROF_UNWIND`], by value.
#[cfg(feature = "profiling")]
pub(crate) const PROF_UNWINDERS: &[&str] = &["dwarf", "fp", "unwinder"];

/// The purge delay in force, in milliseconds.
#[inline]
pub(crate) fn purge_delay_ms() -> u64 {
    PURGE_DELAY_MS.get() as u64
}

/// The options of every build, in the README's order, then `$extra`.
macro_rules! every_option {
    ($($extra:expr),*) => {
        &[
            &PURGE_DELAY_MS,
            &PURGE_MIN,
            &SEGMENT_CACHE,
            &SEGMENT_CACHE_RESIDENT,
            &LARGE_CACHE,
            &PARKED_HEAPS,
            &PAGE_SOURCE,
            &LIMIT,
            &LIMIT_SOFT,
            &THP,
            &SUB_PURGE,
            &BACKGROUND,
            &MESH,
            &VERBOSE,
            &SHOW_STATS,
            $($extra),*
        ]
    };
}

/// Every option, in the README's order.
#[cfg(not(feature = "profiling"))]
pub(crate) static ALL: &[&RuntimeOption] = every_option!();
/// Every option, in the README's order (the profiler's last).
#[cfg(feature = "profiling")]
pub(crate) static ALL: &[&RuntimeOption] = every_option!(&PROF, &PROF_RATE, &PROF_UNWIND);

/// Every runtime option, with its value in force.
///
/// ```
/// for o in segalloc::runtime_options() {
///     assert!(o.get() <= o.max, "{}", o.name);
/// }
/// ```
pub fn runtime_options() -> impl Iterator<Item = &'static RuntimeOption> {
    // The values in force: the environment's, even before any allocation.
    init_once();
    ALL.iter().copied()
}

/// Why [`set_option`] refused a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// No option has that name.
    Unknown,
    /// The value is not of the option's kind, or above its maximum.
    BadValue,
}

/// Sets the option `name` (as in the README's table, e.g. `"purge_delay_ms"`,
/// or its environment variable's name) from `value`, written as in the
/// environment. On error the value in force stays, and one line on stderr
/// names the option (or the unknown name) and the value, as for a variable.
///
/// ```
/// segalloc::set_option("purge_delay_ms", "250").unwrap();
/// assert!(segalloc::set_option("purge_delay_ms", "soon").is_err());
/// assert!(segalloc::set_option("no_such_option", "1").is_err());
/// segalloc::set_option("purge_delay_ms", "100").unwrap();
/// ```
pub fn set_option(name: &str, value: &str) -> Result<(), OptionError> {
    let Some(o) = find(name.as_bytes()) else {
        let mut line = Line::new();
        line.push(b"segalloc: ignoring ");
        line.push(&name.as_bytes()[..name.len().min(40)]);
        line.push(b"=");
        line.push(&value.as_bytes()[..value.len().min(40)]);
        line.push(b": no such option\n");
        line.write(2);
        return Err(OptionError::Unknown);
    };
    match parse(o.kind, value.as_bytes()).filter(|&v| v <= o.max) {
        Some(v) => {
            o.set_by_program(v);
            Ok(())
        }
        None => {
            complain(o, value.as_bytes());
            Err(OptionError::BadValue)
        }
    }
}

/// Sets the option `name` to the number `v` (C's `mallopt`).
#[cfg_attr(not(feature = "override"), allow(dead_code))]
pub(crate) fn set_number(name: &str, v: usize) -> Result<(), OptionError> {
    let o = find(name.as_bytes()).ok_or(OptionError::Unknown)?;
    if v > o.max {
        return Err(OptionError::BadValue);
    }
    o.set_by_program(v);
    Ok(())
}

/// The option named `name` (its name or its variable's), if any.
pub(crate) fn find(name: &[u8]) -> Option<&'static RuntimeOption> {
    // A program may ask (`segalloc_option_get`) before segalloc's first
    // mapping, when the environment was not read yet.
    init_once();
    ALL.iter()
        .copied()
        .find(|o| o.name.as_bytes() == name || o.env.as_bytes() == name)
}

/// Reads the variables the first time it is called (a relaxed load after
/// that): from the first mapping segalloc makes, before any option is
/// consulted.
#[inline]
pub(crate) fn init_once() {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    if DONE.load(Ordering::Relaxed) == 0 && DONE.swap(1, Ordering::Relaxed) == 0 {
        init_from_env();
    }
}

/// Reads every option's variable.
pub(crate) fn init_from_env() {
    // `verbose` first, so that it tells of the others.
    let rest = ALL.iter().copied().filter(|o| !core::ptr::eq(*o, &VERBOSE));
    for o in core::iter::once(&VERBOSE).chain(rest) {
        if let Some(v) = env_value(o) {
            match parse(o.kind, v).filter(|&x| x <= o.max) {
                Some(x) => {
                    o.set(x);
                    verbose(|l| {
                        l.push(o.env.as_bytes());
                        l.push(b"=");
                        l.push(&v[..v.len().min(40)]);
                        l.push(b": ");
                        l.push(o.name.as_bytes());
                        l.push(b" ");
                        l.number(x);
                    });
                }
                None => complain(o, v),
            }
        }
    }
}

/// The value of `o`'s environment variable, if set.
fn env_value(o: &RuntimeOption) -> Option<&'static [u8]> {
    let mut name = [0u8; 48];
    {
        let n = o.env.len();
        if n >= name.len() {
            return None;
        }
        name[..n].copy_from_slice(o.env.as_bytes());
        name[n] = 0;
        // SAFETY: a NUL-terminated name; a non-null result is a
        // NUL-terminated string that we only read, which lives as long as
        // the environment (segalloc never changes it).
        unsafe {
            let p = libc::getenv(name.as_ptr().cast());
            if p.is_null() {
                return None;
            }
            Some(core::ffi::CStr::from_ptr(p).to_bytes())
        }
    }
}

/// `n` in decimal, written at the end of `buf`: the digits (no allocation).
pub(crate) fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// With the option `verbose` on, writes one line on stderr: `segalloc: `,
/// what `f` puts in the line, and a newline (no allocation: the line is
/// built on the stack, up to 200 bytes).
pub(crate) fn verbose(f: impl FnOnce(&mut Line)) {
    if VERBOSE.get() == 0 {
        return;
    }
    let mut line = Line::new();
    line.push(b"segalloc: ");
    f(&mut line);
    line.push(b"\n");
    line.write(2);
}

/// One line on stderr: the variable, its value, and the value kept.
fn complain(o: &RuntimeOption, v: &[u8]) {
    let mut line = Line::new();
    line.push(b"segalloc: ignoring ");
    line.push(o.env.as_bytes());
    line.push(b"=");
    line.push(&v[..v.len().min(40)]);
    let what: &[u8] = match o.kind {
        OptionKind::Bytes => b": not a size (bytes, or with K, M, G) up to ",
        OptionKind::Millis => b": not a number of milliseconds up to ",
        OptionKind::Count => b": not a count up to ",
        OptionKind::Flag => b": not 0 or 1, up to ",
        OptionKind::Choice(words) => {
            line.push(b": not one of");
            for w in words {
                line.push(b" ");
                line.push(w.as_bytes());
            }
            b", nor a number up to "
        }
    };
    line.push(what);
    line.number(o.max);
    line.push(b"; keeping ");
    line.number(o.get());
    line.push(b"\n");
    line.write(2);
}

/// Parses `v` as an option of `kind`; `None` if it is not one.
pub(crate) fn parse(kind: OptionKind, v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if kind == OptionKind::Flag {
        return match v {
            b"1" | b"true" | b"yes" | b"on" => Some(1),
            b"0" | b"false" | b"no" | b"off" => Some(0),
            _ => None,
        };
    }
    if let OptionKind::Choice(words) = kind {
        if let Some(i) = words.iter().position(|w| w.as_bytes() == v) {
            return Some(i);
        }
    }
    let (digits, shift) = match (kind, v.last()) {
        (OptionKind::Bytes, Some(b'k' | b'K')) => (&v[..v.len() - 1], 10),
        (OptionKind::Bytes, Some(b'm' | b'M')) => (&v[..v.len() - 1], 20),
        (OptionKind::Bytes, Some(b'g' | b'G')) => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    n.checked_mul(1usize << shift)
}

/// A line built on the stack (no allocation), written with one `write`.
pub(crate) struct Line {
    buf: [u8; 200],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 200],
            len: 0,
        }
    }
    /// Appends `s` (cut at the line's end).
    pub(crate) fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }
    /// Appends `n` in decimal.
    pub(crate) fn number(&mut self, n: usize) {
        let mut d = [0u8; 20];
        self.push(decimal(n, &mut d));
    }
    fn write(&self, fd: i32) {
        // SAFETY: writing our own initialised bytes.
        unsafe { libc::write(fd, self.buf.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_counts_and_flags_parse() {
        assert_eq!(parse(OptionKind::Bytes, b"4096"), Some(4096));
        assert_eq!(parse(OptionKind::Bytes, b"64K"), Some(64 << 10));
        assert_eq!(parse(OptionKind::Bytes, b" 2m "), Some(2 << 20));
        assert_eq!(parse(OptionKind::Bytes, b"1G"), Some(1 << 30));
        assert_eq!(parse(OptionKind::Millis, b"250"), Some(250));
        assert_eq!(
            parse(OptionKind::Millis, b"250K"),
            None,
            "no suffix on times"
        );
        assert_eq!(parse(OptionKind::Count, b""), None);
        assert_eq!(parse(OptionKind::Count, b"-1"), None);
        assert_eq!(parse(OptionKind::Count, b"99999999999999999999999"), None);
        assert_eq!(parse(OptionKind::Bytes, b"99999999999999G"), None);
        assert_eq!(parse(OptionKind::Flag, b"yes"), Some(1));
        assert_eq!(parse(OptionKind::Flag, b"off"), Some(0));
        assert_eq!(parse(OptionKind::Flag, b"2"), None);
        let source = OptionKind::Choice(PAGE_SOURCES);
        assert_eq!(parse(source, b"brk"), Some(1));
        assert_eq!(parse(source, b" mmap"), Some(0));
        assert_eq!(parse(source, b"sbrk"), None);
    }

    #[test]
    fn set_option_checks_name_kind_and_range() {
        let before = SEGMENT_CACHE_RESIDENT.get();
        assert_eq!(set_option("segment_cache_resident", "3M"), Ok(()));
        assert_eq!(SEGMENT_CACHE_RESIDENT.get(), 3 << 20);
        assert_eq!(
            set_option("SEGALLOC_SEGMENT_CACHE_RESIDENT", "lots"),
            Err(OptionError::BadValue)
        );
        assert_eq!(SEGMENT_CACHE_RESIDENT.get(), 3 << 20, "kept on error");
        assert_eq!(
            set_option("segment_cache_resident", "2048G"),
            Err(OptionError::BadValue),
            "above the maximum"
        );
        assert_eq!(set_option("segment_cachee", "1"), Err(OptionError::Unknown));
        SEGMENT_CACHE_RESIDENT
            .value
            .store(before, Ordering::Relaxed);
    }

    #[test]
    fn every_default_is_in_range_and_names_match_variables() {
        for o in ALL {
            assert!(o.default <= o.max, "{}", o.name);
            let mut env = std::string::String::from("SEGALLOC_");
            env.push_str(&o.name.to_ascii_uppercase());
            assert_eq!(env, o.env);
        }
    }
}
