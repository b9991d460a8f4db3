//! `SEGALLOC_SHOW_STATS=1` makes the process print its statistics table to
//! stderr at exit; without it nothing is printed. The test runs this same
//! binary as a child (the `child` test, which only works under the marker
//! variable) and reads what it wrote.

use std::process::Command;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const MARKER: &str = "SEGALLOC_STATS_EXIT_CHILD";

#[test]
fn child() {
    if std::env::var_os(MARKER).is_none() {
        return;
    }
    // Hold a few known blocks at exit, so the table has rows to show.
    let v: Vec<Vec<u8>> = (0..100).map(|i| vec![1; 200 + i]).collect();
    std::mem::forget(v);
}

fn run_child(show: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--test-threads", "1"])
        .env(MARKER, "1");
    match show {
        Some(v) => cmd.env("SEGALLOC_SHOW_STATS", v),
        None => cmd.env_remove("SEGALLOC_SHOW_STATS"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn exit_printer_follows_the_environment() {
    let shown = run_child(Some("1"));
    assert!(
        shown.contains("segalloc: requested"),
        "no table in:\n{shown}"
    );
    assert!(shown.contains("internal fragmentation"), "{shown}");
    // The 100 vectors of 200-299 bytes live at exit show up in their classes.
    assert!(shown.contains("    block      live"), "{shown}");
    assert!(
        !run_child(None).contains("segalloc:"),
        "printed without being asked"
    );
    assert!(
        !run_child(Some("0")).contains("segalloc:"),
        "printed for SEGALLOC_SHOW_STATS=0"
    );
}
