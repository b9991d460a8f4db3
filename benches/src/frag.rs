//! The fragmentation workload (issue 13), the Rust counterpart of
//! `benches/c/frag.c`: 2 million blocks of random sizes from 16 to 512
//! bytes (times `--scale`), a random 90% freed, then the allocator's own
//! "give memory back" call, then blocks of 600 to 4000 bytes worth what was
//! freed. What it reports is resident memory at those points, against the
//! bytes still live, not time: the runner's `--frag` prints a table.
//!
//! [`Sizes::Large`] (the runner's `--frag-large`) is the variant of blocks
//! over 8 KiB, as `frag.c -a 8192 -b 131072 -n 8000`: 8,000 blocks (times
//! `--scale`) of 8-128 KiB, each OS page of them written, which segalloc
//! keeps a few to a page of several slices.
//!
//! The call that gives memory back: `segalloc::collect()` (which also
//! meshes with `SEGALLOC_MESH=1`), glibc's `malloc_trim(0)`, mimalloc's
//! `mi_collect(true)`; jemalloc has none here (its arenas purge on their
//! own decay timers, which a 2 s wait would let run; this workload does not
//! wait).

use crate::dispatch::{self, Alloc};
use crate::rng::Rng;
use std::alloc::{alloc, dealloc, Layout};

extern "C" {
    // In the mimalloc library the `mimalloc` crate links.
    fn mi_collect(force: bool);
}

/// What one run saw, in bytes. RSS from `/proc/self/statm`; PSS from
/// `/proc/self/smaps_rollup`, taken after every live block was read
/// through its own address (meshing maps one physical page at several
/// addresses, which RSS counts once for each).
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    /// RSS before the fill: the workload's own arrays, already written.
    pub base: usize,
    /// Bytes asked for by the blocks still live after the frees.
    pub live: usize,
    /// Bytes asked for by the refill's blocks.
    pub refill: usize,
    /// RSS after the frees.
    pub rss_freed: usize,
    /// RSS and PSS after the allocator's call.
    pub rss_collected: usize,
    pub pss_collected: usize,
    /// RSS and PSS after the refill.
    pub rss_refilled: usize,
    pub pss_refilled: usize,
}

impl Figures {
    /// The line the worker prints, which [`Figures::parse`] reads back.
    pub fn line(&self) -> String {
        format!(
            "frag {} {} {} {} {} {} {} {}",
            self.base,
            self.live,
            self.refill,
            self.rss_freed,
            self.rss_collected,
            self.pss_collected,
            self.rss_refilled,
            self.pss_refilled
        )
    }

    /// Reads a [`line`](Self::line) back.
    pub fn parse(s: &str) -> Option<Figures> {
        let v: Vec<usize> = s
            .strip_prefix("frag ")?
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [base, live, refill, rss_freed, rss_collected, pss_collected, rss_refilled, pss_refilled] =
            v[..]
        else {
            return None;
        };
        Some(Figures {
            base,
            live,
            refill,
            rss_freed,
            rss_collected,
            pss_collected,
            rss_refilled,
            pss_refilled,
        })
    }
}

/// Resident bytes (`/proc/self/statm`).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    // SAFETY: a plain query.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Proportional set size (`/proc/self/smaps_rollup`).
fn pss() -> usize {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The allocator's call that gives free memory back (see the module docs).
fn give_back() {
    match dispatch::current() {
        Alloc::Segalloc => segalloc::collect(),
        // SAFETY: glibc's malloc_trim, which only releases free memory.
        Alloc::System => unsafe {
            libc::malloc_trim(0);
        },
        // SAFETY: mimalloc's collect, safe at any time on its own heap.
        Alloc::Mimalloc => unsafe { mi_collect(true) },
        Alloc::Jemalloc => {}
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a small layout")
}

/// A block's tag byte, written at its start and end.
fn tag(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ 0x5a
}

/// The blocks the workload fills the heap with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// 2 million blocks of 16-512 bytes (`frag.c`'s default).
    Small,
    /// 8,000 blocks of 8-128 KiB, every OS page of them written.
    Large,
}

impl Sizes {
    /// The worker's name for the variant.
    pub fn worker(self) -> &'static str {
        match self {
            Sizes::Small => "frag",
            Sizes::Large => "frag-large",
        }
    }

    /// The variant a worker name stands for.
    pub fn from_worker(name: &str) -> Option<Sizes> {
        [Sizes::Small, Sizes::Large]
            .into_iter()
            .find(|s| s.worker() == name)
    }
}

/// Runs the workload (`scale` times 2 million blocks, or 8,000 of the
/// large variant); returns the checksum and the figures.
pub fn run(scale: f64, sizes_of: Sizes) -> (u64, Figures) {
    let (blocks, lo, hi, stride) = match sizes_of {
        Sizes::Small => (2_000_000.0, 16, 513, usize::MAX),
        Sizes::Large => (8_000.0, 8192, 131_073, 4096),
    };
    let n = ((blocks * scale) as usize).max(1000);
    let mut r = Rng::new(0x13_f7a6);
    // The arrays first, written through, so they are in the base figure.
    let mut ptrs: Vec<usize> = vec![1; n];
    let mut sizes: Vec<u32> = vec![1; n];
    let mut f = Figures {
        base: rss(),
        ..Figures::default()
    };
    for i in 0..n {
        let size = r.range(lo, hi);
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout(size)) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout(size));
        }
        // SAFETY: a live block of `size` bytes; with a stride, a byte of
        // each of its OS pages written (a program's data is resident).
        unsafe {
            p.write(tag(i));
            let mut o = stride;
            while o < size {
                p.add(o).write(tag(i));
                o = o.saturating_add(stride);
            }
            p.add(size - 1).write(tag(i));
        }
        ptrs[i] = p as usize;
        sizes[i] = size as u32;
    }
    let mut freed = 0;
    for i in 0..n {
        if r.below(10) != 0 {
            let size = sizes[i] as usize;
            // SAFETY: allocated above with this layout, freed once.
            unsafe { dealloc(ptrs[i] as *mut u8, layout(size)) };
            freed += size;
            sizes[i] = 0;
        } else {
            f.live += sizes[i] as usize;
        }
    }
    f.rss_freed = rss();
    give_back();
    f.rss_collected = rss();
    let mut sum = check(&ptrs, &sizes);
    f.pss_collected = pss();
    let mut refill = Vec::new();
    while f.refill < freed {
        let size = r.range(600, 4001);
        // SAFETY: a non-zero size.
        let p = unsafe { alloc(layout(size)) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout(size));
        }
        // SAFETY: a live block of `size` bytes, written whole (the refill
        // is resident, as a program's data would be).
        unsafe { p.write_bytes(size as u8, size) };
        refill.push((p as usize, size));
        f.refill += size;
    }
    f.rss_refilled = rss();
    sum = sum.wrapping_add(check(&ptrs, &sizes));
    f.pss_refilled = pss();
    for (p, size) in refill {
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(p as *mut u8, layout(size)) };
    }
    for (i, &p) in ptrs.iter().enumerate() {
        if sizes[i] != 0 {
            // SAFETY: a live block of ours with this layout.
            unsafe { dealloc(p as *mut u8, layout(sizes[i] as usize)) };
        }
    }
    (sum, f)
}

/// Reads every live block's tags (so that PSS counts what the program
/// sees); returns their sum, and exits if one is wrong.
fn check(ptrs: &[usize], sizes: &[u32]) -> u64 {
    let mut sum = 0u64;
    for (i, (&p, &s)) in ptrs.iter().zip(sizes).enumerate() {
        if s == 0 {
            continue;
        }
        let p = p as *const u8;
        // SAFETY: a live block of `s` bytes.
        let (a, b) = unsafe { (p.read_volatile(), p.add(s as usize - 1).read_volatile()) };
        if a != tag(i) || b != tag(i) {
            eprintln!("frag: block {i} lost its contents");
            std::process::exit(3);
        }
        sum = sum.wrapping_add(u64::from(a) * s as u64);
    }
    sum
}
