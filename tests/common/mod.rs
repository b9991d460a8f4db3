//! Helpers shared by the integration tests: RSS measurement from
//! `/proc/self/statm`, a tiny deterministic PRNG (no external crates), and
//! id-derived byte patterns used to verify that block contents survive.
//!
//! Every test binary includes this with `mod common;`; not every binary uses
//! every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::time::{Duration, Instant};

/// Page size, read from the aux vector (`AT_PAGESZ`) so no libc call is
/// needed; falls back to 4 KiB.
pub fn page_size() -> usize {
    const AT_PAGESZ: u64 = 6;
    if let Ok(auxv) = std::fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap());
            let val = u64::from_ne_bytes(pair[8..].try_into().unwrap());
            if key == AT_PAGESZ && val.is_power_of_two() {
                return val as usize;
            }
        }
    }
    4096
}

/// Resident set size in bytes: field 2 of `/proc/self/statm` times the page size.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let resident: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("statm has a resident field")
        .parse()
        .expect("statm resident field is a number");
    resident * page_size()
}

/// Proportional set size in bytes (`Pss:` of `/proc/self/smaps_rollup`): a
/// page mapped at two addresses counts once, where RSS counts it at each.
pub fn pss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").expect("read smaps_rollup");
    let kib: usize = s
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("smaps_rollup has a Pss line");
    kib * 1024
}

/// Virtual size in bytes: field 1 of `/proc/self/statm` times the page size.
pub fn vm_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let size: usize = statm
        .split_whitespace()
        .next()
        .expect("statm has a size field")
        .parse()
        .expect("statm size field is a number");
    size * page_size()
}

pub const MIB: usize = 1024 * 1024;

/// Bytes as MiB with one decimal, for readable failure messages.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// Signed difference in MiB, for readable failure messages.
pub fn mib_delta(after: usize, before: usize) -> String {
    format!("{:+.1} MiB", (after as f64 - before as f64) / MIB as f64)
}

/// SplitMix64: small, fast, deterministic; good enough to drive workloads.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }
}

/// Byte `i` of the pattern for block `id`. Mixing the id in means a block
/// that got another block's bytes (overlap, wrong copy) is detected.
#[inline]
pub fn pattern_byte(id: u64, i: usize) -> u8 {
    let seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    (seed as u8) ^ (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8).wrapping_mul(7)
}

/// Fill `len` bytes at `p` with the pattern of `id`.
///
/// # Safety
/// `p..p+len` must be writable.
pub unsafe fn fill(p: *mut u8, len: usize, id: u64) {
    let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
    for (i, b) in s.iter_mut().enumerate() {
        *b = pattern_byte(id, i);
    }
}

/// Index of the first byte in `p..p+len` that does not match the pattern of
/// `id`, or `None` if all match.
///
/// # Safety
/// `p..p+len` must be readable.
pub unsafe fn first_mismatch(p: *const u8, len: usize, id: u64) -> Option<usize> {
    let s = unsafe { std::slice::from_raw_parts(p, len) };
    s.iter()
        .enumerate()
        .position(|(i, &b)| b != pattern_byte(id, i))
}

/// Panic with a useful message if `p..p+len` does not hold the pattern of `id`.
///
/// # Safety
/// `p..p+len` must be readable.
pub unsafe fn check(p: *const u8, len: usize, id: u64, what: &str) {
    if let Some(i) = unsafe { first_mismatch(p, len, id) } {
        let got = unsafe { *p.add(i) };
        panic!(
            "{what}: block id {id} at {p:p} (len {len}) corrupted at offset {i}: \
             got {got:#04x}, expected {:#04x}",
            pattern_byte(id, i)
        );
    }
}

/// Assert the alignment guarantees of the spec for a block returned for `layout`:
/// the layout's own alignment, plus 16 when the layout asks for >= 16 or the
/// size is a multiple of 16. (Sizes 65..127 with align <= 8 may legitimately
/// get 8-aligned 72/88/104/120-byte blocks, so nothing more is asserted.)
pub fn assert_aligned(p: *const u8, layout: Layout, what: &str) {
    let addr = p as usize;
    assert_eq!(
        addr % layout.align(),
        0,
        "{what}: {p:p} not aligned to {} for {layout:?}",
        layout.align()
    );
    if layout.align() >= 16 || layout.size() % 16 == 0 {
        assert_eq!(addr % 16, 0, "{what}: {p:p} not 16-aligned for {layout:?}");
    }
}

/// An owned raw block from the global allocator, filled with the pattern of
/// its id, checked before every realloc and when dropped (freed).
pub struct Blk {
    p: *mut u8,
    layout: Layout,
    id: u64,
}

// SAFETY: a Blk exclusively owns its allocation.
unsafe impl Send for Blk {}

impl Blk {
    pub fn new(size: usize, align: usize, id: u64) -> Blk {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc(layout) };
        assert!(!p.is_null(), "alloc {layout:?} failed");
        assert_aligned(p, layout, "alloc");
        // SAFETY: `p` is a live block of ours.
        assert!(unsafe { segalloc::usable_size(p) } >= size);
        // SAFETY: `size` bytes at `p` are ours.
        unsafe { fill(p, size, id) };
        Blk { p, layout, id }
    }

    pub fn verify(&self, what: &str) {
        // SAFETY: the block is live and `size` bytes long.
        unsafe { check(self.p, self.layout.size(), self.id, what) };
    }

    /// Resizes, checking the kept prefix, then refills the whole block.
    pub fn resize(&mut self, new_size: usize) {
        self.verify("before realloc");
        // SAFETY: a live block of `layout`; non-zero `new_size`.
        let q = unsafe { realloc(self.p, self.layout, new_size) };
        assert!(!q.is_null(), "realloc to {new_size} failed");
        let kept = self.layout.size().min(new_size);
        // SAFETY: `q` holds at least `kept` bytes copied from the old block.
        unsafe { check(q, kept, self.id, "after realloc") };
        self.p = q;
        self.layout = Layout::from_size_align(new_size, self.layout.align()).unwrap();
        assert_aligned(q, self.layout, "realloc");
        // SAFETY: `new_size` bytes at `q` are ours.
        unsafe { fill(q, new_size, self.id) };
    }
}

impl Drop for Blk {
    fn drop(&mut self) {
        self.verify("free");
        // SAFETY: a live block of `layout`, freed once.
        unsafe { dealloc(self.p, self.layout) };
    }
}

/// `committed = allocated + metadata + external` to the byte, and the
/// parts of the external figure add up.
pub fn identity_holds(s: &segalloc::Stats) {
    assert_eq!(
        s.committed,
        s.allocated + s.metadata + s.external_fragmentation(),
        "committed {} != allocated {} + metadata {} + external {}",
        s.committed,
        s.allocated,
        s.metadata,
        s.external_fragmentation()
    );
    assert_eq!(s.external_fragmentation(), s.free_in_pages + s.free_pages);
    assert!(s.remote_pending <= s.free_in_pages);
    assert!(s.allocated >= s.requested);
}

/// Checks that `svg` is well-formed XML as far as the page map needs: an
/// XML declaration, every element closed in order (or self-closed), quoted
/// attributes, and no bare `<` or `&` in text. Returns the number of
/// elements; panics naming the first fault.
pub fn check_xml(svg: &str) -> usize {
    let body = svg
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .expect("starts with the XML declaration");
    let mut stack: Vec<&str> = Vec::new();
    let mut elements = 0;
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(
            !text.contains('>')
                && text.split('&').skip(1).all(|t| t.starts_with("amp;")
                    || t.starts_with("lt;")
                    || t.starts_with("gt;")
                    || t.starts_with("quot;")),
            "bad text {text:?}"
        );
        let close = rest[open..].find('>').expect("tag closed") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside tag {tag:?}");
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in {tag:?}"
        );
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name, "</{name}> closes <{top}>");
        } else {
            let name = tag.split_whitespace().next().expect("element name");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric()),
                "name {name:?}"
            );
            assert!(!stack.is_empty() || elements == 0, "second root <{name}>");
            elements += 1;
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    assert!(elements > 0, "no elements");
    elements
}

/// The `<title>` texts of the page map's cells of class `kind` (`page`,
/// `free`, `header`, `other`, `large`, `cached`), in order.
pub fn cell_titles<'a>(svg: &'a str, kind: &str) -> Vec<&'a str> {
    let start = format!("<rect class=\"{kind}\"");
    svg.match_indices(&start)
        .map(|(i, _)| {
            let t = &svg[i..];
            let a = t.find("<title>").expect("cell has a title") + "<title>".len();
            let b = t.find("</title>").expect("title closed");
            &t[a..b]
        })
        .collect()
}

/// Waits for child `pid` for at most 30 s (then kills it and fails);
/// returns its wait status.
pub fn wait_child(pid: libc::pid_t) -> libc::c_int {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return status;
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("child {pid} timed out");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` in a child with stderr into a pipe; returns its wait status and
/// what it wrote.
pub fn in_child(f: impl FnOnce()) -> (libc::c_int, String) {
    let mut fds = [0; 2];
    // SAFETY: a plain pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: one thread.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: stderr onto the pipe; no core files.
        unsafe {
            libc::dup2(fds[1], 2);
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
        }
        f();
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: our pipe's write end, the child's now.
    unsafe { libc::close(fds[1]) };
    let status = wait_child(pid);
    let mut out = vec![0u8; 4096];
    // SAFETY: reads into our buffer.
    let n = unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), out.len()) };
    // SAFETY: our pipe's read end.
    unsafe { libc::close(fds[0]) };
    out.truncate(n.max(0) as usize);
    (status, String::from_utf8_lossy(&out).into_owned())
}

/// Spawns a thread that writes `round << 32 | i` into the first word of
/// each block `kept[i]`, and into its last word too when `bs` (the block
/// size) is given, round after round until `stop`; it returns its rounds.
/// The blocks must stay live, their other words left to the caller.
pub fn spawn_writer(
    kept: std::sync::Arc<Vec<usize>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    bs: Option<usize>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut round = 0u64;
        loop {
            round += 1;
            for (i, &p) in kept.iter().enumerate() {
                let v = round << 32 | i as u64;
                // SAFETY: live blocks whose first (and last) words the
                // caller leaves to this thread.
                unsafe {
                    (p as *mut u64).write_volatile(v);
                    if let Some(bs) = bs {
                        (p as *mut u64).add(bs / 8 - 1).write_volatile(v);
                    }
                }
            }
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return round;
            }
        }
    })
}

/// Runs this test binary's `child` test with `var` set to `case` and the
/// variables `env`, killed after 60 s; returns its stderr, after checking
/// that it passed.
pub fn run_case(var: &str, case: &str, env: &[(&str, &str)]) -> String {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(var, case)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    // Stderr is drained on another thread, so a chatty child cannot block.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut pipe, &mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("{case}: hung (killed after 60 s)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap(),
    };
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{case}: {:?}\n{err}", out.status);
    err
}

/// The line of /proc/self/smaps starting with `field` in the entry of the
/// mapping holding `addr`.
pub fn smaps_field(addr: usize, field: &str) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = (a..b).contains(&addr);
                continue;
            }
        }
        if inside && line.starts_with(field) {
            return line.to_string();
        }
    }
    panic!("no mapping holds {addr:#x}, or it has no {field}");
}

/// Whether the mapping holding `addr` is marked for transparent huge pages
/// (`hg` in its `VmFlags` in /proc/self/smaps).
pub fn huge_page_advised(addr: usize) -> bool {
    smaps_field(addr, "VmFlags:")
        .split_whitespace()
        .any(|f| f == "hg")
}

/// The kernel's setting for transparent huge pages.
pub const THP_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Whether the kernel gives transparent huge pages (its setting exists and
/// is not `never`): where it does not, the option `thp` does nothing.
pub fn kernel_thp_on() -> bool {
    std::fs::read_to_string(THP_SETTING).is_ok_and(|s| !s.contains("[never]"))
}

/// Stops the heap profiler (feature `profiling`; nothing without it), for
/// a test about pages, page faults or committed memory run with sampling
/// forced on (`SEGALLOC_PROF=1`, as CI's sampling steps do): a sampled
/// small block lives in a mapping of its own, outside every page and
/// every class's row of the statistics, with its own page faults and a
/// header page of overhead. Blocks sampled before stay sampled.
pub fn no_sampling() {
    #[cfg(feature = "profiling")]
    segalloc::profile::stop();
}
