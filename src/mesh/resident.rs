//! The process's resident memory with merged pages counted once.
//!
//! The kernel's RSS counts a page of the memfd once for each address whose
//! page tables map it, so a merged page read through its primary and one
//! alias counts twice. [`resident`] takes the statm figure, subtracts what
//! `/proc/self/smaps` shows resident in the memfd's mappings, and adds the
//! memfd's pages once (`st_blocks` of the memfd: what its chunks hold, the
//! holes their primaries' sub-page purge punched left out). Reads the file
//! through a stack buffer: no
//! allocation; it costs a walk of every mapping's entry (milliseconds for
//! thousands of mappings), so it is done only while merged pages exist.

use super::{sub, GROUPS, LEN};
use core::sync::atomic::Ordering;

/// `statm`'s resident bytes, corrected for merged pages.
pub(crate) fn resident(statm: usize) -> usize {
    let groups = GROUPS.load(Ordering::Relaxed);
    let slots = sub::SLOTS.load(Ordering::Relaxed);
    if groups == 0 && slots == 0 || statm == 0 {
        return statm;
    }
    match (memfd_rss(), memfd_bytes()) {
        (Some(mapped), Some(held)) => statm.saturating_sub(mapped) + held,
        (Some(mapped), None) => {
            statm.saturating_sub(mapped) + groups * LEN + slots * crate::os::OS_PAGE
        }
        _ => statm,
    }
}

/// Bytes of memory the memfd holds (its `st_blocks`), if `fstat` says.
fn memfd_bytes() -> Option<usize> {
    let fd = super::fd();
    if fd < 0 {
        return None;
    }
    // SAFETY: `fstat` fills the zeroed buffer we pass; the descriptor is
    // ours (a stale one at worst yields an error or another file's size,
    // never memory unsafety).
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        Some(st.st_blocks as usize * 512)
    }
}

/// Bytes `/proc/self/smaps` shows resident in mappings of the memfd.
fn memfd_rss() -> Option<usize> {
    // SAFETY: a NUL-terminated path; a read-only descriptor of our own.
    let fd = unsafe {
        libc::open(
            c"/proc/self/smaps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 8192];
    let mut have = 0; // bytes of an unfinished line kept at the front
    let mut ours = false;
    let mut total = 0usize;
    loop {
        // SAFETY: reads into the free part of our buffer.
        let n = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if n <= 0 {
            break;
        }
        let end = have + n as usize;
        let mut start = 0;
        while let Some(k) = buf[start..end].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + k];
            if line
                .first()
                .is_some_and(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && line.contains(&b'-')
            {
                // A mapping's header: "start-end perms offset dev inode path".
                ours = line.windows(13).any(|w| w == b"segalloc-mesh");
            } else if ours && line.starts_with(b"Rss:") {
                total += kib(&line[4..]) * 1024;
            }
            start += k + 1;
        }
        // Keep the unfinished line; a line longer than the buffer is dropped.
        have = end - start;
        if have == buf.len() {
            have = 0;
        } else {
            buf.copy_within(start..end, 0);
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    Some(total)
}

/// The number in "   123 kB".
fn kib(s: &[u8]) -> usize {
    s.iter()
        .skip_while(|b| !b.is_ascii_digit())
        .take_while(|b| b.is_ascii_digit())
        .fold(0usize, |n, &d| n * 10 + (d - b'0') as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_kib() {
        assert_eq!(super::kib(b"            1234 kB"), 1234);
        assert_eq!(super::kib(b" 0 kB"), 0);
    }

    #[test]
    fn no_groups_no_change() {
        // Other tests of this process merge pages meanwhile: whole pages
        // (groups) and OS pages (slots) both count.
        let none = || {
            let r = core::sync::atomic::Ordering::Relaxed;
            super::GROUPS.load(r) == 0 && super::sub::SLOTS.load(r) == 0
        };
        let before = none();
        let got = super::resident(12345);
        if before && none() {
            assert_eq!(got, 12345);
        }
        assert_eq!(super::memfd_rss().map(|_| ()), Some(()));
    }
}
