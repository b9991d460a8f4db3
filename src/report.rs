//! The statistics file: `SEGALLOC_STATS_FILE=path` has segalloc's background
//! thread rewrite `path` with the statistics table every second, and once
//! more at exit, so that an operator can read where a running program's
//! memory went (`cat path`) without changing the program: a C service under
//! `LD_PRELOAD` as much as a Rust one.
//!
//! - **The file** holds a header line (`segalloc statistics of pid N,
//!   written YYYY-MM-DD HH:MM:SS UTC`); a line of what the pages of small
//!   blocks hold, live and free, read from each page's own count at that
//!   instant (`pagemap`'s walk of every segment), which does not lag as the
//!   counters of other running threads do; then the table of
//!   [`Stats`](crate::Stats)'s `Display` and the options in force, as
//!   `SEGALLOC_SHOW_STATS` prints them.
//!   It is written to `path.tmp` and renamed over `path`, so a reader sees a
//!   whole report, never a half-written one. `%p` in the path stands for the
//!   process id (`%%` for `%`).
//! - **Fork.** A child forked from the program writes its own file only if
//!   the path has `%p`; otherwise the file stays the parent's (a child that
//!   forks to save a snapshot, as Redis does, does not overwrite it).
//! - **Failures** (no such directory, no permission, a path longer than
//!   [`MAX_PATH`] bytes) print one line on stderr, once; the program goes on,
//!   and later reports are tried again.
//! - **No allocation**, no call from an allocation path: the path is read
//!   with `getenv` at the first allocation slow path (one load afterwards),
//!   and the reports are written by the background thread (`background`,
//!   started at a slow path once `main` has begun) and by an exit hook it
//!   registers, formatted on the stack. A process that exits before its
//!   thread starts writes no report.

use crate::stats::{Bytes, FdOut};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};

/// The longest path taken (bytes, without the terminating NUL).
pub(crate) const MAX_PATH: usize = 511;
/// How often the file is rewritten (ms).
pub(crate) const PERIOD_MS: u64 = 1000;

/// Not read yet, being read, off (no variable, or a bad one), on.
const UNREAD: u8 = 0;
const READING: u8 = 1;
const OFF: u8 = 2;
const ON: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);
/// The process that read the variable (a child without `%p` writes nothing).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// When the next report is due (coarse clock, ms; 0: at once).
static NEXT_MS: AtomicU64 = AtomicU64::new(0);
/// Whether a failure was reported on stderr already.
static SAID: AtomicU8 = AtomicU8::new(0);
/// One report at a time: the background thread's and the exit hook's would
/// share `path.tmp`. Taken by the fork handlers (`background`), so a child
/// never inherits it held.
pub(crate) static WRITING: spin::Mutex<()> = spin::Mutex::new(());

/// The path as given, with its length; written once, before `STATE` turns
/// [`ON`] (release), read only after seeing it on (acquire).
struct Path(UnsafeCell<([u8; MAX_PATH + 1], usize)>);
// SAFETY: written by the one thread that moved `STATE` from UNREAD to
// READING, before it publishes ON; never written again.
unsafe impl Sync for Path {}
static PATH: Path = Path(UnsafeCell::new(([0; MAX_PATH + 1], 0)));

/// Whether the statistics file is asked for (reads the variable the first
/// time; one load afterwards). Called from allocation slow paths, outside
/// every lock.
#[inline]
pub(crate) fn wanted() -> bool {
    match STATE.load(Ordering::Acquire) {
        ON => true,
        UNREAD => read_env(),
        _ => false,
    }
}

#[cold]
fn read_env() -> bool {
    if STATE
        .compare_exchange(UNREAD, READING, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        // Another thread reads it: on only once it says so.
        return false;
    }
    // SAFETY: getenv with a NUL-terminated name, no allocation; the result
    // is copied at once.
    let v = unsafe { libc::getenv(c"SEGALLOC_STATS_FILE".as_ptr()) };
    let state = if v.is_null() {
        OFF
    } else {
        // SAFETY: a non-null getenv result is a NUL-terminated string.
        let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
        if bytes.is_empty() {
            OFF
        } else if bytes.len() > MAX_PATH {
            say(b"segalloc: ignoring SEGALLOC_STATS_FILE: longer than 511 bytes\n");
            OFF
        } else {
            // SAFETY: this thread alone moved STATE to READING (see `Path`).
            let p = unsafe { &mut *PATH.0.get() };
            p.0[..bytes.len()].copy_from_slice(bytes);
            p.1 = bytes.len();
            // SAFETY: a plain system call.
            OWNER.store(unsafe { libc::getpid() }, Ordering::Relaxed);
            ON
        }
    };
    STATE.store(state, Ordering::Release);
    state == ON
}

/// The path as given, once [`wanted`].
fn path() -> &'static [u8] {
    // SAFETY: read only after `wanted` saw ON (acquire): written once before.
    let p = unsafe { &*PATH.0.get() };
    &p.0[..p.1]
}

/// Whether this process writes the file: the one that read the variable,
/// or any, if the path has `%p`. Stops the reports for good where it does
/// not (a cold call: the background thread's start).
pub(crate) fn for_this_process() -> bool {
    if !wanted() {
        return false;
    }
    // SAFETY: a plain system call.
    let mine = OWNER.load(Ordering::Relaxed) == unsafe { libc::getpid() };
    if mine || names_pid(path()) {
        return true;
    }
    STATE.store(OFF, Ordering::Relaxed);
    false
}

/// Milliseconds until the next report is due at `now_ms` (coarse clock).
pub(crate) fn due_in(now_ms: u64) -> u64 {
    NEXT_MS.load(Ordering::Relaxed).saturating_sub(now_ms)
}

/// Writes a report if one is due at `now_ms` (the background thread).
pub(crate) fn write_if_due(now_ms: u64) {
    if wanted() && due_in(now_ms) == 0 {
        NEXT_MS.store(now_ms + PERIOD_MS, Ordering::Relaxed);
        write();
    }
}

/// Registers [`write_at_exit`] once per process (a forked child inherits
/// it), when the background thread starts for the reports.
pub(crate) fn register_exit_hook() {
    static DONE: AtomicU8 = AtomicU8::new(0);
    if DONE.swap(1, Ordering::Relaxed) == 0 {
        // A failure (ENOMEM) only loses the last report.
        crate::os::at_exit(write_at_exit);
    }
}

/// The last report, at exit, if this process writes one.
extern "C" fn write_at_exit() {
    if for_this_process() {
        write();
    }
}

/// Writes the report: `path.tmp`, then renamed over `path`.
fn write() {
    let _w = WRITING.lock();
    // SAFETY: a plain system call.
    let pid = unsafe { libc::getpid() };
    // The path with `%p` expanded, and `.tmp` after it, NUL-terminated.
    let mut full = [0u8; 2 * MAX_PATH + 16];
    let Some(n) = expand(path(), pid, &mut full[..2 * MAX_PATH]) else {
        say(b"segalloc: could not write SEGALLOC_STATS_FILE: the path with %p expanded is too long\n");
        return;
    };
    let mut tmp = full;
    tmp[n..n + 4].copy_from_slice(b".tmp");
    // SAFETY: opening a NUL-terminated path (the arrays are zeroed past
    // it); the mode is the variadic argument open expects with O_CREAT.
    let fd = unsafe {
        libc::open(
            tmp.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        say(b"segalloc: could not write SEGALLOC_STATS_FILE (open failed); trying again every second\n");
        return;
    }
    let (pages, held, live) = crate::pagemap::page_map().pages_now();
    let mut out = FdOut::new(fd);
    let mut ok = write!(out, "{}{}", Header(pid), PagesNow { pages, held, live }).is_ok()
        && crate::stats::write_table(&mut out).is_ok();
    ok &= out.flush();
    // SAFETY: closing the descriptor we opened; renaming NUL-terminated
    // paths of ours.
    unsafe {
        ok &= libc::close(fd) == 0;
        ok = ok && libc::rename(tmp.as_ptr().cast(), full.as_ptr().cast()) == 0;
        if !ok {
            libc::unlink(tmp.as_ptr().cast());
        }
    }
    if !ok {
        say(b"segalloc: could not write SEGALLOC_STATS_FILE (write or rename failed); trying again every second\n");
    }
}

/// Whether `path` has a `%p` (one not escaped as `%%p`).
fn names_pid(path: &[u8]) -> bool {
    let mut i = 0;
    while i + 1 < path.len() {
        match (path[i], path[i + 1]) {
            (b'%', b'p') => return true,
            (b'%', b'%') => i += 2,
            _ => i += 1,
        }
    }
    false
}

/// Copies `path` into `out` with `%p` replaced by `pid` and `%%` by `%`;
/// returns the length, or `None` if it does not fit.
fn expand(path: &[u8], pid: i32, out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    let mut put = |b: u8, n: &mut usize| -> Option<()> {
        *out.get_mut(*n)? = b;
        *n += 1;
        Some(())
    };
    let mut i = 0;
    while i < path.len() {
        match (path[i], path.get(i + 1)) {
            (b'%', Some(b'p')) => {
                let mut digits = [0u8; 20];
                for &d in crate::options::decimal(pid.unsigned_abs() as usize, &mut digits) {
                    put(d, &mut n)?;
                }
                i += 2;
            }
            (b'%', Some(b'%')) => {
                put(b'%', &mut n)?;
                i += 2;
            }
            (b, _) => {
                put(b, &mut n)?;
                i += 1;
            }
        }
    }
    Some(n)
}

/// One line on stderr, the first time only.
fn say(msg: &[u8]) {
    if SAID.swap(1, Ordering::Relaxed) == 0 {
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}

/// The report's first line: whose and when (UTC).
struct Header(i32);

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes our timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let secs = ts.tv_sec.max(0) as u64;
        let (y, m, d) = civil(secs / 86_400);
        let t = secs % 86_400;
        writeln!(
            f,
            "segalloc statistics of pid {}, written {y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
            self.0,
            t / 3600,
            t / 60 % 60,
            t % 60
        )
    }
}

/// The second line: what the pages of small blocks hold, read from each
/// page now (the table's counters of other running threads lag behind).
struct PagesNow {
    pages: usize,
    held: usize,
    live: usize,
}

impl fmt::Display for PagesNow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let free = self.held.saturating_sub(self.live);
        writeln!(
            f,
            "pages now: {} pages of small blocks hold {}: {} in live blocks, {} free ({:.1}%), each page's count read at this instant",
            self.pages,
            Bytes(self.held),
            Bytes(self.live),
            Bytes(free),
            if self.held == 0 { 0.0 } else { 100.0 * free as f64 / self.held as f64 }
        )
    }
}

/// The date (year, month, day) `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days since the epoch).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days_since_the_epoch() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(59), (1970, 3, 1));
        // 2000-02-29, a leap day of a year divisible by 400.
        assert_eq!(civil(11_016), (2000, 2, 29));
        // 2026-11-29.
        assert_eq!(civil(20_786), (2026, 11, 29));
        assert_eq!(civil(20_819), (2027, 1, 1));
    }

    #[test]
    fn the_path_expands_the_pid_and_percent_signs() {
        let mut out = [0u8; 64];
        let n = expand(b"/run/x.%p.stats", 4321, &mut out).unwrap();
        assert_eq!(&out[..n], b"/run/x.4321.stats");
        let n = expand(b"a%%p%", 7, &mut out).unwrap();
        assert_eq!(&out[..n], b"a%p%");
        assert!(names_pid(b"/run/x.%p") && names_pid(b"%%%p"));
        assert!(!names_pid(b"/run/x.%%p") && !names_pid(b"/run/x%") && !names_pid(b""));
        let n = expand(b"%p", 0, &mut out).unwrap();
        assert_eq!(&out[..n], b"0");
        let mut small = [0u8; 5];
        assert_eq!(expand(b"ab%p", 12345, &mut small), None);
        assert_eq!(expand(b"abcde", 1, &mut small), Some(5));
    }
}
