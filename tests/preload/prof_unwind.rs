//! A Rust program built with frame pointers throughout (by tests/profile.rs,
//! against the library built the same way) that sets the option
//! `prof_unwind` to its first argument through `segalloc::set_option`,
//! samples 8 MiB of allocations from `leak_site` and prints the first line
//! of the leak report, which says how many stacks each unwinder took.

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

#[inline(never)]
fn leak_site(out: &mut Vec<Vec<u8>>) {
    for i in 0..8192 {
        out.push(std::hint::black_box(vec![i as u8; 1000]));
    }
}

fn main() {
    let unwind = std::env::args().nth(1).expect("usage: prof_unwind fp|dwarf");
    segalloc::set_option("prof_unwind", &unwind).expect("prof_unwind");
    segalloc::profile::start(64 << 10);
    let mut kept = Vec::new();
    leak_site(&mut kept);
    let mut report = Vec::new();
    segalloc::profile::snapshot().write_report(&mut report).unwrap();
    let report = String::from_utf8(report).unwrap();
    println!("{}", report.lines().next().unwrap());
    assert!(report.contains("leak_site"), "{report}");
    drop(kept);
}
