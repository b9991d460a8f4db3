//! Stacks from the unwind tables, fast (the default, option
//! `prof_unwind=dwarf`; x86-64 Linux with glibc): a walk that unwinds each
//! frame with a rule kept in a cache keyed by address, and reads the unwind
//! tables ([`super::cfi`]) only on a miss.
//!
//! The system unwinder (`_Unwind_Backtrace`) costs about 16,000
//! instructions a sample: for every frame it finds the object and the FDE
//! and runs the CIE's and FDE's instructions again, and restores every
//! register. A profiler's stacks need far less: on x86-64 the code Rust and
//! C compilers emit unwinds with a rule of the form "the CFA is `rsp` or
//! `rbp` plus a constant, the return address is at CFA - 8, `rbp` is at CFA
//! minus a constant or unchanged" ([`Rule`]), and a program's samples come
//! from a few hundred return addresses at most. So a rule, once found, is
//! kept in a table of [`CACHE`] words (a zero-filled static),
//! each the whole entry in one atomic word (the address's tag and the
//! rule): a hit is a load, a compare and a few reads of the stack, tens of
//! instructions a frame, and threads racing on an entry each see a whole
//! entry, old or new.
//!
//! A frame whose rule is not of that form (a CFA expression, a signal
//! frame, no FDE: see [`super::cfi`]), or whose CFA is not above the last
//! within the thread's stack mapping, ends the walk with `None`: the sample
//! is then taken by the system unwinder, so stacks are those it gives. The
//! walk reads only the stack between its own stack pointer and the top of
//! the thread's stack, checked readable once per thread (see
//! [`stack_bounds`]), so it never faults whatever the rules say.
//!
//! The cache is never flushed: a library unloaded and another loaded at the
//! same addresses could be walked with the old one's rules, giving wrong
//! frames (never a fault). `_dl_find_object` gives no generation count to
//! check it against without the loader's lock.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};

/// Entries of the rule cache (a power of two; 32 KiB).
pub(crate) const CACHE: usize = 1 << CACHE_BITS;
const CACHE_BITS: u32 = 12;
/// The cache is two-way set-associative: sets of two entries, so that two
/// hot addresses of one set (the return addresses of one stack, say) do
/// not evict each other at every sample. A direct-mapped table did, in
/// some builds and not others as code moved: on `segalloc-bench`'s mstress
/// two misses a sample, about 4,200 instructions more each.
const SET_BITS: u32 = CACHE_BITS - 1;
/// Code addresses cached: below 2^47 (x86-64's user half), so that the
/// address's tag and a rule fit in one word.
const ADDR_BITS: u32 = 47;
/// Bits of an entry holding the rule.
const RULE_BITS: u32 = 64 - (ADDR_BITS - SET_BITS);
/// Widths of the rule's fields (see [`Rule::encode`]).
const CFA_BITS: u32 = 14;
const SLOT_BITS: u32 = RULE_BITS - 2 - CFA_BITS;

/// How to unwind one frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Rule {
    /// The outermost frame (its return address is undefined: `_start`, a
    /// thread's start).
    End,
    /// CFA = `rbp` (else `rsp`) + `cfa`; the return address at CFA - 8; the
    /// caller's `rbp` at CFA - 8 * `rbp_slot`, or unchanged if 0.
    Frame {
        rbp_based: bool,
        cfa: u32,
        rbp_slot: u32,
    },
}

impl Rule {
    /// A frame's rule, if it fits an entry: the CFA 8-aligned, above the
    /// return address, below 128 KiB; `rbp`'s slot below the return
    /// address's and within 32 KiB.
    pub(crate) fn frame(rbp_based: bool, cfa: u32, rbp_slot: u32) -> Option<Rule> {
        let ok = cfa >= 8
            && cfa % 8 == 0
            && cfa / 8 < 1 << CFA_BITS
            && rbp_slot != 1
            && rbp_slot < 1 << SLOT_BITS;
        ok.then_some(Rule::Frame {
            rbp_based,
            cfa,
            rbp_slot,
        })
    }

    /// Bit 0 set (an entry is never 0), bit 1 `rbp_based`, then the CFA
    /// offset in words (0 for [`Rule::End`]), then the slot.
    fn encode(self) -> u64 {
        match self {
            Rule::End => 1,
            Rule::Frame {
                rbp_based,
                cfa,
                rbp_slot,
            } => 1 | (rbp_based as u64) << 1 | u64::from(cfa / 8) << 2 | u64::from(rbp_slot) << (2 + CFA_BITS),
        }
    }

    #[cfg(test)]
    fn decode(v: u64) -> Rule {
        let cfa = (v >> 2) as u32 & ((1 << CFA_BITS) - 1);
        if cfa == 0 {
            return Rule::End;
        }
        Rule::Frame {
            rbp_based: v & 2 != 0,
            cfa: cfa * 8,
            rbp_slot: (v >> (2 + CFA_BITS)) as u32 & ((1 << SLOT_BITS) - 1),
        }
    }
}

/// The cache: [`CACHE`] entries, each 0 (empty) or `key << RULE_BITS |
/// rule` (see [`slot`] and [`Rule::encode`]). A static (zero-filled, in
/// `.bss`): a process that never samples touches none of its 32 KiB, and the
/// walk needs no load of a table's address and no test that it exists
/// (mapped from the OS on first use until 2026-11-28).
static TABLE: [AtomicU64; CACHE] = [const { AtomicU64::new(0) }; CACHE];

/// The index of the first entry of `pc`'s set (the second follows it)
/// and its key: the address's high bits plus one, the set its low bits
/// mixed with the high bits', so that the two give the address back. The
/// key is never 0, so an empty entry (0) matches no address and the lookup
/// needs no test of its own for it; the key of an address at or above
/// 2^[`ADDR_BITS`] - 2^[`SET_BITS`] does not fit an entry and matches none
/// ([`insert`] does not cache it).
#[inline(always)]
fn slot(pc: usize) -> (usize, u64) {
    let high = (pc >> SET_BITS) as u64;
    (((pc ^ high as usize) & ((1 << SET_BITS) - 1)) << 1, high + 1)
}

/// Keys that fit an entry are below this.
const KEY_LIMIT: u64 = 1 << (64 - RULE_BITS);

/// The cached rule of `pc` in the table `t`: the entry's rule bits (see
/// [`Rule::encode`]).
///
/// # Safety
/// `t` points to [`CACHE`] entries.
#[inline(always)]
unsafe fn find(t: *const AtomicU64, pc: usize) -> Option<u64> {
    let (i, key) = slot(pc);
    // SAFETY: `i + 1 < CACHE`, within the table per the contract.
    let v = unsafe { &*t.add(i) }.load(Ordering::Relaxed);
    if v >> RULE_BITS == key {
        return Some(v);
    }
    // SAFETY: as above.
    let v = unsafe { &*t.add(i + 1) }.load(Ordering::Relaxed);
    if v >> RULE_BITS == key {
        return Some(v);
    }
    None
}

/// Caches rule `r` of `pc` in the table `t` (unless its key does not fit):
/// the set's newer entry goes second and this one first, so the older is
/// evicted. Each store is a whole entry; threads racing here may lose an
/// entry or hold one twice, which costs a miss at most.
///
/// # Safety
/// `t` points to [`CACHE`] entries.
unsafe fn insert(t: *const AtomicU64, pc: usize, r: Rule) {
    let (i, key) = slot(pc);
    if key >= KEY_LIMIT {
        return;
    }
    // SAFETY: `i + 1 < CACHE`, within the table per the contract.
    unsafe {
        let first = (*t.add(i)).load(Ordering::Relaxed);
        (*t.add(i + 1)).store(first, Ordering::Relaxed);
        (*t.add(i)).store(key << RULE_BITS | r.encode(), Ordering::Relaxed);
    }
}

/// The rule of `pc` from the unwind tables, cached: its encoding (see
/// [`Rule::encode`]); None where the tables give no simple rule.
#[cold]
#[inline(never)]
fn miss(pc: usize) -> Option<u64> {
    let r = super::cfi::rule_for(pc)?;
    // SAFETY: the table has CACHE entries.
    unsafe { insert(TABLE.as_ptr(), pc, r) };
    Some(r.encode())
}

/// The instruction pointer, stack pointer and `rbp` of the calling
/// function (inlined into it), all at one instruction.
#[inline(always)]
fn registers() -> (usize, usize, usize) {
    let (ip, sp, bp): (usize, usize, usize);
    // SAFETY: copies three registers and an address; touches no memory.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    (ip, sp, bp)
}

/// The most of a thread's stack [`stack_bounds`] checks with the kernel
/// (above it, `/proc/self/maps` is read).
const PROBE_MAX: usize = 1 << 20;

/// The thread pointer: glibc keeps the TCB's own address at `fs:0`.
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads the word at `fs:0`, the TCB's self-pointer, set up for
    // every thread glibc starts (Rust's thread-locals, which segalloc's heap
    // lookup uses before any sample, are addressed through `fs` too).
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

/// Readable bounds of the stack above `sp`, `[lo, hi)` with `lo <= sp`.
/// glibc places a thread's TCB at the top of the mapping of its stack,
/// above every frame (and, for a stack the program gave, at the top of
/// that stack): so for any thread but the main one, `[sp, tp)` is its
/// stack, which the kernel confirms is readable, a page at a time, in a
/// call or a few. That is cheaper than finding the mapping in
/// `/proc/self/maps`, which is the way for the main thread (whose TCB is
/// elsewhere) and any thread whose check fails, and which cost a
/// thread's first sample about 77,000 instructions on `threadchurn`
/// (whose threads are short-lived and many).
fn stack_bounds(sp: usize) -> Option<(usize, usize)> {
    let tp = thread_pointer();
    if sp < tp && tp - sp <= PROBE_MAX && crate::os::readable(sp, tp) {
        return Some((sp & !(crate::os::OS_PAGE - 1), tp));
    }
    super::fp::mapping_of(sp)
}

/// The calling thread's stack through the unwind tables, into `out`
/// (innermost first: the return address into this function's caller
/// first; the same addresses `_Unwind_Backtrace` gives); `bounds` is the
/// thread's cached stack mapping (`(0, 0)` at first). None when a frame's
/// rule is not a simple one or the stack mapping cannot be found: the
/// caller then uses the system unwinder. Allocates nothing, takes no lock.
#[inline(never)]
pub(crate) fn capture(
    bounds: &mut (usize, usize),
    out: &mut [MaybeUninit<usize>],
) -> Option<usize> {
    let (ip, sp, bp) = registers();
    if !(bounds.0 <= sp && sp < bounds.1) {
        *bounds = stack_bounds(sp)?;
    }
    let hi = bounds.1;
    // An 8-aligned start keeps every frame's CFA 8-aligned (checked below
    // for each), so that the CFA above `rsp` is at least `rsp + 8`.
    if sp % 8 != 0 {
        return None;
    }
    let t = TABLE.as_ptr();
    // This frame is looked up at its own address, callers' at their return
    // address minus one (the call, not what follows it, which may belong
    // to the next function after a call that does not return).
    let (mut pc, mut rsp, mut rbp) = (ip, sp, bp);
    let mut n = 0;
    // The rule is used in its encoded form (see `Rule::encode`): decoding
    // it into a `Rule` and matching cost about 30 instructions a frame.
    while n < out.len() {
        // SAFETY: `t` is the table, of CACHE entries.
        let v = match unsafe { find(t, pc) } {
            Some(v) => v,
            None => miss(pc)?,
        };
        let cfa_off = ((v >> 2) & ((1 << CFA_BITS) - 1)) << 3;
        if cfa_off == 0 {
            // `Rule::End`.
            break;
        }
        let cfa = (if v & 2 != 0 { rbp } else { rsp }).wrapping_add(cfa_off as usize);
        // Frames lie strictly above one another, within the stack, 8-aligned:
        // so `[cfa - 8, cfa)` lies in `[rsp, hi)` (a wrapped sum is below
        // `rsp`).
        if cfa <= rsp || cfa > hi || cfa % 8 != 0 {
            return None;
        }
        // SAFETY: `[cfa - 8, cfa)` lies between the walk's own stack
        // pointer and the top of the thread's stack (checked readable by
        // `stack_bounds`): mapped while the thread runs on it. Volatile:
        // other frames' words.
        let ra = unsafe { core::ptr::read_volatile((cfa - 8) as *const usize) };
        let rbp_at = (((v >> (2 + CFA_BITS)) & ((1 << SLOT_BITS) - 1)) << 3) as usize;
        if rbp_at != 0 {
            // At least 16 (`Rule::frame` refuses slot 1): below the return
            // address, so below `hi`; above `rsp` if this holds.
            if rbp_at > cfa - rsp {
                return None;
            }
            // SAFETY: `[cfa - rbp_at, +8)` lies in `[rsp, cfa - 8)`, as above.
            rbp = unsafe { core::ptr::read_volatile((cfa - rbp_at) as *const usize) };
        }
        rsp = cfa;
        if ra == 0 {
            break;
        }
        out[n] = MaybeUninit::new(ra);
        n += 1;
        pc = ra - 1;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules survive the entry's encoding; out-of-range ones are refused.
    #[test]
    fn rules_round_trip() {
        for r in [
            Rule::End,
            Rule::frame(false, 8, 0).unwrap(),
            Rule::frame(true, 16, 2).unwrap(),
            Rule::frame(false, (1 << CFA_BITS) * 8 - 8, (1 << SLOT_BITS) - 1).unwrap(),
        ] {
            let (_, tag) = slot(0x7fff_1234_5678);
            let v = tag << RULE_BITS | r.encode();
            assert_eq!(v >> RULE_BITS, tag);
            assert_eq!(Rule::decode(v), r);
        }
        assert_eq!(Rule::frame(false, 4, 0), None);
        assert_eq!(Rule::frame(false, 12, 0), None);
        assert_eq!(Rule::frame(false, 1 << 20, 0), None);
        assert_eq!(Rule::frame(false, 16, 1), None);
    }

    /// Two addresses of one set both stay cached; a third evicts the older.
    /// (A direct-mapped table, as this was, kept one: checked by looking
    /// at the first entry only, which fails the second assertion.)
    #[test]
    fn a_set_holds_two_addresses() {
        let t: Vec<AtomicU64> = (0..CACHE).map(|_| AtomicU64::new(0)).collect();
        let t = t.as_ptr();
        let a = 0x5555_5555_1234usize;
        // The same set: the address's bit 0 and the tag's bit 0 flipped.
        let b = a ^ (1 << SET_BITS) ^ 1;
        let c = a ^ (2 << SET_BITS) ^ 2;
        assert_eq!(slot(a).0, slot(b).0);
        assert_eq!(slot(a).0, slot(c).0);
        let (ra, rb, rc) = (
            Rule::frame(false, 8, 0).unwrap(),
            Rule::frame(true, 16, 2).unwrap(),
            Rule::End,
        );
        // SAFETY: `t` has CACHE entries, alive until the end of the test.
        unsafe {
            insert(t, a, ra);
            insert(t, b, rb);
            let find = |pc| find(t, pc).map(Rule::decode);
            assert_eq!(find(b), Some(rb));
            assert_eq!(find(a), Some(ra));
            insert(t, c, rc);
            assert_eq!(find(c), Some(rc));
            assert_eq!(find(b), Some(rb));
            assert_eq!(find(a), None);
            // An address never cached is not found, whatever its set holds.
            assert_eq!(find(a ^ 8), None);
            // Empty entries match no address, the lowest included (their
            // key is 1, an empty entry's 0).
            assert_eq!(find(0), None);
            assert_eq!(find(8), None);
            insert(t, 8, rb);
            assert_eq!(find(8), Some(rb));
            // Addresses whose key does not fit an entry are never cached,
            // and never match another's entry.
            for pc in [(1usize << ADDR_BITS) - 16, 1 << ADDR_BITS, usize::MAX - 8] {
                insert(t, pc, ra);
                assert_eq!(find(pc), None, "{pc:x}");
            }
            assert_eq!(find(8), Some(rb));
        }
    }

    /// The stack taken by the system unwinder, innermost first (as
    /// `sample::capture` takes it).
    #[inline(never)]
    fn by_unwinder() -> ([usize; 64], usize) {
        let mut f = [0usize; 64];
        let mut n = 0;
        // SAFETY: `_Unwind_Backtrace` is thread-safe.
        unsafe {
            backtrace::trace_unsynchronized(|fr| {
                let ip = fr.ip() as usize;
                if ip != 0 && n < 64 {
                    f[n] = ip;
                    n += 1;
                }
                n < 64
            });
        }
        (f, n)
    }

    /// Both captures from one frame: the fast walk's first frame is the
    /// return address into `both`, the unwinder's a few frames later.
    #[inline(never)]
    fn both(bounds: &mut (usize, usize)) -> (Vec<usize>, Vec<usize>) {
        let mut f = [MaybeUninit::new(0usize); 64];
        let n = core::hint::black_box(capture(bounds, &mut f)).expect("the fast walk");
        let (u, m) = core::hint::black_box(by_unwinder());
        // SAFETY: every element was initialised above.
        let f = f[..n].iter().map(|w| unsafe { w.assume_init() }).collect();
        (f, u[..m].to_vec())
    }

    /// Over-aligned: its frame realigns `rsp`, so its CFA is `rbp`-based.
    #[repr(align(128))]
    struct Aligned([u8; 128]);

    #[inline(never)]
    fn level3(b: &mut (usize, usize), x: usize) -> (Vec<usize>, Vec<usize>) {
        let mut a = Aligned([x as u8; 128]);
        core::hint::black_box(&mut a);
        let r = both(core::hint::black_box(b));
        core::hint::black_box(a.0[x % 128]);
        r
    }

    #[inline(never)]
    fn level2(b: &mut (usize, usize), x: usize) -> (Vec<usize>, Vec<usize>) {
        // A big frame (its CFA far from `rsp`).
        let mut big = [0u8; 5000];
        core::hint::black_box(&mut big);
        let r = level3(core::hint::black_box(b), x + big[x % 5000] as usize);
        core::hint::black_box(&big);
        r
    }

    #[inline(never)]
    fn level1(b: &mut (usize, usize), depth: usize) -> (Vec<usize>, Vec<usize>) {
        let r = if depth == 0 {
            level2(core::hint::black_box(b), depth)
        } else {
            level1(b, depth - 1)
        };
        core::hint::black_box(depth);
        r
    }

    /// The fast walk gives the system unwinder's frames, from the caller of
    /// the function that took both on, through a few nested functions (one
    /// recursive, one with a big frame, one whose CFA is `rbp`-based) and
    /// the test harness to the
    /// thread's start; the same again from the cache, and from another
    /// thread.
    #[test]
    fn same_stack_as_the_unwinder() {
        let check = || {
            let mut b = (0, 0);
            for round in 0..3 {
                let (fast, slow) = level1(&mut b, 3);
                // The unwinder's own frames precede the return address into
                // `both`, which is the fast walk's first.
                let skip = slow.len() - (fast.len() - 1);
                assert!(fast.len() > 8 && skip >= 1, "{fast:x?} {slow:x?}");
                assert_eq!(&fast[1..], &slow[skip..], "round {round}: {fast:x?} against {slow:x?}");
                // The recursion: three calls from one place in `level1`.
                let rec = fast.iter().map(|a| fast.iter().filter(|b| *b == a).count()).max();
                assert_eq!(rec, Some(3), "{fast:x?}");
            }
        };
        check();
        std::thread::spawn(check).join().unwrap();
    }

    /// What the walk gave in the signal handler: its depth, or `usize::MAX`
    /// for None.
    static IN_HANDLER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    extern "C" fn handler(_: libc::c_int) {
        let mut b = (0, 0);
        let mut f = [MaybeUninit::new(0usize); 64];
        let r = capture(&mut b, &mut f).unwrap_or(usize::MAX);
        IN_HANDLER.store(r, Ordering::Relaxed);
    }

    /// A signal frame (the kernel's return to `__restore_rt`, whose CIE is
    /// marked `S`) ends the walk with None: the sample goes to the system
    /// unwinder, which knows such frames.
    #[test]
    fn a_signal_frame_falls_back() {
        // SAFETY: installs a handler that allocates nothing and only stores
        // to an atomic, for a signal this test alone raises, on its own thread.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, core::ptr::null_mut()), 0);
            assert_eq!(libc::raise(libc::SIGUSR2), 0);
        }
        assert_eq!(IN_HANDLER.load(Ordering::Relaxed), usize::MAX);
    }

    /// A spawned thread's stack ends at its TCB (checked with the kernel);
    /// the main thread's is found in `/proc/self/maps`.
    #[test]
    fn stack_bounds_of_threads() {
        let here = || {
            let x = 0u8;
            let sp = core::hint::black_box(&x) as *const u8 as usize;
            let (lo, hi) = stack_bounds(sp).expect("bounds");
            assert!(lo <= sp && sp < hi);
            (hi, thread_pointer())
        };
        let (hi, tp) = std::thread::spawn(here).join().unwrap();
        assert_eq!(hi, tp);
        // Not the TCB: a point of a region the kernel would not read.
        assert!(!crate::os::readable(8, 4096 * 3));
    }
}
