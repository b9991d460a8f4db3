//! The mappings of the heap profiler's substitutes of small blocks (feature
//! `profiling`), kept for the next ones.
//!
//! A sampled small allocation is served by a huge segment of its own (see
//! `alloc::prof_small` and [`super::mark_sampled`]), so that its free is on
//! the large-block path and the small free path costs nothing more. Mapping
//! and unmapping one per sample costs three system calls (an aligned `mmap`
//! and its trim, then `munmap`) and a page fault for every page the block
//! touches; the large-block cache would take these mappings back, but
//! shares them with large blocks, which take, cut, grow or evict them. So a
//! freed substitute's mapping comes here instead, still mapped and
//! resident, and the next sample of a block that fits takes it back with no
//! system call and no page fault: steady-state sampling makes none.
//!
//! Bounds: at most [`SLOTS`] mappings and [`BUDGET`] bytes (the mappings
//! of seven samples of the largest class, or of 64 ordinary ones: a
//! program whose live samples swing by more than that maps and unmaps the
//! difference); to make room, the oldest mappings are unmapped. A mapping held
//! for the purge delay (option `purge_delay_ms`) is unmapped at the next
//! free of a substitute or by the background purger ([`purge_if_due`]:
//! an idle process keeps none); [`drain`] (`collect()`, the memory limit's
//! reclaim and `profile::stop`) unmaps them all. Past the soft limit the
//! caller keeps nothing (`large::free`). The bytes held are resident: the
//! statistics count them as free pages (like the large-block cache's),
//! and committed.
//!
//! Live substitutes are bounded too ([`room`]): each is a mapping of its
//! own, and the kernel caps a process's mappings (`vm.max_map_count`,
//! 65,530 by default), past which every `mmap` fails, the segments' too:
//! at 4 KiB between samples, 500 MiB of live 1000-byte blocks made 115,000
//! substitutes and the process ran out of memory. Past half the limit a
//! sample is dropped (counted, as when the profile's table is full).
//!
//! A cached mapping keeps its header marked `KIND_CACHED` and its registry
//! entry, as the large-block cache's do, so a second free of its block is
//! caught. The cache is process-wide behind a spin lock held for a scan of
//! at most [`SLOTS`] entries, never across a system call; the fork handlers
//! (`thread`) take it too. The bookkeeping is a plain value ([`Cache`]),
//! tested without touching memory.

use crate::os;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Most mappings held.
pub(crate) const SLOTS: usize = 256;
/// Most bytes held.
pub(crate) const BUDGET: usize = 8 << 20;

/// A cached mapping: `len` bytes at `addr`, freed at `since` (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    addr: usize,
    len: usize,
    since: u64,
}

const NO_ENTRY: Entry = Entry {
    addr: 0,
    len: 0,
    since: 0,
};

/// Mappings taken out of the cache, to unmap once the lock is dropped.
/// Left uninitialised past `n`: zeroing 4 KiB at every free of a sample
/// cost more than the rest of it.
pub(crate) struct Evicted {
    ranges: [MaybeUninit<(usize, usize)>; SLOTS + 1],
    n: usize,
}

impl Evicted {
    const fn new() -> Evicted {
        Evicted {
            ranges: [const { MaybeUninit::uninit() }; SLOTS + 1],
            n: 0,
        }
    }

    fn push(&mut self, addr: usize, len: usize) {
        // At most every entry and the one offered: SLOTS + 1.
        if let Some(slot) = self.ranges.get_mut(self.n) {
            slot.write((addr, len));
            self.n += 1;
        }
    }

    /// The `(addr, len)` ranges gathered.
    pub(crate) fn ranges(&self) -> &[(usize, usize)] {
        // SAFETY: the first `n` are initialised (`push`), and
        // `MaybeUninit<T>` has `T`'s layout.
        unsafe { core::slice::from_raw_parts(self.ranges.as_ptr().cast(), self.n) }
    }

    /// Unmaps every range gathered, forgetting the segment headers in them.
    fn unmap_all(&self) {
        for &(addr, len) in self.ranges() {
            crate::segment::registry::forget(addr as *const u8, len);
            os::unmap(addr as *mut u8, len);
        }
    }
}

/// The cache's bookkeeping: which mappings it holds, oldest first. Makes no
/// system call.
pub(crate) struct Cache {
    entries: [Entry; SLOTS],
    n: usize,
    bytes: usize,
}

impl Cache {
    /// An empty cache.
    pub(crate) const fn new() -> Cache {
        Cache {
            entries: [NO_ENTRY; SLOTS],
            n: 0,
            bytes: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Removes entry `i`, keeping the others' order (oldest first).
    fn remove(&mut self, i: usize) -> Entry {
        let e = self.entries[i];
        // Skipped when nothing follows (the newest taken, the common case):
        // an empty copy is still a call to `memmove`.
        if i + 1 < self.n {
            self.entries.copy_within(i + 1..self.n, i);
        }
        self.n -= 1;
        self.bytes -= e.len;
        e
    }

    /// The shortest mapping at least `need` bytes long, taken out of the
    /// cache: `(addr, len)`. The newest of that length (its pages are the
    /// likeliest still in the processor's caches); the scan stops at the
    /// first of exactly `need` bytes, the common case (samples of the same
    /// classes).
    pub(crate) fn take(&mut self, need: usize) -> Option<(usize, usize)> {
        let mut best: Option<usize> = None;
        for i in (0..self.n).rev() {
            let len = self.entries[i].len;
            if len >= need && best.is_none_or(|b| len < self.entries[b].len) {
                best = Some(i);
                if len == need {
                    break;
                }
            }
        }
        let e = self.remove(best?);
        Some((e.addr, e.len))
    }

    /// Offers the freed mapping of `len` bytes at `addr` at time `now`:
    /// mappings held for `delay` ms or more go to `out`, then the oldest
    /// until it fits within [`SLOTS`] and [`BUDGET`]. Whether it was kept
    /// (if not, the caller unmaps it; nothing of it is in `out`).
    pub(crate) fn put(
        &mut self,
        addr: usize,
        len: usize,
        now: u64,
        delay: u64,
        out: &mut Evicted,
    ) -> bool {
        // Oldest first: the aged ones are a prefix, and so are those that
        // must go to make room. Counted first and moved out at once: one
        // shift of the rest, not one per mapping evicted.
        let mut k = 0;
        let mut bytes = self.bytes;
        while k < self.n && now.saturating_sub(self.entries[k].since) >= delay {
            bytes -= self.entries[k].len;
            k += 1;
        }
        let keep = len <= BUDGET;
        if keep {
            while self.n - k == SLOTS || bytes + len > BUDGET {
                bytes -= self.entries[k].len;
                k += 1;
            }
        }
        for e in &self.entries[..k] {
            out.push(e.addr, e.len);
        }
        // With none taken out (the common case) the copy would move every
        // entry onto itself: a `memmove` of up to 6 KiB.
        if k != 0 {
            self.entries.copy_within(k..self.n, 0);
        }
        self.n -= k;
        self.bytes = bytes;
        if !keep {
            return false;
        }
        self.entries[self.n] = Entry {
            addr,
            len,
            since: now,
        };
        self.n += 1;
        self.bytes += len;
        true
    }

    /// Takes the mappings held for `delay` ms or more at time `now` out,
    /// to `out`.
    pub(crate) fn purge_aged(&mut self, now: u64, delay: u64, out: &mut Evicted) {
        let mut k = 0;
        while k < self.n && now.saturating_sub(self.entries[k].since) >= delay {
            out.push(self.entries[k].addr, self.entries[k].len);
            self.bytes -= self.entries[k].len;
            k += 1;
        }
        if k != 0 {
            self.entries.copy_within(k..self.n, 0);
        }
        self.n -= k;
    }

    /// Whether a mapping has been held for `delay` ms or more at `now`.
    fn has_aged(&self, now: u64, delay: u64) -> bool {
        self.n != 0 && now.saturating_sub(self.entries[0].since) >= delay
    }

    /// Takes every mapping out, to `out`.
    pub(crate) fn drain(&mut self, out: &mut Evicted) {
        while self.n != 0 {
            let e = self.remove(self.n - 1);
            out.push(e.addr, e.len);
        }
    }
}

/// The process-wide cache. Held only for bookkeeping, never across a system
/// call or an allocation; the fork handlers (`thread`) take it too.
pub(crate) static CACHE: spin::Mutex<Cache> = spin::Mutex::new(Cache::new());
/// Bytes cached, for the statistics (written under the lock).
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held: resident, counted as free pages and as committed.
pub(crate) fn cached_bytes() -> usize {
    BYTES.load(Ordering::Relaxed)
}

/// A cached mapping of at least `need` bytes, the shortest: `(base, len)`,
/// the caller's to use. Its header is that of a freed substitute.
pub(crate) fn take(need: usize) -> Option<(*mut u8, usize)> {
    if cached_bytes() == 0 {
        return None;
    }
    let mut c = CACHE.lock();
    let got = c.take(need);
    BYTES.store(c.bytes(), Ordering::Relaxed);
    got.map(|(a, l)| (a as *mut u8, l))
}

/// Offers the mapping of a freed substitute, `len` bytes at `base`, whose
/// header is already marked cached and counted out; unmaps what must go to
/// make room or has waited the purge delay. Whether it was kept (if not,
/// the caller unmaps it).
pub(crate) fn put(base: *mut u8, len: usize) -> bool {
    let now = os::now_ms();
    let mut out = Evicted::new();
    let kept = {
        let mut c = CACHE.lock();
        let kept = c.put(
            base as usize,
            len,
            now,
            crate::options::purge_delay_ms(),
            &mut out,
        );
        BYTES.store(c.bytes(), Ordering::Relaxed);
        kept
    };
    out.unmap_all();
    kept
}

/// Unmaps the cached mappings held for the purge delay, if any: one
/// relaxed load when the cache is empty. For the background purger, so
/// that a process that stopped freeing samples keeps none of them.
pub(crate) fn purge_if_due() {
    if cached_bytes() == 0 {
        return;
    }
    let now = os::now_ms();
    let delay = crate::options::purge_delay_ms();
    let mut out = Evicted::new();
    {
        let mut c = CACHE.lock();
        if !c.has_aged(now, delay) {
            return;
        }
        c.purge_aged(now, delay, &mut out);
        BYTES.store(c.bytes(), Ordering::Relaxed);
    }
    out.unmap_all();
}

/// Whether another substitute may be mapped: fewer live than half the
/// kernel's limit on a process's mappings (see the module docs). One
/// relaxed load and a compare; a race may let a few more through.
pub(crate) fn room() -> bool {
    crate::counters::SHARED.sampled.live.load(Ordering::Relaxed) < os::max_map_count() / 2
}

/// Unmaps every cached mapping.
pub(crate) fn drain() {
    if cached_bytes() == 0 {
        return;
    }
    let mut out = Evicted::new();
    {
        let mut c = CACHE.lock();
        c.drain(&mut out);
        BYTES.store(c.bytes(), Ordering::Relaxed);
    }
    out.unmap_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = 4096;

    #[test]
    fn takes_the_shortest_that_fits() {
        let mut c = Cache::new();
        let mut out = Evicted::new();
        assert!(c.put(0x1000_0000, 16 * K, 0, 1000, &mut out));
        assert!(c.put(0x2000_0000, 8 * K, 0, 1000, &mut out));
        assert!(c.put(0x3000_0000, 12 * K, 0, 1000, &mut out));
        assert_eq!(c.bytes(), 36 * K);
        assert_eq!(c.take(9 * K), Some((0x3000_0000, 12 * K)));
        assert_eq!(c.take(8 * K), Some((0x2000_0000, 8 * K)));
        assert_eq!(c.take(20 * K), None);
        assert_eq!(c.take(2 * K), Some((0x1000_0000, 16 * K)));
        assert_eq!(c.take(2 * K), None);
        assert_eq!(c.bytes(), 0);
        assert!(out.ranges().is_empty());
    }

    #[test]
    fn evicts_the_oldest_past_its_bounds_and_the_aged() {
        let mut c = Cache::new();
        let mut out = Evicted::new();
        for i in 0..SLOTS {
            assert!(c.put((i + 1) << 22, 8 * K, i as u64, 1000, &mut out));
        }
        assert!(out.ranges().is_empty());
        // A ninth: the oldest goes.
        assert!(c.put(100 << 22, 8 * K, 10, 1000, &mut out));
        assert_eq!(out.ranges(), &[(1 << 22, 8 * K)]);
        // Past the byte budget: the oldest go until it fits.
        let mut out = Evicted::new();
        assert!(c.put(200 << 22, BUDGET - 8 * K, 11, 1000, &mut out));
        assert_eq!(out.ranges().len(), SLOTS - 1);
        assert_eq!(c.bytes(), BUDGET);
        // Longer than the budget: refused, the rest kept.
        let mut out = Evicted::new();
        assert!(!c.put(300 << 22, BUDGET + K, 12, 1000, &mut out));
        assert!(out.ranges().is_empty());
        assert_eq!(c.bytes(), BUDGET);
        // Held for the delay: unmapped at the next put.
        let mut out = Evicted::new();
        assert!(c.put(400 << 22, 8 * K, 1010, 1000, &mut out));
        assert_eq!(out.ranges(), &[(100 << 22, 8 * K)]);
        assert_eq!(c.bytes(), BUDGET);
        let mut out = Evicted::new();
        c.drain(&mut out);
        assert_eq!(
            out.ranges(),
            &[(400 << 22, 8 * K), (200 << 22, BUDGET - 8 * K)]
        );
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_aged_go_without_a_put() {
        let mut c = Cache::new();
        let mut out = Evicted::new();
        assert!(c.put(1 << 22, 8 * K, 0, 100, &mut out));
        assert!(c.put(2 << 22, 12 * K, 50, 100, &mut out));
        assert!(c.put(3 << 22, 16 * K, 90, 100, &mut out));
        assert!(!c.has_aged(99, 100));
        c.purge_aged(99, 100, &mut out);
        assert!(out.ranges().is_empty());
        assert_eq!(c.bytes(), 36 * K);
        // At 150 the first two have waited the delay; the third stays.
        assert!(c.has_aged(150, 100));
        c.purge_aged(150, 100, &mut out);
        assert_eq!(out.ranges(), &[(1 << 22, 8 * K), (2 << 22, 12 * K)]);
        assert_eq!(c.bytes(), 16 * K);
        assert!(!c.has_aged(150, 100));
        assert_eq!(c.take(16 * K), Some((3 << 22, 16 * K)));
        assert_eq!(c.bytes(), 0);
        assert!(!c.has_aged(1000, 100), "empty");
    }
}
