//! The heap profiler's low layer (feature `profiling`): the per-heap byte
//! countdown that decides which allocations are sampled, the stack capture,
//! and the table of live samples and call sites. `profile` (the public API
//! and the output formats) reads it; `alloc` and `large` call into it on
//! their cold paths only. It imports only `os` and `options`.
//!
//! # Sampling
//! Every heap counts down the bytes its thread asks for ([`Prof::countdown`],
//! decremented on the allocation paths). When it goes below zero the
//! allocation goes to `alloc`'s cold sampling path, which asks [`decide`]:
//! the allocation is sampled, and a new countdown is drawn from an
//! exponential distribution of mean `rate` bytes. So byte positions are
//! sampled as a Poisson process (the distribution is memoryless, and the
//! countdown is drawn afresh after each sample rather than carrying the
//! overshoot), and an allocation of `s` bytes is sampled with probability
//! `p = 1 - exp(-s / rate)`. Each sample stands for `1 / p` allocations of
//! its size (tcmalloc's and Go's weighting, `scaleHeapSample`), which makes
//! the estimated counts and bytes unbiased.
//!
//! While sampling is stopped a heap's countdown is [`RECHECK`] bytes: its
//! thread comes to the cold path once per that many bytes, sees sampling
//! is off and counts down again, and so starts sampling at most
//! [`RECHECK`] bytes after [`start`] (the calling thread at once).
//!
//! # Stacks
//! By default (option `prof_unwind=dwarf`) from the unwind tables
//! compilers emit by default, through segalloc's own walk on x86-64 Linux
//! (`dwarf`, with `cfi` reading the tables): each frame's rule is kept in a
//! cache keyed by address, so a sample costs a few hundred instructions
//! rather than the system unwinder's 15,000. A stack with a frame the walk
//! does not take (see `dwarf`), and every stack elsewhere, is taken by the
//! system unwinder (`_Unwind_Backtrace`, through the `backtrace` crate's
//! `trace_unsynchronized`), which needs no frame pointers and allocates
//! nothing of its own; `prof_unwind=unwinder` uses it alone. With
//! `prof_unwind=fp` (`SEGALLOC_PROF_UNWIND=fp`), through frame pointers
//! ([`fp`]): whole only in code built with them. A re-entrancy flag in the heap
//! ([`Prof::busy`]) keeps any allocation made during the capture from being
//! sampled in turn. Frames are stored as return addresses; `profile`
//! symbolises them when a profile is written.
//!
//! # The table
//! Fixed-size arrays mapped from the OS on first use (never from the global
//! allocator), under one spin lock, held for a few hundred instructions per
//! sample or freed sampled block: [`SITES`] call sites (distinct stacks, an
//! open-addressing hash table) and [`SAMPLES`] live samples (a free list).
//! When either is full the sample is dropped and counted
//! ([`Totals::dropped`]): the allocation is then served as an ordinary
//! (unmarked) block, and the profile under-counts by that many samples. So
//! is a sampled small allocation that cannot have a mapping of its own
//! (`large::sampled::room`, or the OS said no).
//! Estimates are kept in integers (block counts in 1/1024ths) so that freeing
//! every sampled block brings a site's live figures back to exactly zero.

/// Where the fast walk of the unwind tables is built (it reads x86-64
/// registers and calls glibc's `_dl_find_object`).
macro_rules! fast_dwarf {
    ($($i:item)*) => {$(
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        $i
    )*};
}

fast_dwarf! {
    mod cfi;
    mod dwarf;
}
mod fp;

use crate::options;
use crate::os;
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The deepest stack kept (frames past it are cut off, the innermost kept).
pub(crate) const MAX_FRAMES: usize = 64;
/// Distinct call sites the table holds.
pub(crate) const SITES: usize = 1 << 14;
/// Live samples the table holds (at the default rate, 32 GiB of live heap).
pub(crate) const SAMPLES: usize = 1 << 16;
/// The countdown of a heap while sampling is stopped (see the module docs).
pub(crate) const RECHECK: isize = 1 << 20;
/// The default sampling rate: one sample per this many bytes on average.
pub(crate) const DEFAULT_RATE: usize = 512 * 1024;
/// Fixed-point scale of estimated block counts.
pub(crate) const FX: u64 = 1024;

/// Whether sampling is on.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The mean bytes between samples.
static RATE: AtomicUsize = AtomicUsize::new(DEFAULT_RATE);
/// The value of the option `prof` last acted on ([`UNSEEN`] before the
/// first look): a change of the option (from the environment, or
/// `set_option` at any time) starts or stops sampling at the next check,
/// while `profile::start` and `stop` take the value in force as seen, so
/// that the option does not undo them.
static SEEN_PROF: AtomicUsize = AtomicUsize::new(UNSEEN);
const UNSEEN: usize = usize::MAX;
/// Seeds for heaps' generators.
static SEED: AtomicUsize = AtomicUsize::new(0x9e37_79b9_7f4a_7c15);

/// A heap's sampling state; [`Prof::countdown`] is the one field the
/// allocation paths touch.
#[repr(C)]
pub(crate) struct Prof {
    /// Bytes left before the next sample (or the next look at whether
    /// sampling is on); the allocation paths subtract each request's size
    /// and take the cold path when it goes below zero.
    pub(crate) countdown: isize,
    /// The state of the heap's random generator (xorshift64*); 0 until seeded.
    rng: u64,
    /// Whether `countdown` was drawn while sampling was on.
    armed: bool,
    /// Set while the thread is inside the sampler or writing a profile:
    /// nothing it allocates then is sampled.
    pub(crate) busy: bool,
    /// The thread's stack mapping, for the frame-pointer walk (see [`fp`];
    /// `(0, 0)` until it is first needed).
    stack: (usize, usize),
}

impl Prof {
    /// A state that takes the cold path at the first allocation, which arms
    /// it (or not).
    pub(crate) const NEW: Prof = Prof {
        countdown: 0,
        rng: 0,
        armed: false,
        busy: false,
        stack: (0, 0),
    };

    fn next_u64(&mut self) -> u64 {
        if self.rng == 0 {
            let s = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) as u64;
            self.rng = splitmix(s ^ (self as *mut Prof as u64) ^ os::now_ms()) | 1;
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An exponential draw of mean `rate` bytes, at least 1. Inline: as a
    /// call of its own it saved its registers and reloaded them, a dozen
    /// instructions a sample.
    #[inline(always)]
    fn draw(&mut self, rate: usize) -> isize {
        let d = neg_ln_uniform(self.next_u64()) * rate as isize as f64;
        (d as isize).clamp(1, isize::MAX / 4)
    }
}

/// `-ln(u)` for `u = ((r >> 11) + 1) / 2^53`, uniform in (0, 1] (never 0,
/// whose logarithm is infinite) when `r` is: an exponential variate of
/// mean one. Inline, without glibc's `log` (a call of about 50 instructions, some
/// 65 with the conversions around it; this is about 30): `u`'s exponent
/// gives `e` and its mantissa `m` in `[sqrt(1/2), sqrt(2))`, and
/// `ln(m) = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, `|s| < 0.172`, by the
/// series `2 (s + s^3/3 + s^5/5 + s^7/7 + s^9/9)`, whose omitted terms are
/// below 1e-9 (`2 s^11 / 11 < 7e-10`): the result is within 1e-9 of
/// `-ln(u)`, whose mean over the draws is 1.
#[inline(always)]
fn neg_ln_uniform(r: u64) -> f64 {
    const LN2: f64 = core::f64::consts::LN_2;
    const MANTISSA: u64 = (1 << 52) - 1;
    const ONE: u64 = 1023 << 52;
    // An integer in [1, 2^53]: exact as an f64, and converted as a signed one
    // (one instruction; an unsigned conversion takes a dozen).
    let n = ((r >> 11) + 1) as i64 as f64;
    let bits = n.to_bits();
    // n = 2^e * m, m in [1, 2), then folded into [sqrt(1/2), sqrt(2)).
    let mut e = (bits >> 52) as i64 - 1023;
    let mut m = f64::from_bits((bits & MANTISSA) | ONE);
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let ln_m =
        2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))));
    // u = n / 2^53, so -ln(u) = (53 - e) ln 2 - ln(m).
    (53 - e) as f64 * LN2 - ln_m
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Starts sampling, one sample per `rate` bytes on average (0: the
/// default). The calling thread's heap, if it has one, is armed by the caller.
pub(crate) fn start(rate: usize) {
    SEEN_PROF.store(options::PROF.get(), Ordering::Relaxed);
    RATE.store(
        if rate == 0 { DEFAULT_RATE } else { rate },
        Ordering::Relaxed,
    );
    ACTIVE.store(true, Ordering::Release);
}

/// Stops sampling; live samples stay in the table until their blocks are freed.
pub(crate) fn stop() {
    SEEN_PROF.store(options::PROF.get(), Ordering::Relaxed);
    ACTIVE.store(false, Ordering::Release);
}

/// Whether sampling is on.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The sampling rate in force.
pub(crate) fn rate() -> usize {
    RATE.load(Ordering::Relaxed)
}

/// Sets `p`'s countdown afresh: a draw if sampling is on, else [`RECHECK`].
pub(crate) fn rearm(p: &mut Prof) {
    if active() {
        p.countdown = p.draw(rate());
        p.armed = true;
    } else {
        p.countdown = RECHECK;
        p.armed = false;
    }
}

/// The cold path of a countdown that went below zero on an allocation of
/// `size` bytes: `Some(weight)` (the allocations it stands for) if the
/// allocation is to be sampled, and then `p.busy` is set until [`done`];
/// `None` otherwise (the countdown is reset). Never allocates.
pub(crate) fn decide(p: &mut Prof, size: usize) -> Option<f64> {
    if p.busy {
        // An allocation made by the sampler itself (by the unwinder), or
        // while a profile is written: not sampled, and the count goes on.
        rearm(p);
        return None;
    }
    let want = options::PROF.get();
    let seen = SEEN_PROF.load(Ordering::Relaxed);
    if want != seen {
        // Set from the environment (first look) or changed since.
        if want != 0 {
            start(options::PROF_RATE.get());
        } else if seen == UNSEEN {
            SEEN_PROF.store(want, Ordering::Relaxed);
        } else {
            stop();
        }
    }
    if !p.armed || !active() {
        // Just started (or restarted), or stopped: no sample now.
        rearm(p);
        return None;
    }
    let rate = rate();
    p.busy = true;
    p.countdown = p.draw(rate);
    Some(weight(size, rate as isize as f64))
}

/// The allocations a sample of `size` bytes stands for at `rate`:
/// `1 / (1 - exp(-size / rate))`, one over its probability of being sampled.
fn weight(size: usize, rate: f64) -> f64 {
    // Sizes are below 2^63: converted as signed (one instruction).
    let x = size.max(1) as isize as f64 / rate;
    if x < 1.0 / 16.0 {
        // Nearly every sample (a small block, far below the rate): the
        // series `1/x + 1/2 + x/12 - x^3/720 + x^5/30240 - ...`, whose
        // omitted terms are below 1e-11 here, instead of `exp` (a call to
        // libm, about 60 instructions on glibc). Multiplied by the constants'
        // reciprocals: a division takes several times a product's time.
        return 1.0 / x + 0.5 + x * (1.0 / 12.0) - x * x * x * (1.0 / 720.0);
    }
    let prob = 1.0 - (-x).exp();
    if prob > 0.0 {
        1.0 / prob
    } else {
        1.0
    }
}

/// Ends the sampling [`decide`] began.
pub(crate) fn done(p: &mut Prof) {
    p.busy = false;
}

/// How a stack was taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// By the system unwinder (`_Unwind_Backtrace`).
    Unwinder,
    /// Through frame pointers ([`fp`]).
    Fp,
    /// By the fast walk of the unwind tables (`dwarf`).
    Dwarf,
}

/// A captured stack: return addresses, innermost first.
///
/// The frames past `len` are left uninitialised, and [`capture`] fills the
/// caller's: zeroing the array and returning it by value cost about 90
/// instructions a sample (a `memset` and a `memcpy` of 528 bytes), some
/// 5% of a sample's cost.
pub(crate) struct Stack {
    frames: [MaybeUninit<usize>; MAX_FRAMES],
    len: usize,
    how: How,
}

impl Stack {
    /// A stack with no frame yet, for [`capture`].
    pub(crate) fn new() -> Stack {
        Stack {
            // SAFETY: an array of `MaybeUninit` needs no initialisation.
            // (Written `[MaybeUninit::uninit(); MAX_FRAMES]`, the compiler
            // merged the array with the zeroes of `len` and `how` into one
            // `memset` of 521 bytes, about 50 instructions a sample.)
            frames: unsafe { MaybeUninit::uninit().assume_init() },
            len: 0,
            how: How::Unwinder,
        }
    }

    /// The frames taken, innermost first.
    pub(crate) fn frames(&self) -> &[usize] {
        // SAFETY: the first `len` frames are written (`capture` sets `len`
        // to what it wrote), and `MaybeUninit<usize>` has `usize`'s layout.
        unsafe { core::slice::from_raw_parts(self.frames.as_ptr().cast(), self.len) }
    }
}

/// The calling thread's stack, innermost first, as the option
/// `prof_unwind` says: `dwarf` (the default) by the fast walk of the unwind
/// tables where it is built and every frame's rule is simple, `fp` through
/// frame pointers where the walk finds the stack, `unwinder` by the system
/// unwinder, which also takes the stacks the first two give up on. `p` is
/// the thread's heap's state. Allocates nothing.
/// `s` receives it (from [`Stack::new`]).
#[inline(never)]
pub(crate) fn capture(p: &mut Prof, s: &mut Stack) {
    s.len = 0;
    s.how = How::Unwinder;
    let how = options::PROF_UNWIND.get();
    if how == 1 {
        if let Some(n) = fp::capture(&mut p.stack, &mut s.frames) {
            s.len = n;
            s.how = How::Fp;
            return;
        }
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    if how == 0 {
        if let Some(n) = dwarf::capture(&mut p.stack, &mut s.frames) {
            s.len = n;
            s.how = How::Dwarf;
            return;
        }
    }
    // SAFETY: `trace_unsynchronized` only requires that no other thread use
    // the unwinder's non-reentrant parts at the same time; `_Unwind_Backtrace`
    // (its backend on Linux) is thread-safe.
    unsafe {
        backtrace::trace_unsynchronized(|f| {
            let ip = f.ip() as usize;
            if ip != 0 && s.len < MAX_FRAMES {
                s.frames[s.len] = MaybeUninit::new(ip);
                s.len += 1;
            }
            s.len < MAX_FRAMES
        });
    }
}

/// One call site's figures (estimates; block counts scaled by [`FX`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Figures {
    pub(crate) live_bytes: u64,
    pub(crate) live_blocks: u64,
    pub(crate) live_block_bytes: u64,
    pub(crate) live_samples: u64,
    pub(crate) alloc_bytes: u64,
    pub(crate) alloc_blocks: u64,
    pub(crate) alloc_block_bytes: u64,
    pub(crate) samples: u64,
}

#[repr(C)]
struct Site {
    /// The stack's hash, 0 for an empty slot.
    hash: u64,
    depth: usize,
    frames: [usize; MAX_FRAMES],
    f: Figures,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Sample {
    site: u32,
    next_free: u32,
    bytes: u64,
    blocks: u64,
    block_bytes: u64,
}

/// Counts over the whole table.
#[derive(Clone, Copy, Default)]
pub(crate) struct Totals {
    /// Samples taken and recorded.
    pub(crate) samples: u64,
    /// Samples dropped: the table was full, or their small block could not
    /// get a mapping of its own ([`count_dropped`]).
    pub(crate) dropped: u64,
    /// Live samples.
    pub(crate) live: u64,
    /// Of the samples recorded, those whose stack came through frame
    /// pointers.
    pub(crate) by_fp: u64,
    /// Of the samples recorded, those whose stack came by the fast walk of
    /// the unwind tables.
    pub(crate) by_dwarf: u64,
}

struct Table {
    sites: *mut Site,
    samples: *mut Sample,
    /// Free list of sample slots (index + 1; 0 ends it).
    free: u32,
    /// Slots below this have been used.
    high: u32,
    nsites: usize,
    totals: Totals,
}

// SAFETY: the table's memory is its own (mapped for it), used under the lock.
unsafe impl Send for Table {}

static TABLE: spin::Mutex<Table> = spin::Mutex::new(Table {
    sites: ptr::null_mut(),
    samples: ptr::null_mut(),
    free: 0,
    high: 0,
    nsites: 0,
    totals: Totals {
        samples: 0,
        dropped: 0,
        live: 0,
        by_fp: 0,
        by_dwarf: 0,
    },
});

/// `weight * n` truncated, for the estimates: as `(weight * n as f64) as
/// u64`, but through signed conversions (one instruction each way, where
/// unsigned ones take a dozen: some 40 instructions a sample), exact as
/// long as `n` and the product are below 2^63 (a size, and a weight that
/// is at most `rate / size` plus one).
#[inline(always)]
fn scaled(weight: f64, n: usize) -> u64 {
    (weight * n as isize as f64) as i64 as u64
}

/// The hash of a stack (never 0, an empty slot's): each frame multiplied
/// in, the product rotated so that every frame's high bits reach the low
/// bits the table's index takes (three instructions a frame; a shift and
/// an exclusive or in place of the rotation took five).
fn hash(frames: &[usize]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &f in frames {
        h = (h ^ f as u64)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }
    h | 1
}

impl Table {
    fn ensure(&mut self) -> bool {
        if self.sites.is_null() {
            let s = os::map_scratch(SITES * core::mem::size_of::<Site>());
            if s.is_null() {
                return false;
            }
            let m = os::map_scratch(SAMPLES * core::mem::size_of::<Sample>());
            if m.is_null() {
                // SAFETY: `s` is the scratch mapping of that size made above.
                unsafe { os::unmap_scratch(s, SITES * core::mem::size_of::<Site>()) };
                return false;
            }
            self.sites = s.cast();
            self.samples = m.cast();
        }
        true
    }

    /// The index of the site of `frames` (whose [`hash`] is `h`), added if
    /// new; None when full.
    fn site(&mut self, frames: &[usize], h: u64) -> Option<usize> {
        let mut i = h as usize & (SITES - 1);
        loop {
            // SAFETY: `i < SITES`; the mapping is zeroed, so unused slots
            // read hash 0.
            let s = unsafe { &mut *self.sites.add(i) };
            if s.hash == 0 {
                // Kept at most three quarters full, so probes stay short.
                if self.nsites >= SITES / 4 * 3 {
                    return None;
                }
                s.hash = h;
                s.depth = frames.len();
                s.frames[..frames.len()].copy_from_slice(frames);
                self.nsites += 1;
                return Some(i);
            }
            if s.hash == h && &s.frames[..s.depth] == frames {
                return Some(i);
            }
            i = (i + 1) & (SITES - 1);
        }
    }
}

/// Records a sample of a block of `block` bytes (what an unsampled block
/// would have taken) asked for with `size` bytes, standing for `weight`
/// allocations, made from `stack`. Returns its slot (non-zero), or 0 when
/// the table is full (the sample is dropped and counted). Never allocates.
pub(crate) fn record(stack: &Stack, size: usize, block: usize, weight: f64) -> u32 {
    // Worked out before the lock is taken, to hold it the shorter.
    let frames = stack.frames();
    let h = hash(frames);
    let rec = Sample {
        site: 0,
        next_free: 0,
        bytes: scaled(weight, size),
        blocks: scaled(weight, FX as usize),
        block_bytes: scaled(weight, block),
    };
    let mut t = TABLE.lock();
    let slot = (|| {
        if !t.ensure() {
            return None;
        }
        let site = t.site(frames, h)?;
        let slot = if t.free != 0 {
            let s = t.free;
            // SAFETY: a slot on the free list is below `high`.
            t.free = unsafe { (*t.samples.add(s as usize - 1)).next_free };
            s
        } else if (t.high as usize) < SAMPLES {
            t.high += 1;
            t.high
        } else {
            return None;
        };
        let rec = Sample {
            site: site as u32,
            ..rec
        };
        // SAFETY: `slot - 1 < SAMPLES` and `site < SITES`: ours under the lock.
        unsafe {
            t.samples.add(slot as usize - 1).write(rec);
            let f = &mut (*t.sites.add(site)).f;
            f.live_bytes = f.live_bytes.wrapping_add(rec.bytes);
            f.live_blocks = f.live_blocks.wrapping_add(rec.blocks);
            f.live_block_bytes = f.live_block_bytes.wrapping_add(rec.block_bytes);
            f.live_samples = f.live_samples.wrapping_add(1);
            f.alloc_bytes = f.alloc_bytes.wrapping_add(rec.bytes);
            f.alloc_blocks = f.alloc_blocks.wrapping_add(rec.blocks);
            f.alloc_block_bytes = f.alloc_block_bytes.wrapping_add(rec.block_bytes);
            f.samples = f.samples.wrapping_add(1);
        }
        Some(slot)
    })();
    match slot {
        Some(s) => {
            t.totals.samples = t.totals.samples.wrapping_add(1);
            t.totals.live = t.totals.live.wrapping_add(1);
            t.totals.by_fp = t.totals.by_fp.wrapping_add((stack.how == How::Fp) as u64);
            t.totals.by_dwarf = t
                .totals
                .by_dwarf
                .wrapping_add((stack.how == How::Dwarf) as u64);
            s
        }
        None => {
            t.totals.dropped = t.totals.dropped.wrapping_add(1);
            0
        }
    }
}

/// Counts a sample dropped before it was recorded: its allocation could
/// not be given a sampled block of its own (no room for another mapping,
/// or the OS refused one), so it is served as an ordinary block and the
/// profile under-counts by it, as for a full table. Never allocates.
pub(crate) fn count_dropped() {
    let mut t = TABLE.lock();
    t.totals.dropped = t.totals.dropped.wrapping_add(1);
}

/// The sampled block of slot `slot` (from [`record`]) is freed: its site's
/// live figures drop by the sample's. Never allocates.
pub(crate) fn remove(slot: u32) {
    let mut t = TABLE.lock();
    if slot == 0 || slot > t.high {
        return;
    }
    // SAFETY: `slot - 1 < high`: a slot handed out by `record`, live until now.
    unsafe {
        let rec = *t.samples.add(slot as usize - 1);
        let f = &mut (*t.sites.add(rec.site as usize)).f;
        f.live_bytes = f.live_bytes.wrapping_sub(rec.bytes);
        f.live_blocks = f.live_blocks.wrapping_sub(rec.blocks);
        f.live_block_bytes = f.live_block_bytes.wrapping_sub(rec.block_bytes);
        f.live_samples = f.live_samples.wrapping_sub(1);
        (*t.samples.add(slot as usize - 1)).next_free = t.free;
    }
    t.free = slot;
    t.totals.live = t.totals.live.wrapping_sub(1);
}

/// Takes the table's lock and keeps it (`thread`'s fork handlers, before
/// `fork`): a child forked while another thread held it would wait forever
/// at its first sample or sampled free.
pub(crate) fn lock_for_fork() {
    core::mem::forget(TABLE.lock());
}

/// Gives back the lock [`lock_for_fork`] took, in the parent and the child.
///
/// # Safety
/// The calling thread took it with [`lock_for_fork`] (the fork handlers).
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: per the contract the lock is held, by this thread.
    unsafe { TABLE.force_unlock() };
}

/// The number of sites recorded (to size a buffer for [`copy_sites`]).
pub(crate) fn site_count() -> usize {
    TABLE.lock().nsites
}

/// Copies up to `out.capacity()` sites' stacks and figures into `out`
/// (which must not reallocate: nothing is allocated under the lock), and
/// returns the table's totals and whether every site fitted.
pub(crate) fn copy_sites(out: &mut Vec<(Vec<usize>, Figures)>) -> (Totals, bool) {
    // Stacks are copied into preallocated vectors: fill a list of
    // (stack buffer) first, outside the lock.
    let cap = out.capacity();
    let mut bufs: Vec<Vec<usize>> = (0..cap).map(|_| Vec::with_capacity(MAX_FRAMES)).collect();
    let mut figs: Vec<Figures> = Vec::with_capacity(cap);
    let mut n = 0;
    let (totals, all) = {
        let t = TABLE.lock();
        let mut all = true;
        if !t.sites.is_null() {
            for i in 0..SITES {
                // SAFETY: `i < SITES`, under the lock.
                let s = unsafe { &*t.sites.add(i) };
                if s.hash == 0 {
                    continue;
                }
                if n == cap {
                    all = false;
                    break;
                }
                bufs[n].extend_from_slice(&s.frames[..s.depth]);
                figs.push(s.f);
                n += 1;
            }
        }
        (t.totals, all)
    };
    for (b, f) in bufs.into_iter().zip(figs) {
        out.push((b, f));
    }
    (totals, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The countdowns' mean is the rate, and a sample's weight is one over
    /// its probability: about `rate / size` for small sizes, 1 for sizes
    /// well above the rate. (Sampling itself is not started here: other
    /// unit tests of the library run beside this one.)
    #[test]
    fn draws_average_the_rate_and_weights_invert_the_probability() {
        let mut p = Prof::NEW;
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| p.draw(4096) as f64).sum();
        let mean = sum / n as f64;
        assert!((mean - 4096.0).abs() < 4096.0 * 0.02, "mean {mean}");
        let w = weight(64, 4096.0);
        assert!((w - 1.0 / (1.0 - (-64.0f64 / 4096.0).exp())).abs() < 1e-9);
        assert!((w - 4096.0 / 64.0).abs() < 1.0);
        assert!((weight(1 << 20, 4096.0) - 1.0).abs() < 1e-9);
        // The series used below a sixteenth of the rate agrees with the
        // formula on both sides of its bound.
        for size in [1, 64, 255, 256, 257, 1000, 4096] {
            let exact = 1.0 / (1.0 - (-(size as f64) / 4096.0).exp());
            let w = weight(size, 4096.0);
            assert!(
                (w - exact).abs() < exact * 1e-7,
                "{size}: {w} against {exact}"
            );
        }
        // While busy (inside the sampler), nothing is sampled.
        let mut p = Prof::NEW;
        p.busy = true;
        assert_eq!(decide(&mut p, 1 << 20), None);
    }

    /// The inline `-ln(u)` of the draws agrees with `ln` to 1e-9 over the
    /// whole range of `u`, its edges and both
    /// sides of the fold at `sqrt(2)` included; and over two million draws
    /// the mean interval is within 1% of the rate (its standard error
    /// is 0.07%), at the default rate and a small one.
    #[test]
    fn the_inline_logarithm_is_exact_enough_and_the_mean_is_the_rate() {
        let mut p = Prof::NEW;
        let check = |r: u64| {
            let u = ((r >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (want, got) = (-u.ln(), neg_ln_uniform(r));
            assert!((got - want).abs() <= 1e-9, "{r:#x}: {got} against {want}");
        };
        for r in [0, 1 << 11, u64::MAX, u64::MAX - (1 << 11), 1 << 63, 1 << 40] {
            check(r);
        }
        // Mantissas on both sides of sqrt(2), at several exponents.
        // (`r` stands for the integer `n = (r >> 11) + 1` in [1, 2^53].)
        for e in [1, 2, 20, 40, 52] {
            let at = (core::f64::consts::SQRT_2 * (1u64 << e) as f64) as u64;
            for n in at - 1..=at + 2 {
                check((n - 1) << 11);
            }
        }
        for _ in 0..1_000_000 {
            check(p.next_u64());
        }
        for rate in [DEFAULT_RATE, 4096] {
            let n = 2_000_000;
            let sum: f64 = (0..n).map(|_| p.draw(rate) as f64).sum();
            let mean = sum / n as f64;
            assert!(
                (mean - rate as f64).abs() < rate as f64 * 0.01,
                "{rate}: mean {mean}"
            );
        }
    }
}
