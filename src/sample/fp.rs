//! Stacks through frame pointers (option `prof_unwind=fp`): a walk of the
//! chain of frame records (`[fp]` the caller's frame pointer, `[fp + 8]`
//! the return address, on x86-64 and AArch64) that allocates nothing and
//! cannot fault.
//!
//! It cannot fault because every record it reads lies between the walk's
//! own stack pointer and the end of the calling thread's stack mapping,
//! found in `/proc/self/maps` (read with plain system calls into a stack
//! buffer, once per thread: the bounds are kept in the heap's `Prof`, and
//! read again only when the stack pointer leaves them). Each frame must be
//! aligned and strictly above the one before, so the walk ends, within
//! [`super::MAX_FRAMES`] frames. It is only as good as the frame pointers:
//! code built without them (Rust's default; C's at `-O1` and above) uses
//! the register for other things, and the walk then ends early or, rarely,
//! records a bogus frame (a word of the stack taken for a return address);
//! hence `-C force-frame-pointers=yes` and `-fno-omit-frame-pointer`.

/// Whether this architecture's frame records are walked here.
pub(crate) const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

use core::mem::MaybeUninit;

const WORD: usize = core::mem::size_of::<usize>();

/// The frame pointer register of the calling function (inlined into it).
#[inline(always)]
fn frame_pointer() -> usize {
    #[allow(unused_mut)]
    let mut fp = 0usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies a register; touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: copies a register; touches no memory.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

/// Walks the frame records from `fp`, each of which must lie in
/// `[lo, hi)`, be word-aligned and lie above the one before; stores the
/// return addresses in `out`, innermost first, and returns how many.
///
/// # Safety
/// `[lo, hi)` is readable memory for as long as the walk lasts (the
/// calling thread's own stack, from its stack pointer up).
unsafe fn walk(mut fp: usize, lo: usize, hi: usize, out: &mut [MaybeUninit<usize>]) -> usize {
    let mut n = 0;
    while n < out.len() {
        if fp < lo || fp % WORD != 0 || hi < 2 * WORD || fp > hi - 2 * WORD {
            break;
        }
        // SAFETY: `[fp, fp + 2 words)` lies in `[lo, hi)`, readable per the
        // contract; volatile, as these are other frames' words.
        let (next, ret) = unsafe {
            (
                core::ptr::read_volatile(fp as *const usize),
                core::ptr::read_volatile((fp + WORD) as *const usize),
            )
        };
        if ret == 0 {
            break;
        }
        out[n] = MaybeUninit::new(ret);
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

/// The calling thread's stack through frame pointers, into `out`
/// (innermost first: the caller of this function first); `bounds` is the
/// thread's cached stack mapping (`(0, 0)` at first). None when the stack
/// mapping cannot be found or no frame was walked: the caller then uses
/// the unwinder. Allocates nothing.
#[inline(never)]
pub(crate) fn capture(
    bounds: &mut (usize, usize),
    out: &mut [MaybeUninit<usize>],
) -> Option<usize> {
    if !SUPPORTED {
        return None;
    }
    let marker = 0u8;
    // Our frame's lowest part: every frame record of the walk is above it.
    let sp = core::hint::black_box(&marker) as *const u8 as usize;
    if !(bounds.0 <= sp && sp < bounds.1) {
        *bounds = mapping_of(sp)?;
    }
    let fp = frame_pointer();
    // SAFETY: `[sp, bounds.1)` is the part of this thread's stack mapping
    // above our own frame: mapped, readable, and not unmapped while the
    // thread runs on it.
    let n = unsafe { walk(fp, sp, bounds.1, out) };
    (n > 0).then_some(n)
}

/// The mapping of `/proc/self/maps` holding `addr`: `(start, end)`. Reads
/// the file with system calls into a stack buffer, parsing each line's
/// leading `start-end` (in hex) as it goes. Allocates nothing.
pub(super) fn mapping_of(addr: usize) -> Option<(usize, usize)> {
    // SAFETY: opens a NUL-terminated path read-only; the descriptor is ours
    // and closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    // Per line: 0 parsing the start, 1 the end, 2 skipping to the newline.
    let (mut state, mut start, mut end) = (0u8, 0usize, 0usize);
    let mut found = None;
    'read: loop {
        // SAFETY: reads into our buffer, within its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            match (state, b) {
                (_, b'\n') => {
                    if state == 2 && start <= addr && addr < end {
                        found = Some((start, end));
                        break 'read;
                    }
                    (state, start, end) = (0, 0, 0);
                }
                (0, b'-') => state = 1,
                (0, _) => start = start.wrapping_shl(4) | hex(b),
                (1, b' ') => state = 2,
                (1, _) => end = end.wrapping_shl(4) | hex(b),
                _ => {}
            }
        }
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    found
}

fn hex(b: u8) -> usize {
    (b as char).to_digit(16).unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk stops at a record outside the bounds, at one not above the
    /// last, and at a null return address; the stack mapping is found.
    #[test]
    fn walk_is_bounded_and_increasing() {
        // Records laid out in an array standing for a stack: 0 -> 2 -> 4,
        // then 4 points back down to 2.
        let mut st = [0usize; 8];
        let base = st.as_ptr() as usize;
        st[0] = base + 2 * WORD;
        st[1] = 0x1111;
        st[2] = base + 4 * WORD;
        core::hint::black_box(&mut st)[3] = 0x2222;
        st[4] = base + 2 * WORD;
        st[5] = 0x3333;
        let hi = base + 8 * WORD;
        let mut out = [MaybeUninit::new(0usize); 16];
        // The first `n` frames written.
        let got = |out: &[MaybeUninit<usize>], n: usize| -> Vec<usize> {
            // SAFETY: every element was initialised (zeroes) above.
            out[..n]
                .iter()
                .map(|w| unsafe { w.assume_init() })
                .collect()
        };
        // SAFETY: the array is readable for the walk.
        let n = unsafe { walk(base, base, hi, &mut out) };
        assert_eq!(got(&out, n), [0x1111, 0x2222, 0x3333]);
        // Bounds: the second record is cut off.
        // SAFETY: as above.
        let n = unsafe { walk(base, base, base + 3 * WORD, &mut out) };
        assert_eq!(got(&out, n), [0x1111]);
        // Misaligned, or below the low bound: nothing.
        // SAFETY: as above.
        assert_eq!(unsafe { walk(base + 1, base, hi, &mut out) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { walk(base, base + WORD, hi, &mut out) }, 0);
        // A null return address ends it.
        core::hint::black_box(&mut st)[3] = 0;
        // SAFETY: as above.
        let n = unsafe { walk(base, base, hi, &mut out) };
        assert_eq!(got(&out, n), [0x1111]);
        // The depth limit.
        core::hint::black_box(&mut st)[3] = 0x2222;
        // SAFETY: as above.
        let n = unsafe { walk(base, base, hi, &mut out[..2]) };
        assert_eq!(n, 2);
        let local = 0u8;
        let (lo, hi) = mapping_of(&local as *const u8 as usize).expect("our stack's mapping");
        assert!(lo <= &local as *const u8 as usize && (&local as *const u8 as usize) < hi);
    }
}
