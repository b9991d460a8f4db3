//! The sampled heap profiler (feature `profiling`): which call sites hold
//! the memory, what they waste inside their blocks, and what they leak.
//!
//! ```no_run
//! # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
//! segalloc::profile::start(0); // the default rate: a sample per 512 KiB
//! let v: Vec<Vec<u8>> = (0..1000).map(|_| vec![0u8; 1000]).collect();
//! let p = segalloc::profile::snapshot();
//! for s in p.top(5) {
//!     println!("{} bytes in {} blocks: {:?}", s.live_bytes, s.live_blocks, p.names(s));
//! }
//! p.write_files("heap").unwrap(); // heap.pb.gz, heap.folded, heap.svg
//! # drop(v);
//! ```
//!
//! # How it samples
//! Each thread's heap counts down the bytes its thread asks for; when the
//! count crosses zero the allocation is *sampled*: its stack is captured and
//! recorded, and a new count is drawn from an exponential distribution of
//! mean `rate` bytes (the default, and `SEGALLOC_PROF_RATE`: 512 KiB). An
//! allocation of `s` bytes is so sampled with probability
//! `p = 1 - exp(-s/rate)`, and each sample stands for `1/p` allocations of
//! its size: tcmalloc's (and Go's) weighting, which makes every estimate
//! here unbiased. The figures are estimates: their relative error shrinks
//! as one over the square root of the samples a site has
//! ([`Site::live_samples`]).
//!
//! A sampled allocation is served by a large block (a mapping of its own,
//! see `large`) marked in its header, whatever its size; its free, which
//! the large-block path handles, takes the sample out of the table. The
//! small free path is unchanged, and costs nothing more. The statistics
//! ([`crate::stats`]) count such a block as the small block it stands for:
//! in `live_blocks()`, `allocations`, `frees`, `requested`, and `allocated`
//! at its class's block size, shown apart as [`crate::Stats::sampled_objects`]
//! and `sampled_bytes`, never as a large object; the rest of its mapping
//! (a header page and the tail past the block) is the profiler's overhead,
//! in `metadata`. So sampling changes no figure but `metadata` and
//! `committed` (and the class rows, whose figures are their pages'). A
//! sampled large request stays a large block, counted as one. The
//! substitute's [`crate::usable_size`] is what the unsampled
//! block would have had (its class's block size), and `realloc` keeps it in
//! place between half that and all of it, else moves it (a new allocation,
//! sampled or not, and the free of this one); the sample keeps its size.
//!
//! Stacks come from the unwinder (`_Unwind_Backtrace`) by default: no frame
//! pointers are needed, allocation-free, guarded against re-entry; or,
//! with `SEGALLOC_PROF_UNWIND=fp`, from the frame pointers (a tenth of the
//! cost, whole only in code built with `-C force-frame-pointers=yes` or
//! `-fno-omit-frame-pointer`; see `sample::fp`). It reads the
//! unwind tables Rust and C compilers emit by default (not with
//! `-C panic=abort -C force-unwind-tables=no`, nor C built with
//! `-fno-asynchronous-unwind-tables`). Symbolisation (names, files, lines;
//! `debug = 1` or more gives the lines, and inlined frames) happens only
//! when a profile is written, on the writing thread, whose allocations are
//! not sampled meanwhile.
//!
//! # Starting it
//! [`start`] (or `SEGALLOC_PROF=1`, read at the first allocation, and the C
//! ABI's `segalloc_prof_start`), [`stop`]; the calling thread starts at
//! once, other threads within 1 MiB of their allocations. No thread is
//! spawned. `SEGALLOC_PROF_OUT=prefix` writes `prefix.pb.gz`,
//! `prefix.folded`, `prefix.svg` and `prefix.leaks.txt` at exit.

mod output;

use crate::sample::{self, Figures, FX};
use crate::thread;
use std::io::{self, Write};

/// Starts sampling: on average one sample per `rate` bytes allocated (0:
/// the default, 512 KiB, or `SEGALLOC_PROF_RATE`). Live samples taken
/// before stay in the profile. The calling thread starts at once; other
/// threads within 1 MiB of their next allocations.
pub fn start(rate: usize) {
    let rate = if rate == 0 {
        crate::options::PROF_RATE.get()
    } else {
        rate
    };
    sample::start(rate);
    let h = thread::heap();
    if !thread::is_empty_heap(h) {
        // SAFETY: the calling thread's own heap.
        unsafe { sample::rearm(&mut (*h).prof) };
    }
}

/// Stops sampling. Sampled blocks still live stay in the profile until
/// they are freed.
pub fn stop() {
    sample::stop();
    // The mappings kept for the next samples' blocks are not needed now.
    crate::large::drain_sampled();
}

/// Whether sampling is on.
pub fn is_active() -> bool {
    sample::active()
}

/// The mean bytes between samples in force.
pub fn rate() -> usize {
    sample::rate()
}

/// One call site (a distinct stack) and its estimated figures.
#[derive(Clone, Debug)]
pub struct Site {
    /// Return addresses, innermost first (the allocator's own frames
    /// included; [`Profile::names`] leaves them out).
    pub frames: Vec<usize>,
    /// Estimated bytes asked for by the site's blocks still live.
    pub live_bytes: u64,
    /// Estimated blocks of the site still live.
    pub live_blocks: u64,
    /// Estimated bytes of the blocks themselves (what their size classes
    /// round the requests up to): `live_block_bytes - live_bytes` is the
    /// site's internal fragmentation.
    pub live_block_bytes: u64,
    /// Estimated bytes the site allocated since sampling began.
    pub alloc_bytes: u64,
    /// Estimated blocks the site allocated since sampling began.
    pub alloc_blocks: u64,
    /// Estimated block bytes of those.
    pub alloc_block_bytes: u64,
    /// Samples of the site still live (the estimates' error is about
    /// `1/sqrt(live_samples)` of them).
    pub live_samples: u64,
    /// Samples of the site taken.
    pub samples: u64,
}

impl Site {
    fn from(frames: Vec<usize>, f: &Figures) -> Site {
        Site {
            frames,
            live_bytes: f.live_bytes,
            live_blocks: (f.live_blocks + FX / 2) / FX,
            live_block_bytes: f.live_block_bytes,
            alloc_bytes: f.alloc_bytes,
            alloc_blocks: (f.alloc_blocks + FX / 2) / FX,
            alloc_block_bytes: f.alloc_block_bytes,
            live_samples: f.live_samples,
            samples: f.samples,
        }
    }

    /// Estimated bytes of the live blocks beyond what was asked for.
    pub fn live_waste(&self) -> u64 {
        self.live_block_bytes.saturating_sub(self.live_bytes)
    }
}

/// A copy of the profile at one moment: every site sampled since the
/// process started (sites are never forgotten), with its figures. Write it
/// in any format, at any time; it holds addresses, symbolised when written.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The sampling rate in force when it was taken.
    pub rate: usize,
    /// Every site.
    pub sites: Vec<Site>,
    /// Samples taken since the process started.
    pub samples: u64,
    /// Samples dropped because the table was full (the estimates are then
    /// low); see `sample` for its size.
    pub dropped: u64,
    /// Sampled blocks live.
    pub live_samples: u64,
    /// Of the samples taken, those whose stack came through frame pointers
    /// (`SEGALLOC_PROF_UNWIND=fp`; the others, by the unwinder).
    pub fp_samples: u64,
    /// Of the samples taken, those whose stack came by segalloc's own walk
    /// of the unwind tables (`SEGALLOC_PROF_UNWIND=dwarf`, the default, on
    /// x86-64 Linux); the rest of those not through frame pointers came by
    /// the system unwinder.
    pub dwarf_samples: u64,
    /// When it was taken (since the epoch).
    pub time: std::time::SystemTime,
}

/// Keeps the calling thread's allocations from being sampled while it
/// lives (snapshots, symbolisation, writing), and gives the thread a heap
/// first so that this holds from its first allocation.
pub(crate) struct Suspend(*mut crate::heap::Heap, bool);

impl Suspend {
    pub(crate) fn new() -> Suspend {
        let mut h = thread::heap();
        if thread::is_empty_heap(h) {
            h = thread::init_heap();
        }
        if h.is_null() || thread::is_empty_heap(h) {
            return Suspend(core::ptr::null_mut(), false);
        }
        // SAFETY: the calling thread's own heap; only it touches `prof`.
        let was = unsafe { core::mem::replace(&mut (*h).prof.busy, true) };
        Suspend(h, was)
    }
}

impl Drop for Suspend {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: as in `new`; heaps are never unmapped.
            unsafe { (*self.0).prof.busy = self.1 };
        }
    }
}

/// The profile now (see [`Profile`]). Allocates (normally, through the
/// global allocator; not sampled); never holds the profiler's lock while
/// it does.
pub fn snapshot() -> Profile {
    let _s = Suspend::new();
    loop {
        let n = sample::site_count() + 64;
        let mut v = Vec::with_capacity(n);
        let (t, all) = sample::copy_sites(&mut v);
        if all {
            return Profile {
                rate: sample::rate(),
                sites: v.into_iter().map(|(fr, f)| Site::from(fr, &f)).collect(),
                samples: t.samples,
                dropped: t.dropped,
                live_samples: t.live,
                fp_samples: t.by_fp,
                dwarf_samples: t.by_dwarf,
                time: std::time::SystemTime::now(),
            };
        }
    }
}

impl Profile {
    /// Estimated live bytes over all sites.
    pub fn live_bytes(&self) -> u64 {
        self.sites.iter().map(|s| s.live_bytes).sum()
    }

    /// The `n` sites holding the most live bytes, most first.
    pub fn top(&self, n: usize) -> Vec<&Site> {
        let mut v: Vec<&Site> = self.sites.iter().filter(|s| s.live_bytes > 0).collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.live_bytes));
        v.truncate(n);
        v
    }

    /// The sites still holding memory, most first: at exit, the leak report.
    pub fn leaks(&self) -> Vec<&Site> {
        self.top(usize::MAX)
    }

    /// The function names of `site`'s stack, innermost first, inlined
    /// frames included, the allocator's own frames (segalloc's, the global
    /// allocator's shims, the C `malloc` family) left out.
    pub fn names(&self, site: &Site) -> Vec<String> {
        let _s = Suspend::new();
        let mut syms = output::Symbols::default();
        syms.frames(&site.frames)
            .into_iter()
            .map(|f| f.name.clone())
            .collect()
    }

    /// Every site with its function names (as [`Profile::names`] gives
    /// them), symbolising each address once.
    pub fn named_sites(&self) -> Vec<(&Site, Vec<String>)> {
        let _s = Suspend::new();
        let mut syms = output::Symbols::default();
        self.sites
            .iter()
            .map(|s| {
                let names = syms.frames(&s.frames).into_iter().map(|f| f.name).collect();
                (s, names)
            })
            .collect()
    }

    /// Writes the profile in pprof's format (gzipped protobuf, for
    /// `go tool pprof` and `pprof`): sample types `alloc_objects`,
    /// `alloc_space`, `inuse_objects`, `inuse_space` (the default) and
    /// `inuse_block_space` (the blocks' bytes: minus `inuse_space`, the
    /// internal fragmentation), functions with file and line.
    pub fn write_pprof<W: Write>(&self, w: W) -> io::Result<()> {
        let _s = Suspend::new();
        output::pprof(self, w)
    }

    /// Writes the live bytes of each site as folded stacks (`a;b;c 1234`,
    /// outermost first), for flame graph tools.
    pub fn write_folded<W: Write>(&self, w: W) -> io::Result<()> {
        let _s = Suspend::new();
        output::folded(self, w)
    }

    /// Writes a flame graph of the live bytes (an SVG; hover a frame for
    /// its bytes).
    pub fn write_svg<W: Write>(&self, w: W) -> io::Result<()> {
        let _s = Suspend::new();
        output::svg(self, w)
    }

    /// Writes a text report: totals, then every site still holding memory
    /// (most first) with its live bytes and blocks, internal waste, bytes
    /// allocated in all, and stack. At exit, this is the leak report.
    pub fn write_report<W: Write>(&self, w: W) -> io::Result<()> {
        let _s = Suspend::new();
        output::report(self, w)
    }

    /// Writes `prefix.pb.gz`, `prefix.folded`, `prefix.svg` and
    /// `prefix.leaks.txt` (the report).
    pub fn write_files(&self, prefix: &str) -> io::Result<()> {
        let _s = Suspend::new();
        let mut syms = output::Symbols::default();
        let open =
            |ext: &str| std::fs::File::create(format!("{prefix}.{ext}")).map(io::BufWriter::new);
        output::pprof_with(self, &mut syms, open("pb.gz")?)?;
        output::folded_with(self, &mut syms, open("folded")?)?;
        output::svg_with(self, &mut syms, open("svg")?)?;
        output::report_with(self, &mut syms, open("leaks.txt")?)
    }
}

/// At exit: when `SEGALLOC_PROF_OUT` names a prefix, writes the profile's
/// files there (the leak report among them); says so on stderr if it cannot.
pub(crate) fn write_at_exit() {
    // SAFETY: getenv returns null or a NUL-terminated string; the
    // environment is not changed by another thread at exit.
    let p = unsafe { libc::getenv(c"SEGALLOC_PROF_OUT".as_ptr()) };
    if p.is_null() {
        return;
    }
    // SAFETY: as above.
    let Ok(prefix) = unsafe { core::ffi::CStr::from_ptr(p) }.to_str() else {
        return;
    };
    if prefix.is_empty() {
        return;
    }
    stop();
    if let Err(e) = snapshot().write_files(prefix) {
        let _ = writeln!(
            io::stderr(),
            "segalloc: could not write the heap profile to {prefix}.*: {e}"
        );
    }
}
