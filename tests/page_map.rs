//! The page map (`segalloc::page_map`, `SEGALLOC_PAGE_MAP`): its SVG has one
//! row per segment, one cell per page with the page's class and occupancy
//! in its title, and is well-formed; at exit it is written where the
//! variable says. Each case runs in a child process of this binary (the
//! `child_*` tests, inert without the marker variable), so no other test's
//! allocations land in the classes checked, and must finish in a minute.

mod common;

use common::{cell_titles, check_xml};
use std::alloc::{alloc, dealloc, Layout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

const MARKER: &str = "SEGALLOC_PAGE_MAP_CHILD";
/// Two classes nothing else in the child uses.
const SIZES: [usize; 2] = [2900, 21000];
const LARGE: usize = (5 << 20) + 12345;

fn is_child() -> bool {
    std::env::var_os(MARKER).is_some()
}

/// Runs the child test `name` with `env`, killing it after a minute.
fn run_child(name: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--test-threads", "1", "--nocapture"])
        .env(MARKER, "1")
        .env_remove("SEGALLOC_PAGE_MAP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{name} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// Runs the child test `name` and asserts it ran and passed.
fn child_passes(name: &str) {
    let out = run_child(name, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page_map");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// `(used, reserved)` from a page cell's title.
fn occupancy(title: &str) -> (u32, u32) {
    let (_, rest) = title.split_once(" B blocks, ").expect("block size");
    let (frac, _) = rest.split_once(" used").expect("used");
    let (u, r) = frac.split_once('/').unwrap();
    (u.parse().unwrap(), r.parse().unwrap())
}

/// The page cells of block size `bs`.
fn cells_of(svg: &str, bs: usize) -> Vec<&str> {
    let key = format!(": {bs} B blocks, ");
    cell_titles(svg, "page")
        .into_iter()
        .filter(|t| t.contains(&key))
        .collect()
}

/// Slices covered by each small segment row (cells are `span * 12 - 1`
/// pixels wide).
fn slices_per_row(svg: &str) -> Vec<usize> {
    svg.split("<g class=\"segment small\">")
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</g>").unwrap()];
            row.match_indices(" width=\"")
                .map(|(i, m)| {
                    let w = &row[i + m.len()..];
                    let w: usize = w[..w.find('"').unwrap()].parse().unwrap();
                    (w + 1) / 12
                })
                .sum()
        })
        .collect()
}

#[test]
fn child_pattern() {
    if !is_child() {
        return;
    }
    // Every block in a page, the cells count them.
    common::no_sampling();
    let mut expect = Vec::new();
    let mut held = Vec::new();
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size.
        let first = unsafe { alloc(layout) };
        assert!(!first.is_null());
        // SAFETY: a live block of ours.
        let bs = unsafe { segalloc::usable_size(first) };
        let svg = segalloc::page_map().to_svg();
        let cells = cells_of(&svg, bs);
        assert_eq!(cells.len(), 1, "one page of {bs} B blocks: {cells:?}");
        let (used, reserved) = occupancy(cells[0]);
        assert_eq!(used, 1, "{}", cells[0]);
        // Fill the page, then free every other block: half of it live.
        let mut blocks = vec![first];
        for _ in 1..reserved {
            // SAFETY: as above.
            blocks.push(unsafe { alloc(layout) });
        }
        for (i, &b) in blocks.iter().enumerate() {
            if i % 2 == 1 {
                // SAFETY: allocated above with `layout`, freed once.
                unsafe { dealloc(b, layout) };
            }
        }
        let live = reserved - reserved / 2;
        expect.push((bs, live, reserved));
        held.push(blocks);
    }
    let large: Vec<Vec<u8>> = (0..3).map(|_| Vec::with_capacity(LARGE)).collect();

    let map = segalloc::page_map();
    let svg = map.to_svg();
    std::fs::write(scratch("pattern.svg"), &svg).unwrap();
    check_xml(&svg);
    let s = map.stats();
    // Rows: one per segment, none left out; every small row covers its 64
    // slices exactly once.
    assert_eq!(map.rows(), map.segments());
    assert!(!svg.contains("capped"));
    assert_eq!(svg.matches("<g class=\"segment ").count(), map.rows());
    let small = slices_per_row(&svg);
    assert!(small.len() >= s.segments_obtained - s.segments_returned);
    assert!(small.iter().all(|&n| n == 64), "slices per row {small:?}");
    assert_eq!(
        svg.matches("<rect class=\"header\"").count(),
        small.len(),
        "one header cell per small row"
    );
    // The two pages, half live, with their figures and colour.
    for (bs, live, reserved) in expect {
        let cells = cells_of(&svg, bs);
        assert_eq!(cells.len(), 1, "{cells:?}");
        let want = format!(
            "{bs} B blocks, {live}/{reserved} used ({}%), {} B of {} B",
            live * 100 / reserved,
            live as usize * bs,
            reserved as usize * bs
        );
        assert!(cells[0].contains(&want), "{} lacks {want}", cells[0]);
        let hue = 120 * live / reserved;
        let at = svg.find(cells[0]).unwrap();
        let rect = &svg[svg[..at].rfind("<rect").unwrap()..at];
        assert!(
            rect.contains(&format!("fill=\"hsl({hue},75%,45%)\"")),
            "{rect}"
        );
    }
    // The three large blocks, each a row of its own.
    let big = cell_titles(&svg, "large");
    let want = format!("requested {LARGE} B");
    assert_eq!(
        big.iter().filter(|t| t.contains(&want)).count(),
        3,
        "{big:?}"
    );
    // The header line carries the totals of the snapshot.
    assert!(svg.contains("internal fragmentation"));
    drop(large);
    drop(held);
}

#[test]
fn pattern_rows_cells_and_titles() {
    child_passes("child_pattern");
}

#[test]
fn child_capped() {
    if !is_child() {
        return;
    }
    // More large blocks than rows: each is a segment of its own (mapped,
    // never touched past its header page).
    let n = segalloc::pagemap::MAX_ROWS + 20;
    let blocks: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(2 << 20)).collect();
    let map = segalloc::page_map();
    assert_eq!(map.rows(), segalloc::pagemap::MAX_ROWS);
    assert!(map.segments() >= n);
    let svg = map.to_svg();
    check_xml(&svg);
    assert_eq!(svg.matches("<g class=\"segment ").count(), map.rows());
    let note = format!(
        "capped: the first {} drawn, {} left out",
        map.rows(),
        map.segments() - map.rows()
    );
    assert!(svg.contains(&note), "no note {note:?}");
    drop(blocks);
}

#[test]
fn capped_at_max_rows() {
    child_passes("child_capped");
}

#[test]
fn child_exit() {
    if !is_child() {
        return;
    }
    // Every block in a page, the cells count them.
    common::no_sampling();
    // Held at exit, half of a page's worth of blocks.
    let v: Vec<Vec<u8>> = (0..40).map(|_| vec![1; SIZES[0]]).collect();
    std::mem::forget(v);
}

#[test]
fn written_at_exit_when_asked() {
    let v = vec![0u8; SIZES[0]];
    // SAFETY: a live block of the global allocator, segalloc.
    let bs = unsafe { segalloc::usable_size(v.as_ptr()) };
    drop(v);
    let path = scratch("exit.svg");
    let out = run_child(
        "child_exit",
        &[("SEGALLOC_PAGE_MAP", path.to_str().unwrap())],
    );
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(&path).expect("page map written at exit");
    check_xml(&svg);
    let cells = cells_of(&svg, bs);
    assert!(!cells.is_empty(), "no page of {bs} B blocks");
    assert!(cells.iter().map(|t| occupancy(t).0).sum::<u32>() >= 40);

    // Not asked: nothing written.
    let path = scratch("not-asked.svg");
    let out = run_child("child_exit", &[]);
    assert!(out.status.success());
    assert!(!path.exists());

    // A path that cannot be written: one line, and the exit status stands.
    let out = run_child(
        "child_exit",
        &[("SEGALLOC_PAGE_MAP", "/nonexistent/dir/x.svg")],
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not write the page map"), "{err}");
}

#[test]
fn child_concurrent() {
    if !is_child() {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    // Four threads allocate, free each other's blocks through a channel,
    // and come and go (their segments are abandoned and reclaimed), while
    // the main thread takes maps.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, tx, rx) = (stop.clone(), tx.clone(), rx.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<Vec<u8>> = (0..500)
                        .map(|k| vec![t as u8; 16 + (i * 31 + k * 7) % 3000])
                        .collect();
                    let _ = tx.send(batch);
                    if let Ok(theirs) = rx.lock().unwrap().try_recv() {
                        drop(theirs);
                    }
                    i += 1;
                    if i % 50 == 0 {
                        std::thread::spawn(|| drop(vec![vec![0u8; 100]; 1000]))
                            .join()
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_millis(1500);
    let mut maps = 0;
    while Instant::now() < end {
        let map = segalloc::page_map();
        let svg = map.to_svg();
        check_xml(&svg);
        assert_eq!(svg.matches("<g class=\"segment ").count(), map.rows());
        assert!(slices_per_row(&svg).iter().all(|&n| n == 64));
        for t in cell_titles(&svg, "page") {
            let (u, r) = occupancy(t);
            assert!(u <= r, "{t}");
        }
        maps += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(maps >= 10, "only {maps} maps");
}

/// Maps taken while other threads allocate, free each other's blocks and
/// exit: every one well-formed and consistent, no fault.
#[test]
fn maps_while_threads_run() {
    child_passes("child_concurrent");
}
