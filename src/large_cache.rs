//! The large-block cache: freed large blocks kept resident for quick reuse.
//!
//! A large block is a mapping of its own (a huge segment, see `large`).
//! Unmapping it at every free and mapping a fresh one at the next allocation
//! costs two system calls and, worse, a page fault for every page the next
//! block touches (about 1.8 µs per 4 KiB page measured on the 2-core CI VM, so
//! 7 ms for 16 MiB). Instead a freed mapping goes here, still resident, and
//! the next large allocation takes it back:
//!
//! - **In place**: a cached mapping that starts on a segment boundary and is
//!   at least as long as needed becomes the new block where it is, with no
//!   system call at all. The smallest such mapping is taken; if it is more
//!   than an eighth longer than needed, its tail stays cached as a mapping
//!   of its own (no waste, no system call), marked with a token that the
//!   block's header also keeps, so that when the block is freed while the
//!   tail is still here they join again.
//! - **Moved**: a long enough mapping that does not start on a segment
//!   boundary (such a tail) is moved to an aligned address with `mremap`,
//!   which carries its pages over without copying or faulting.
//! - **Grown**: otherwise the longest cached mapping is moved and extended
//!   with `mremap`; only the extension is fresh memory that faults in.
//!
//! And a block cut from a cached mapping that grows by `realloc` takes its
//! tail back first (`large::resize`), in place and without a system call.
//! A live block that shrinks leaves its tail here the same way
//! ([`put_tail`]), still mapped and resident, rather than giving it back to
//! the OS: growing again (a vector cut back and refilled) takes it back
//! without a system call or a page fault.
//!
//! Every cached mapping lies within one kernel mapping (VMA), as every live
//! block does, because `mremap` cannot act across two: mappings are only
//! ever cut (a block from the front of a cached mapping) and joined back
//! when the two halves come from the same cut. A block whose mapping the
//! program split itself (`mprotect`, `madvise` with flags) may make an
//! `mremap` fail; every caller then falls back to a fresh mapping, or to a
//! copy (see `alloc::realloc`).
//!
//! Bounds: at most [`SLOTS`] mappings, and a byte budget that lets the live
//! large blocks grow back to their recent peak without faulting memory in
//! (so live blocks and cache together stay within that peak), never less
//! than [`FLOOR`] and never more than the option `large_cache` ([`BUDGET`]
//! by default; see [`budget`]); the mapping just freed is always kept if it
//! is no longer than that. Past the soft limit (option `limit_soft`) the
//! cache keeps nothing. To
//! make room, the oldest cached mappings are unmapped (or their tails, just
//! enough). A cached mapping unused for the purge delay (option `purge_delay_ms`) is unmapped at the
//! next check, made on the large allocation and free paths and on the small
//! allocation slow path (`alloc::malloc_slow`), so a program that stops
//! using large blocks gives the memory back as soon as it allocates again;
//! the recent peak is forgotten then too. `collect()` empties the cache.
//!
//! Why these bounds: measured with `scripts/malloc-large.c` under
//! `LD_PRELOAD` (blocks of 1 to 32 MiB, one byte written per page, 5 live;
//! 2,000 iterations; shared 2-core VM, so times are indicative, page-fault
//! counts are not): a fixed budget of 32 / 64 / 96 / 128 MiB took 1.63 M /
//! 0.79 M / 0.34 M / 0.12 M page faults and peaked at 152 / 169 / 179 / 191
//! MiB of RSS, against glibc's 1.36 M and 191 MiB. Bounding the cache by
//! the regrowth to the peak instead, with a floor of 32 MiB (the largest
//! block glibc serves from its heap) and a cap of 128 MiB, took 0.26 M faults
//! at 164 MiB; with 10 live blocks of 1 to 8 MiB it peaked at 82 MiB like
//! glibc, where a fixed 96 MiB held 89 MiB (20 live blocks of 1 to 4 MiB:
//! 77.5 MiB, glibc 76.4). 8 and 16 slots measured the same; 16 leave room
//! for the tails of cuts.
//!
//! The cache is process-wide behind a spin lock, taken only for bookkeeping
//! (a scan of at most [`SLOTS`] entries): the system calls (`munmap` of
//! evicted mappings, `mremap` of moved ones) are made after it is dropped.
//! The bookkeeping is a plain value ([`Cache`]), so its policy is tested
//! without touching memory.

use crate::options::purge_delay_ms;
use crate::os;
use crate::segment::SEGMENT_SIZE;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use static_assertions::const_assert;

/// Most bytes the cache holds by default (the option `large_cache` sets it).
pub(crate) const BUDGET: usize = crate::options::LARGE_CACHE_DEFAULT;
/// Most mappings the cache holds.
pub(crate) const SLOTS: usize = 16;
/// The cache may always hold this much; beyond it (up to [`BUDGET`]), only
/// what it takes for the live large blocks to grow back to their recent peak.
pub(crate) const FLOOR: usize = 32 << 20;

const_assert!(BUDGET % os::OS_PAGE == 0);
const_assert!(FLOOR <= BUDGET);
const_assert!(FLOOR >= 2 * crate::size_class::MAX_SMALL);
const_assert!(SLOTS >= 2);

/// A stretch of address space: `len` bytes from `addr`, both page multiples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

/// A cached mapping.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: usize,
    len: usize,
    /// When it was freed (ms, `os::now_ms`): purged the purge delay (option `purge_delay_ms`) later.
    since: u64,
    /// Non-zero for the tail cut from a mapping whose front is a live block
    /// carrying the same token in its header (`Segment::split`).
    token: usize,
}

const NO_ENTRY: Entry = Entry {
    addr: 0,
    len: 0,
    since: 0,
    token: 0,
};

/// What [`Cache::take`] found for a block mapping of `need` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Use `len` (at least `need`) bytes at the segment-aligned `addr` where
    /// they are. `split` is non-zero when the rest of the cached mapping
    /// stayed in the cache under that token, right after the block.
    InPlace {
        addr: usize,
        len: usize,
        split: usize,
    },
    /// Move `len` (at least `need`) bytes at `addr` to an aligned address.
    Move { addr: usize, len: usize },
    /// Move the `len` (less than `need`) bytes at `addr` to an aligned
    /// address and extend them to `need`.
    Grow { addr: usize, len: usize },
    /// Nothing cached: map fresh memory.
    Miss,
}

/// Ranges taken out of the cache, to unmap once the lock is dropped.
pub(crate) struct Evicted {
    ranges: [Range; SLOTS + 1],
    n: usize,
}

impl Evicted {
    pub(crate) const fn new() -> Evicted {
        Evicted {
            ranges: [Range { addr: 0, len: 0 }; SLOTS + 1],
            n: 0,
        }
    }

    fn push(&mut self, r: Range) {
        // The callers evict at most every entry and cut one: SLOTS + 1.
        debug_assert!(self.n < self.ranges.len());
        if let Some(slot) = self.ranges.get_mut(self.n) {
            *slot = r;
            self.n += 1;
        }
    }

    /// The ranges gathered.
    pub(crate) fn ranges(&self) -> &[Range] {
        &self.ranges[..self.n]
    }

    /// Unmaps every range gathered, forgetting the segment headers in them.
    fn unmap_all(&self) {
        for r in self.ranges() {
            crate::segment::registry::forget(r.addr as *const u8, r.len);
            os::unmap(r.addr as *mut u8, r.len);
        }
    }
}

/// The cache's bookkeeping: which mappings it holds. Makes no system call.
pub(crate) struct Cache {
    entries: [Entry; SLOTS],
    n: usize,
    bytes: usize,
    tokens: usize,
}

impl Cache {
    /// An empty cache.
    pub(crate) const fn new() -> Cache {
        Cache {
            entries: [NO_ENTRY; SLOTS],
            n: 0,
            bytes: 0,
            tokens: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Mappings held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// When the oldest mapping is due for purging (ms), or 0 when empty.
    pub(crate) fn deadline(&self) -> u64 {
        let oldest = self.entries[..self.n].iter().map(|e| e.since).min();
        oldest.map_or(0, |t| t.saturating_add(purge_delay_ms()).max(1))
    }

    fn remove(&mut self, i: usize) -> Entry {
        let e = self.entries[i];
        self.n -= 1;
        self.entries[i] = self.entries[self.n];
        self.bytes -= e.len;
        e
    }

    fn push(&mut self, e: Entry) {
        debug_assert!(self.n < SLOTS);
        if let Some(slot) = self.entries.get_mut(self.n) {
            *slot = e;
            self.n += 1;
            self.bytes += e.len;
        }
    }

    fn token(&mut self) -> usize {
        self.tokens = self.tokens.wrapping_add(1).max(1);
        self.tokens
    }

    /// Finds cached memory for a block mapping of `need` bytes (a page
    /// multiple) and takes it out of the cache. Without `can_move` (no
    /// `mremap`, see `os::mremap_usable`) only in-place reuse is offered.
    pub(crate) fn take(&mut self, need: usize, can_move: bool) -> Found {
        let (mut aligned, mut unaligned, mut longest) = (None, None, None);
        let shorter = |a: Option<usize>, i: usize, es: &[Entry]| match a {
            Some(j) if es[j].len <= es[i].len => a,
            _ => Some(i),
        };
        for (i, e) in self.entries[..self.n].iter().enumerate() {
            if e.len >= need {
                if e.addr % SEGMENT_SIZE == 0 {
                    aligned = shorter(aligned, i, &self.entries);
                } else {
                    unaligned = shorter(unaligned, i, &self.entries);
                }
            } else if longest.is_none_or(|j: usize| self.entries[j].len < e.len) {
                longest = Some(i);
            }
        }
        // Cut a tail off only when it is worth a mapping of its own.
        let slack = need / 8;
        if let Some(i) = aligned {
            let e = self.entries[i];
            if e.len - need <= slack {
                self.remove(i);
                return Found::InPlace {
                    addr: e.addr,
                    len: e.len,
                    split: 0,
                };
            }
            let split = self.token();
            self.entries[i] = Entry {
                addr: e.addr + need,
                len: e.len - need,
                since: e.since,
                token: split,
            };
            self.bytes -= need;
            return Found::InPlace {
                addr: e.addr,
                len: need,
                split,
            };
        }
        if !can_move {
            return Found::Miss;
        }
        if let Some(i) = unaligned {
            let e = self.entries[i];
            if e.len - need <= slack {
                self.remove(i);
                return Found::Move {
                    addr: e.addr,
                    len: e.len,
                };
            }
            // Take the end: the entry keeps its start, and so its token.
            self.entries[i].len -= need;
            self.bytes -= need;
            return Found::Move {
                addr: e.addr + e.len - need,
                len: need,
            };
        }
        if let Some(i) = longest {
            let e = self.remove(i);
            return Found::Grow {
                addr: e.addr,
                len: e.len,
            };
        }
        Found::Miss
    }

    /// Takes at least `extra` bytes from the front of the cached tail that
    /// starts at `addr` under `token` (cut from the mapping of a live block
    /// that ends at `addr` and grows into it), if it is still here. Returns
    /// how many bytes it took: `extra`, or the whole tail when it is shorter
    /// or barely longer, or 0. What is left of the tail keeps the token: it
    /// still starts where the block now ends.
    pub(crate) fn take_tail(&mut self, addr: usize, token: usize, extra: usize) -> usize {
        if token == 0 {
            return 0;
        }
        let found = self.entries[..self.n]
            .iter()
            .position(|e| e.token == token && e.addr == addr);
        let Some(i) = found else {
            return 0;
        };
        let e = self.entries[i];
        if e.len <= extra + extra / 8 {
            self.remove(i);
            return e.len;
        }
        self.entries[i].addr += extra;
        self.entries[i].len -= extra;
        self.bytes -= extra;
        extra
    }

    /// Caches the freed mapping of `len` bytes at `addr` (the base of a huge
    /// segment whose header carries `split`), at time `now`, keeping the
    /// cache within `budget` bytes (and the cap, option `large_cache`; the
    /// mapping itself may take more than `budget`). What must go to make room
    /// (or the mapping itself, if longer than the cap) is added to `out`.
    pub(crate) fn put(
        &mut self,
        addr: usize,
        len: usize,
        split: usize,
        now: u64,
        budget: usize,
        out: &mut Evicted,
    ) {
        // The tail cut from this block's mapping, if still here: one
        // mapping again.
        let len = if split != 0 {
            self.absorb_tail(addr, len, split)
        } else {
            len
        };
        self.insert(
            Entry {
                addr,
                len,
                since: now,
                token: 0,
            },
            budget,
            out,
        );
    }

    /// `len` plus the length of the cached tail under `token` that starts
    /// where `[addr, addr + len)` ends, taken out of the cache; `len` if
    /// there is none.
    fn absorb_tail(&mut self, addr: usize, len: usize, token: usize) -> usize {
        let tail = self.entries[..self.n]
            .iter()
            .position(|e| e.token == token && e.addr == addr + len);
        match tail {
            Some(i) => len + self.remove(i).len,
            None => len,
        }
    }

    /// Caches the `len` bytes at `addr`, just cut from the end of the
    /// mapping of a live block that shrank in place (no system call: they
    /// stay mapped and resident), at time `now`, within `budget` as [`put`]
    /// does. `token` is the block's `split` token (0 if it has none): a tail
    /// already cached under it right after the cut joins it, so a block
    /// shrunk step by step leaves one tail. Returns the token the block
    /// must carry now, under which it takes the tail back when it grows
    /// again ([`Cache::take_tail`]) and joins it when freed ([`Cache::put`]).
    ///
    /// [`put`]: Cache::put
    pub(crate) fn put_tail(
        &mut self,
        addr: usize,
        len: usize,
        token: usize,
        now: u64,
        budget: usize,
        out: &mut Evicted,
    ) -> usize {
        // Only the tail of this block carries its token, and it starts where
        // the block ends, so the token can be kept.
        let token = if token == 0 { self.token() } else { token };
        let len = self.absorb_tail(addr, len, token);
        self.insert(
            Entry {
                addr,
                len,
                since: now,
                token,
            },
            budget,
            out,
        );
        token
    }

    /// Adds `e`, making room within `budget` (and the cap, option
    /// `large_cache`) by evicting the oldest mappings into `out`; `e` itself
    /// goes to `out` only when it is longer than the cap.
    fn insert(&mut self, new: Entry, budget: usize, out: &mut Evicted) {
        let len = new.len;
        // The mapping just freed is always kept if it fits the cache at all
        // (it was resident a moment ago); older ones make room for it.
        let budget = budget.max(len).min(cap());
        if len > budget {
            out.push(Range {
                addr: new.addr,
                len,
            });
            return;
        }
        if self.n == SLOTS {
            let e = self.remove(self.oldest());
            out.push(Range {
                addr: e.addr,
                len: e.len,
            });
        }
        while self.bytes + len > budget {
            let i = self.oldest();
            let over = self.bytes + len - budget;
            let e = self.entries[i];
            if e.len <= over {
                self.remove(i);
                out.push(Range {
                    addr: e.addr,
                    len: e.len,
                });
            } else {
                // Just the tail of it: the start (and token) stay.
                self.entries[i].len -= over;
                self.bytes -= over;
                out.push(Range {
                    addr: e.addr + e.len - over,
                    len: over,
                });
            }
        }
        self.push(new);
    }

    /// Index of the mapping cached longest ago; the cache is not empty.
    fn oldest(&self) -> usize {
        let mut o = 0;
        for (i, e) in self.entries[..self.n].iter().enumerate() {
            if e.since < self.entries[o].since {
                o = i;
            }
        }
        o
    }

    /// Takes out every mapping cached at least the purge delay (option `purge_delay_ms`) before
    /// `now` (every mapping when `all`), into `out`.
    pub(crate) fn purge(&mut self, now: u64, all: bool, out: &mut Evicted) {
        let mut i = 0;
        while i < self.n {
            let e = self.entries[i];
            if all || e.since.saturating_add(purge_delay_ms()) <= now {
                self.remove(i);
                out.push(Range {
                    addr: e.addr,
                    len: e.len,
                });
            } else {
                i += 1;
            }
        }
    }
}

/// The process-wide cache. Held only for bookkeeping, never across a system
/// call or an allocation; the fork handlers (`thread`) take it too.
pub(crate) static CACHE: spin::Mutex<Cache> = spin::Mutex::new(Cache::new());
/// Bytes cached, for the statistics (written under the lock).
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// [`Cache::deadline`], readable without the lock (written under it).
static DEADLINE: AtomicU64 = AtomicU64::new(0);
/// The most bytes live large blocks' mappings have held (seen just before a
/// free or a shrink) since the last timed purge.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Publishes the figures read without the lock; called with it held.
fn publish(c: &Cache) {
    BYTES.store(c.bytes(), Ordering::Relaxed);
    DEADLINE.store(c.deadline(), Ordering::Relaxed);
}

/// Bytes held by the cache: counted as committed, though the blocks they
/// were may not have touched every page of them.
pub(crate) fn cached_bytes() -> usize {
    BYTES.load(Ordering::Relaxed)
}

/// How many bytes the cache may hold when live large blocks hold
/// `live` bytes and held at most `peak` recently: enough for them to grow
/// back to the peak without faulting memory in, and at least [`FLOOR`], at
/// most [`BUDGET`]. So the live blocks and the cache together stay within
/// the peak (or the live blocks plus the floor), which bounds what caching
/// adds to the resident set.
pub(crate) fn budget(peak: usize, live: usize) -> usize {
    let cap = cap();
    peak.saturating_sub(live).clamp(FLOOR.min(cap), cap)
}

/// Most bytes the cache holds: the option `large_cache` ([`BUDGET`] by
/// default), or nothing while memory is past the soft limit.
fn cap() -> usize {
    if os::past_soft_limit() {
        0
    } else {
        crate::options::LARGE_CACHE.get()
    }
}

/// Whether a freed mapping of `len` bytes (already counted out of the live
/// blocks) may be cached: not if keeping it would put committed memory
/// past the soft limit.
#[inline]
pub(crate) fn accepts(len: usize) -> bool {
    len <= cap() && !os::past_soft_limit_with(len)
}

/// Takes cached memory for a block mapping of `need` bytes (see
/// [`Cache::take`]). The caller owns what it gets.
pub(crate) fn take(need: usize, can_move: bool) -> Found {
    if cached_bytes() == 0 {
        return Found::Miss;
    }
    let mut c = CACHE.lock();
    let found = c.take(need, can_move);
    publish(&c);
    found
}

/// Caches the freed huge segment mapping of `len` bytes at `addr`, whose
/// header is already marked cached and carries `split`; unmaps what must go
/// to make room. Live large blocks' mappings (header pages included) held
/// `live_before` bytes before this free and `live_after` after it.
pub(crate) fn put(addr: usize, len: usize, split: usize, live_before: usize, live_after: usize) {
    let now = os::now_ms();
    let budget = budget(note_peak(live_before), live_after);
    let mut out = Evicted::new();
    {
        let mut c = CACHE.lock();
        c.put(addr, len, split, now, budget, &mut out);
        publish(&c);
    }
    out.unmap_all();
}

/// Records `live_before`, the live large bytes just before they drop (a
/// free or a shrink: every local peak is seen there); returns the peak.
fn note_peak(live_before: usize) -> usize {
    PEAK.fetch_max(live_before, Ordering::Relaxed)
        .max(live_before)
}

/// Caches the `len` bytes at `addr` cut from the end of a live block's
/// mapping (see [`Cache::put_tail`]); unmaps what must go to make room.
/// `split` is the block's token; live large blocks held `live_before`
/// bytes of mappings before the cut and `live_after` after it. Returns the
/// block's new token.
pub(crate) fn put_tail(
    addr: usize,
    len: usize,
    split: usize,
    live_before: usize,
    live_after: usize,
) -> usize {
    let now = os::now_ms();
    let budget = budget(note_peak(live_before), live_after);
    let mut out = Evicted::new();
    let token = {
        let mut c = CACHE.lock();
        let token = c.put_tail(addr, len, split, now, budget, &mut out);
        publish(&c);
        token
    };
    out.unmap_all();
    token
}

/// Takes back (part of) the tail cut from a live block's mapping, for the
/// block to grow into in place (see [`Cache::take_tail`]).
pub(crate) fn take_tail(addr: usize, token: usize, extra: usize) -> usize {
    if token == 0 || cached_bytes() == 0 {
        return 0;
    }
    let mut c = CACHE.lock();
    let got = c.take_tail(addr, token, extra);
    publish(&c);
    got
}

/// Unmaps the mappings that have waited the purge delay (option `purge_delay_ms`), if any is due:
/// one relaxed load when none is.
#[inline]
pub(crate) fn purge_if_due() {
    let due = DEADLINE.load(Ordering::Relaxed);
    if due != 0 && os::now_ms() >= due {
        // What was not reused for a while is not needed to regrow: forget
        // the peak too (the next frees set it again).
        PEAK.store(0, Ordering::Relaxed);
        purge(false);
    }
}

/// Unmaps every cached mapping (`collect()`).
pub(crate) fn drain() {
    if cached_bytes() != 0 {
        purge(true);
    }
}

#[cold]
fn purge(all: bool) {
    let now = os::now_ms();
    let mut out = Evicted::new();
    {
        let mut c = CACHE.lock();
        c.purge(now, all, &mut out);
        publish(&c);
    }
    out.unmap_all();
}

#[cfg(test)]
mod tests;
