//! An option the program sets before segalloc's first mapping stays set:
//! the environment, read at that mapping, does not undo it. The child (this
//! binary again, with the variable set to another value) sets the option in
//! a constructor, which runs before the Rust runtime allocates anything;
//! it must finish within a timeout.

use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const CHILD: &str = "SEGALLOC_OPTION_SET_EARLY_CHILD";

/// What the constructor saw: segalloc's mapped bytes when it ran.
static MAPPED_AT_START: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

/// Runs before `main` and before the Rust runtime's first allocation.
extern "C" fn set_early() {
    // SAFETY: a NUL-terminated name; getenv neither allocates nor keeps it.
    if unsafe { libc::getenv(c"SEGALLOC_OPTION_SET_EARLY_CHILD".as_ptr()) }.is_null() {
        return;
    }
    MAPPED_AT_START.store(
        segalloc::stats().mapped,
        std::sync::atomic::Ordering::Relaxed,
    );
    segalloc::set_option("purge_delay_ms", "300").unwrap();
}

#[used]
#[link_section = ".init_array"]
static SET_EARLY: extern "C" fn() = set_early;

fn purge_delay() -> usize {
    segalloc::runtime_options()
        .find(|o| o.name == "purge_delay_ms")
        .expect("the option exists")
        .get()
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let mapped_before = MAPPED_AT_START.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            mapped_before, 0,
            "segalloc mapped memory before the constructor"
        );
        drop(std::hint::black_box(vec![1u8; 100]));
        let after = purge_delay();
        println!("mapped before: {mapped_before}; purge_delay_ms after: {after}");
        std::process::exit(if after == 300 { 0 } else { 1 });
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env(CHILD, "1")
        .env("SEGALLOC_PURGE_DELAY_MS", "250")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the child hung");
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(
        status.success(),
        "the variable undid the program's setting: {out}"
    );
    println!("option_set_early: 1 passed ({})", out.trim());
}
