//! Transparent huge pages (option `thp`): whether they are in force, the
//! advice on new mappings, and the verbose line where the kernel has them
//! off.
//!
//! The option takes effect only where the kernel can give huge pages: its
//! setting (`/sys/kernel/mm/transparent_hugepage/enabled`) exists and is not
//! `never`, and `madvise(MADV_HUGEPAGE)` is accepted. Elsewhere the option
//! is a no-op: no advice, and free memory purged as without it (in 4 KiB
//! pieces, sub-page purge included), since keeping free memory resident in
//! whole huge pages buys nothing where none can form. With `verbose`, one
//! line says so.

use super::{count, errno, read_file, COUNTERS, HUGE_PAGE};
use core::sync::atomic::{AtomicUsize, Ordering};

/// The kernel's setting for transparent huge pages.
const SETTING: &core::ffi::CStr = c"/sys/kernel/mm/transparent_hugepage/enabled";

/// What the kernel allows, read once: 0 not read yet, 1 huge pages, 2 none.
static KERNEL: AtomicUsize = AtomicUsize::new(0);

/// Whether huge pages are in force: the option `thp` on, and the kernel
/// willing. Read on slow paths only (purges); the file is read once.
pub(crate) fn in_force() -> bool {
    crate::options::THP.get() != 0 && kernel_allows()
}

/// Whether the kernel gives huge pages (its setting read at the first call;
/// a refused `madvise` turns it off).
fn kernel_allows() -> bool {
    match KERNEL.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let mut buf = [0u8; 64];
            let n = read_file(SETTING, &mut buf);
            let on = !setting_off(&buf[..n]);
            KERNEL.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Whether the kernel's setting (the file's contents, empty when there is
/// no such file) has huge pages off.
fn setting_off(setting: &[u8]) -> bool {
    setting.is_empty() || setting.windows(7).any(|w| w == b"[never]")
}

/// Advises the new mapping `p` of `size` bytes for huge pages, when it is
/// large enough, the option is on and the kernel willing. Segments and
/// large blocks are 4 MiB-aligned, so 2 MiB pages can form; the flag
/// belongs to the mapping and follows it through `mremap`.
pub(super) fn advise(p: *mut libc::c_void, size: usize) {
    if size < HUGE_PAGE || crate::options::THP.get() == 0 {
        return;
    }
    if !kernel_allows() {
        report_once(None);
        return;
    }
    count(&COUNTERS.madvise);
    // SAFETY: advice on a mapping the caller just made; it changes no
    // contents.
    let rc = unsafe { libc::madvise(p, size, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        let e = errno();
        KERNEL.store(2, Ordering::Relaxed);
        report_once(Some(e));
    }
}

/// With `verbose` on, says once that the option does nothing here: because
/// `madvise` failed with `errno`, or (`None`) because the kernel's setting
/// has huge pages off.
fn report_once(errno: Option<i32>) {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    if crate::options::VERBOSE.get() == 0 || DONE.swap(1, Ordering::Relaxed) != 0 {
        return;
    }
    if let Some(e) = errno {
        crate::options::verbose(|l| {
            l.push(b"madvise(MADV_HUGEPAGE) failed, errno ");
            l.number(e as usize);
            l.push(b": the option thp does nothing here");
        });
        return;
    }
    let mut buf = [0u8; 64];
    let n = read_file(SETTING, &mut buf);
    crate::options::verbose(|l| {
        l.push(b"transparent huge pages are off in this kernel (");
        l.push(buf[..n].trim_ascii());
        l.push(b"): the option thp does nothing");
    });
}

#[cfg(test)]
mod tests {
    use super::setting_off;

    #[test]
    fn the_kernel_setting_is_read_as_on_or_off() {
        assert!(!setting_off(b"always [madvise] never\n"));
        assert!(!setting_off(b"[always] madvise never\n"));
        assert!(setting_off(b"always madvise [never]\n"));
        assert!(setting_off(b""), "no such file");
    }
}
