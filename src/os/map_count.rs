//! The kernel's limit on the number of mappings a process may have
//! (`/proc/sys/vm/max_map_count`, 65,530 by default): past it every `mmap`,
//! and every `munmap` or `mprotect` that would split a mapping, fails with
//! `ENOMEM`. Layers that make a mapping per object (the heap profiler's
//! sampled small blocks) bound themselves by it, so that they never take
//! the mappings the segments need.

use super::read_file;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The kernel's setting.
const SETTING: &core::ffi::CStr = c"/proc/sys/vm/max_map_count";

/// The kernel's default, assumed where the setting cannot be read.
const DEFAULT: usize = 65_530;

/// The limit, read once (0: not read yet).
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// The most mappings this process may have. Read from the kernel at the
/// first call (a plain `open` and `read`: no allocation), the kernel's
/// default where it cannot be read; a later change of the setting is not
/// seen.
#[inline]
pub(crate) fn max_map_count() -> usize {
    match LIMIT.load(Ordering::Relaxed) {
        0 => read_max_map_count(),
        n => n,
    }
}

/// The first look of [`max_map_count`]: out of line, so that the usual
/// one (a load, at every sample of the heap profiler) sets up no buffer
/// and saves no registers.
#[cold]
#[inline(never)]
fn read_max_map_count() -> usize {
    let mut buf = [0u8; 32];
    let n = read_file(SETTING, &mut buf);
    let limit = parse(&buf[..n]).unwrap_or(DEFAULT);
    LIMIT.store(limit, Ordering::Relaxed);
    limit
}

/// The decimal number at the start of `text` (the file's contents), if
/// there is a non-zero one.
fn parse(text: &[u8]) -> Option<usize> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit());
    let mut n: usize = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    (n != 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::{max_map_count, parse};

    #[test]
    fn the_setting_is_read_as_a_number() {
        assert_eq!(parse(b"65530\n"), Some(65_530));
        assert_eq!(parse(b"262144"), Some(262_144));
        assert_eq!(parse(b""), None, "no such file");
        assert_eq!(parse(b"0\n"), None);
        assert_eq!(parse(b"99999999999999999999999\n"), None, "overflow");
        assert!(max_map_count() >= 1024);
    }
}
