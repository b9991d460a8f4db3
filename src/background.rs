//! Background purging (option `background`, `SEGALLOC_BACKGROUND=1`, off by
//! default): a thread that gives back the free memory of heaps whose threads
//! stopped allocating, so that an idle process's resident set falls to its
//! live memory without any thread reaching a slow path.
//!
//! Four times per purge delay (option `purge_delay_ms`; at most every 5 ms),
//! and when a heap's next timed step falls due sooner, it wakes and:
//! - purges each live thread's heap that has free memory resident and
//!   whose thread reached no slow path since the last look, one purge delay
//!   or more ago (each heap's handshake epoch, see `handshake`): the heap's
//!   own timed purge, made for it;
//! - brings a heap whose timed step is due, but whose thread allocates
//!   only from its free lists, to that thread's next slow path (the nudge,
//!   `heap::nudge`);
//! - retires parked heaps that are due, unmaps cached large blocks (and
//!   the heap profiler's cached mappings of sampled blocks) that waited the
//!   purge delay, and purges the kept free segments;
//! - reads the meshing budget if a timed step asked (`mesh::sub`), which
//!   would otherwise read it inside an allocation.
//!
//! How it stays safe:
//! - **No allocation.** The thread is made with `pthread_create` (not
//!   `std::thread`) and runs only segalloc's own purge code, which never
//!   allocates; it never touches its own thread's heap. It is started
//!   lazily from the allocation slow path, before that path's handshake and
//!   outside every lock, since `pthread_create` may itself call `malloc`;
//!   and never before the program's `main` has begun (`startup`): a slow
//!   path in a constructor leaves it for a later one.
//! - **No race with owners.** It touches a heap only after taking it in the
//!   heap's handshake, which the owner's slow paths take too; the fast paths
//!   never touch what a purge does.
//! - **Fork.** A process-wide lock ([`PURGING`]) is held for each heap's
//!   purge and taken by the fork handlers (`thread::fork`) first, so no heap
//!   is left taken in the child; the child has no purger thread, and its
//!   first slow path starts one if the option is on.
//! - **Exit.** The thread is detached, blocks every signal (the program's
//!   handlers never run on it), and holds a heap only for one purge; `exit`
//!   ends it with the process. glibc ends a process when its last thread
//!   ends, and this one counts: once it finds itself alone with a main
//!   thread that ended by `pthread_exit` (a zombie, [`alone`]), it returns,
//!   and glibc, seeing the last thread gone, calls `exit(0)` on it, as it
//!   would have on the program's last thread. Its stack is a thread's usual
//!   one (virtual memory, touched only as used), for the program's `atexit`
//!   handlers then run on it.
//!
//! It exits by itself when the option is turned off; the next slow path with
//! the option on starts it again.
//!
//! The same thread writes the statistics file (`SEGALLOC_STATS_FILE`, see
//! `report`) every second, and is started for it alone when the
//! option is off; it then purges nothing.

use crate::counters::HeapCounters;
use crate::handshake::Handshake;
use crate::heap::Heap;
use crate::options;
use crate::os;
use crate::report;
use crate::thread;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicUsize, Ordering};

/// No purger thread (or the option was off when it last looked).
const NONE: usize = 0;
/// The thread runs (or is being made).
const RUNNING: usize = 1;
/// `pthread_create` failed: not tried again.
const FAILED: usize = 2;

static STATE: AtomicUsize = AtomicUsize::new(NONE);

/// How often the purger looks per purge delay (see [`run`]).
const LOOKS_PER_DELAY: u64 = 4;
/// The shortest time between two looks.
const MIN_PERIOD_MS: u64 = 5;
/// How often the thread checks whether it is [`alone`] (three system
/// calls): a process whose threads have all ended lingers at most about
/// this long, or a sleep of the thread's if longer.
const ALONE_PERIOD_MS: u64 = 100;

/// Held for each round of purges, before any other lock; the fork handlers
/// take it before every other (see [`register_fork_handlers`]).
pub(crate) static PURGING: spin::Mutex<()> = spin::Mutex::new(());

/// Starts the purger thread if the option is on (or the statistics file is
/// asked for) and none runs: two loads and branches otherwise. Called
/// outside every lock and handshake.
#[inline]
pub(crate) fn start_if_wanted() {
    if STATE.load(Ordering::Relaxed) == NONE && (options::BACKGROUND.get() != 0 || report::wanted())
    {
        start();
    }
}

#[cold]
#[inline(never)]
fn start() {
    if !crate::startup::main_started() {
        // Never before `main` (see `startup`): a later slow path starts it.
        static SAID: AtomicUsize = AtomicUsize::new(0);
        if SAID.swap(1, Ordering::Relaxed) == 0 {
            options::verbose(|l| {
                l.push(b"background purging waits for main() to begin".as_slice());
            });
        }
        return;
    }
    let purging = options::BACKGROUND.get() != 0;
    // A forked child without `%p` in the file's path leaves the file to its
    // parent (this turns its reports off): for the reports alone, no thread.
    let reporting = report::for_this_process();
    if !purging && !reporting {
        return;
    }
    if STATE
        .compare_exchange(NONE, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    register_fork_handlers();
    if reporting {
        report::register_exit_hook();
    }
    // SAFETY: plain libc calls on values we own: the attribute object, a
    // full signal set and the caller's old mask, and the caller's name (16
    // bytes, what `PR_GET_NAME` writes), both restored before returning.
    // The new thread inherits the full mask, so no signal is delivered to it.
    let ok = unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        // The thread takes its name from its creator: this one's, for the
        // call, not written through `/proc/self/task/<tid>/comm` (what
        // `pthread_setname_np` does for another thread), since a forked
        // child that touched its `/proc` entries costs its parent's `wait`
        // milliseconds of the kernel's dentry invalidation (a shell's
        // command substitution took 4 ms instead of 0.5 with the thread on).
        let mut name = [0u8; 16];
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
        libc::prctl(libc::PR_SET_NAME, c"segalloc-purge".as_ptr());
        let mut t: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut t, &attr, run, core::ptr::null_mut());
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        rc == 0
    };
    if !ok {
        STATE.store(FAILED, Ordering::Relaxed);
    }
    options::verbose(|l| {
        l.push(match (ok, purging) {
            (true, true) => b"background purging thread started".as_slice(),
            (true, false) => b"background thread started for SEGALLOC_STATS_FILE".as_slice(),
            (false, _) => {
                b"could not start the background purging thread; not tried again".as_slice()
            }
        });
    });
}

/// The purger thread's body.
extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    let mut next = 0;
    // The first look at whether it is alone a period after the start, for
    // the same reason: a child that exits or execs sooner never reads
    // `/proc`.
    let mut next_alone_look = os::now_ms() + ALONE_PERIOD_MS;
    loop {
        let purging = options::BACKGROUND.get() != 0;
        let reporting = report::wanted();
        if !purging && !reporting {
            STATE.store(NONE, Ordering::Relaxed);
            return core::ptr::null_mut();
        }
        // Looks four times per delay: a heap is seen idle within a quarter
        // delay of its thread's last slow path and purged one delay after
        // that, so between one and one and a half delays (plus the purge)
        // after its thread stopped. Looking twice per delay with the coarse
        // clock made that up to two delays: the look one delay after the
        // first sighting could read the clock a few ms short (its 4 ms
        // ticks) and leave the purge to the next look.
        let delay = options::purge_delay_ms();
        let period = (delay / LOOKS_PER_DELAY).max(MIN_PERIOD_MS);
        let mut sleep = if purging {
            until_next_look(period, next)
        } else {
            report::PERIOD_MS
        };
        if reporting {
            sleep = sleep.min(report::due_in(os::now_ms()));
        }
        sleep_ms(sleep);
        if purging {
            next = tick(os::now_us(), delay.saturating_mul(1000));
            // The meshing budget's reads of `/proc/self/maps` (up to 16
            // ms), here rather than in a timed step inside an allocation.
            crate::mesh::sub::read_if_asked(2 * period);
        }
        // Outside every lock the purge takes.
        report::write_if_due(os::now_ms());
        let now = os::now_ms();
        if now >= next_alone_look {
            next_alone_look = now + ALONE_PERIOD_MS;
            if alone() {
                // The program's threads have all ended (see the module
                // docs): glibc exits the process as this thread, its last,
                // returns.
                STATE.store(NONE, Ordering::Relaxed);
                return core::ptr::null_mut();
            }
        }
    }
}

/// Whether the calling thread is the process's only live one, beside a
/// main thread that ended by `pthread_exit` (a zombie, which stays in the
/// thread group until the group ends): `/proc/self/stat` says the main
/// thread's state `Z` and two threads. No allocation: a read into the
/// stack. False if the file cannot be read.
fn alone() -> bool {
    let mut buf = [0u8; 512];
    // SAFETY: a path literal, and a read into our buffer of its length;
    // the descriptor is closed before returning.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    main_gone_and_two_threads(&buf[..n])
}

/// [`alone`]'s reading of a `/proc/<pid>/stat` line: the fields after the
/// command (in parentheses, which may hold spaces and parentheses of its
/// own) are the state (field 3) and, seventeen later, the number of
/// threads (field 20).
fn main_gone_and_two_threads(stat: &[u8]) -> bool {
    let Some(end) = stat.iter().rposition(|&c| c == b')') else {
        return false;
    };
    let mut fields = stat[end + 1..]
        .split(|&c| c == b' ')
        .filter(|f| !f.is_empty());
    let state = fields.next();
    let threads = fields.nth(16);
    state == Some(b"Z".as_slice()) && threads == Some(b"2".as_slice())
}

/// How long to sleep before the next look: `period`, or less if a heap's
/// timed sub-page purge falls due sooner (`next`, ms, 0 for none: a pass
/// that a step's time bound cut short goes on as soon as its duty cycle
/// allows, see `heap::window`), but never under [`MIN_PERIOD_MS`].
fn until_next_look(period: u64, next: u64) -> u64 {
    if next == 0 {
        return period;
    }
    next.saturating_sub(os::now_ms())
        .clamp(MIN_PERIOD_MS, period.max(MIN_PERIOD_MS))
}

/// One look at every heap and the process-wide caches, at `now` with a
/// purge delay of `delay` (both in microseconds, of the precise clock).
/// Returns the earliest deadline of a heap's timed sub-page purge still to
/// come (ms, 0 if none).
fn tick(now: u64, delay: u64) -> u64 {
    // First, before the pool's lock and the others: the order the fork
    // handlers take them in.
    let _purging = PURGING.lock();
    let mut next = 0;
    thread::for_each_slot(|slot| {
        // SAFETY: slots are never unmapped; their handshake words, our
        // notes and the counters are only used through shared references,
        // and the heap only through the handshake (and its atomic
        // deadline).
        unsafe {
            let h = addr_of_mut!((*slot).heap);
            look_at(
                &*addr_of!((*slot).handshake),
                &*addr_of!((*slot).seen_epoch),
                &*addr_of!((*slot).seen_at),
                &*addr_of!((*slot).counters),
                h,
                now,
                delay,
            );
            // Deadlines already past (a heap nudged, whose thread has yet
            // to run its step and set the next) are left to the regular
            // looks: a heap whose thread never allocates again would have
            // the purger wake at its shortest period forever.
            let at = Heap::sub_purge_deadline(h);
            if at > os::now_ms() && (next == 0 || at < next) {
                next = at;
            }
        }
    });
    crate::large_cache::purge_if_due();
    crate::large::purge_sampled_if_due();
    thread::retire_parked_if_due();
    crate::segment::trim_free_segments();
    next
}

/// Purges heap `h` (with its handshake `hs`, our notes `seen_epoch` and
/// `seen_at`, and its counters `k`) if it is idle, has free memory
/// resident, and either its own timed purge is due (the deadline its last
/// slow path with free memory set, which its next slow path would act on)
/// or we have seen it idle for a purge delay. `now`, `delay` and `seen_at`
/// are in microseconds.
///
/// The heap's own deadline counts from when its free memory appeared, so a
/// thread that frees for a while and stops is purged a delay after its
/// frees began rather than a delay after we first saw it idle; our
/// sighting covers a heap with no deadline set.
fn look_at(
    hs: &Handshake,
    seen_epoch: &AtomicUsize,
    seen_at: &AtomicUsize,
    k: &HeapCounters,
    h: *mut Heap,
    now: u64,
    delay: u64,
) {
    let Some(epoch) = hs.idle_epoch() else {
        return;
    };
    if seen_epoch.load(Ordering::Relaxed) != epoch {
        // Busy since the last look: idle from now, at the earliest.
        seen_epoch.store(epoch, Ordering::Relaxed);
        seen_at.store(now as usize, Ordering::Relaxed);
    }
    let seen_idle = (seen_at.load(Ordering::Relaxed) as u64).saturating_add(delay) <= now;
    let now_ms = os::now_ms();
    // SAFETY: `h` is a slot's heap.
    let nudge = unsafe { Heap::sub_purge_maybe_due(h, now_ms) };
    // Taken without free pages resident if its sub-page purge may be due
    // (see `heap::nudge`).
    if (k.dirty_bytes.get() == 0 && !nudge) || !hs.try_purge(epoch) {
        return;
    }
    // SAFETY: the handshake gives us the heap until `purged`: its thread is
    // outside its slow paths and waits at their start, and its fast paths
    // touch only pages in use, which a purge does not (nor reading its
    // deadlines), and the `direct` slots, which a nudge writes atomically.
    unsafe {
        if k.dirty_bytes.get() != 0 && (seen_idle || (*h).timed_purge_due(now_ms)) {
            (*h).purge_idle();
        }
        if nudge {
            Heap::nudge(h, now_ms);
        }
    }
    hs.purged();
}

/// Sleeps `ms` milliseconds (a plain system call: no allocation).
fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads our timespec; an interruption only shortens
    // the sleep.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// Registers the fork handlers once per process (a child inherits them).
/// Registered after `thread`'s (made with the first heap), so glibc runs
/// this prepare handler before theirs: [`PURGING`] is taken before the
/// pool's lock and the others, the order the purger takes them in.
fn register_fork_handlers() {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    if DONE.swap(1, Ordering::Relaxed) == 0 {
        // A failure (ENOMEM) leaves a fork during a purge as unsafe as before.
        crate::os::at_fork(prepare, parent, child);
    }
}

extern "C" fn prepare() {
    // Held across the fork: no heap is taken by the purger then, and no
    // statistics report is half written.
    core::mem::forget(PURGING.lock());
    core::mem::forget(report::WRITING.lock());
}

extern "C" fn parent() {
    // SAFETY: `prepare` took the locks in this thread and leaked the guards.
    unsafe {
        report::WRITING.force_unlock();
        PURGING.force_unlock();
    }
}

/// In a forked child: no purger thread runs there (the parent's stays in
/// the parent); the child's first slow path starts one if the option is on.
extern "C" fn child() {
    // SAFETY: as in `parent`.
    unsafe {
        report::WRITING.force_unlock();
        PURGING.force_unlock();
    }
    if STATE.load(Ordering::Relaxed) == RUNNING {
        STATE.store(NONE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::main_gone_and_two_threads;

    #[test]
    fn a_zombie_main_thread_and_two_threads_is_alone() {
        let line = |state: &str, threads: &str| {
            format!(
                "4242 (a (b) c) {state} 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 {threads} 0 \
                 5 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
            )
        };
        assert!(main_gone_and_two_threads(line("Z", "2").as_bytes()));
        // The main thread still runs, or more threads do.
        assert!(!main_gone_and_two_threads(line("S", "2").as_bytes()));
        assert!(!main_gone_and_two_threads(line("Z", "3").as_bytes()));
        assert!(!main_gone_and_two_threads(line("Z", "23").as_bytes()));
        // Cut short or garbled.
        assert!(!main_gone_and_two_threads(b"4242 (a) Z 1 2"));
        assert!(!main_gone_and_two_threads(b"4242 a Z"));
        assert!(!main_gone_and_two_threads(b""));
    }
}
