//! The page map: a picture of where fragmentation sits. [`page_map`] takes a
//! statistics snapshot and reads every segment segalloc holds; the
//! [`PageMap`] draws as an SVG with one row per segment and one cell per
//! page, as wide as the page's span in slices and coloured by its
//! occupancy (live blocks over the blocks it holds: green full, through
//! yellow, to red empty), free slices grey, large blocks purple. Hovering
//! over a cell shows its size class, block size, and live and reserved
//! blocks and bytes, so a person sees at a glance which classes strand
//! memory in sparse pages.
//!
//! # How it reads other threads' segments
//! Segments are found through the segment registry (`segment::registry`,
//! one atomic entry of two bytes per 4 MiB of address space, of which only the pages ever
//! written are read), not through the heaps' lists, which only their owners
//! may walk. Each segment's header (its slice bitmap and page descriptors)
//! is copied whole into memory mapped from the OS with `process_vm_readv`
//! on the process itself: the owner keeps writing undisturbed, the kernel
//! does the reading (no data race in Rust's memory model), and a segment
//! unmapped in the meantime is skipped rather than faulting. Where a
//! seccomp filter refuses that call, the copy falls back to volatile loads,
//! which do race with the owner's writes and would fault on a segment
//! unmapped during the copy (only wholly free segments past the segment
//! cache are unmapped). The copy is then read at leisure, and figures that
//! do not hang together (a torn copy) are drawn as a "changing" slice.
//!
//! So the map is exact for the calling thread's pages and for segments of
//! exited threads. For a page of another running thread it shows that
//! page's `used` count at the instant of the copy: blocks handed out less
//! those its owner took back, so blocks other threads freed that the owner
//! has not collected yet (or that wait in a freeing thread's batch) still
//! count as live; and a page being made or freed during the copy may show
//! as a one-slice cell marked as changing. The totals in the header come
//! from [`stats`](crate::stats), taken just before the walk, with the
//! precision documented there.
//!
//! Gathering does not allocate through segalloc: rows go to a buffer
//! mapped from the OS (at most [`MAX_ROWS`] segments, the rest only
//! counted, and the picture says so). Rendering writes through
//! `core::fmt`, into a `String` ([`PageMap::to_svg`]), any
//! [`std::io::Write`] ([`PageMap::write_svg`]), or, at exit when
//! `SEGALLOC_PAGE_MAP=path.svg` is set, straight to the file from a stack
//! buffer.
//!
//! ```
//! # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
//! let v: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([0; 100])).collect();
//! let map = segalloc::page_map();
//! assert!(map.segments() >= 1);
//! let svg = map.to_svg();
//! assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
//! # drop(v);
//! ```

use crate::os;
use crate::page::{self, Page};
use crate::segment::{registry, Segment, KIND_CACHED, MAX_SPAN, SEGMENT_SHIFT, SLICES};
use crate::size_class::NUM_CLASSES;
use crate::stats::{Bytes, FdOut, Stats};
use core::fmt;
use core::mem::size_of;
use core::ptr;

/// The most segments drawn (4 MiB each: 8 GiB of small blocks, or as many
/// large blocks); further ones are counted and the picture says how many
/// were left out.
pub const MAX_ROWS: usize = 2000;

/// What a cell shows.
const FREE: u8 = 0;
const PAGE: u8 = 1;
/// Slice 0: the segment header.
const HEADER: u8 = 2;
/// Neither free nor a consistent page: a guard slice (feature `secure`), or
/// a page being made or freed while the header was copied.
const OTHER: u8 = 3;

/// Row kinds.
const SMALL: u8 = 1;
const LARGE: u8 = 2;
const CACHED: u8 = 3;

/// One cell: a page, a run of free slices, the header or an unknown slice.
#[derive(Clone, Copy)]
#[repr(C)]
struct Cell {
    first: u8,
    span: u8,
    what: u8,
    class: u8,
    used: u32,
    reserved: u32,
    block_size: u32,
    current: bool,
}

/// One segment. All zeroes is a valid (empty) row: rows live in zeroed
/// memory mapped from the OS.
#[repr(C)]
struct Row {
    base: usize,
    kind: u8,
    abandoned: bool,
    cells: u8,
    /// Large rows: mapped, usable and requested bytes.
    map_size: usize,
    usable: usize,
    requested: usize,
    cell: [Cell; SLICES],
}

/// Bytes of a small segment's header copied per segment.
const HEADER_COPY: usize = size_of::<Segment>().next_multiple_of(8);
/// Bytes of a large segment's header copied: the prefix up to `split`.
const LARGE_COPY: usize = 64;

/// A snapshot of every segment's pages, to draw as an SVG. See the module
/// docs for how exact it is. Made by [`page_map`]; owns memory mapped from
/// the OS, given back on drop.
pub struct PageMap {
    /// Scratch: one header copy, then the rows. Null if mapping failed.
    mem: *mut u8,
    len: usize,
    rows: usize,
    segments: usize,
    stats: Stats,
}

// SAFETY: the mapping is owned by the value alone and only read through
// `&self`.
unsafe impl Send for PageMap {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for PageMap {}

impl Drop for PageMap {
    fn drop(&mut self) {
        if !self.mem.is_null() {
            // SAFETY: our mapping of `len` bytes, no longer used.
            unsafe { os::unmap_scratch(self.mem, self.len) };
        }
    }
}

/// Takes a [`PageMap`] of the whole process: the statistics, then every
/// segment's pages. Callable from any thread at any time; does not allocate
/// through segalloc (the rows go to memory mapped from the OS). If even
/// that mapping fails, the map has no rows and its picture says so.
///
/// ```
/// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
/// let map = segalloc::page_map();
/// let mut out = Vec::new();
/// map.write_svg(&mut out).unwrap();
/// assert!(out.ends_with(b"</svg>\n"));
/// ```
pub fn page_map() -> PageMap {
    let stats = crate::stats();
    let len = (HEADER_COPY + MAX_ROWS * size_of::<Row>()).next_multiple_of(os::OS_PAGE);
    let mem = os::map_scratch(len);
    let mut map = PageMap {
        mem,
        len,
        rows: 0,
        segments: 0,
        stats,
    };
    if mem.is_null() {
        return map;
    }
    let copy = mem;
    // SAFETY: the rows start after the header copy, 8-aligned, inside the
    // zeroed mapping (a zeroed Row is valid).
    let rows = unsafe { mem.add(HEADER_COPY).cast::<Row>() };
    registry::for_each(|i, kind| {
        let base = (i << SEGMENT_SHIFT) as *const u8;
        let want = if kind == registry::SMALL {
            HEADER_COPY
        } else {
            LARGE_COPY
        };
        // SAFETY: `copy` holds HEADER_COPY bytes; `base` is a segment the
        // registry recorded, so segalloc mapped it (if it was unmapped
        // since, the copy fails and the segment is skipped).
        if !unsafe { os::copy_own(copy, base, want) } {
            return;
        }
        map.segments += 1;
        if map.rows == MAX_ROWS {
            return;
        }
        // SAFETY: row `rows` lies inside the mapping (below MAX_ROWS) and
        // nothing else refers to it; the copy is ours alone.
        let ok = unsafe {
            let row = &mut *rows.add(map.rows);
            row.base = base as usize;
            let seg = copy.cast::<Segment>();
            if kind == registry::SMALL {
                fill_small(row, seg)
            } else {
                fill_large(row, seg)
            }
        };
        if ok {
            map.rows += 1;
        } else {
            map.segments -= 1;
        }
    });
    map
}

/// Fills `row` from the copied header of a small segment.
///
/// # Safety
/// `seg` is a private copy of a small segment's header (any bytes).
unsafe fn fill_small(row: &mut Row, seg: *const Segment) -> bool {
    // SAFETY: per the contract the copy is readable; these fields are
    // integers (any bit pattern is valid) and `owner` is an atomic.
    let (kind, free, owner) = unsafe {
        (
            (*seg).kind,
            (*seg).free_slices,
            (*seg).owner.load(core::sync::atomic::Ordering::Relaxed),
        )
    };
    if kind != crate::segment::KIND_SMALL {
        return false;
    }
    row.kind = SMALL;
    row.abandoned = owner == 0;
    let mut n = 0;
    let mut push = |c: Cell| {
        row.cell[n] = c;
        n += 1;
    };
    let blank = Cell {
        first: 0,
        span: 1,
        what: HEADER,
        class: 0,
        used: 0,
        reserved: 0,
        block_size: 0,
        current: false,
    };
    push(blank);
    let mut i = 1;
    while i < SLICES {
        if free & (1 << i) != 0 {
            let mut j = i;
            while j < SLICES && free & (1 << j) != 0 {
                j += 1;
            }
            push(Cell {
                first: i as u8,
                span: (j - i) as u8,
                what: FREE,
                ..blank
            });
            i = j;
            continue;
        }
        // SAFETY: `pages[i]` of the private copy.
        let v = unsafe { page::view(ptr::addr_of!((*seg).pages[i]).cast::<Page>()) };
        let span = v.span as usize;
        if v.in_use
            && (1..=MAX_SPAN).contains(&span)
            && i + span <= SLICES
            && (v.class as usize) < NUM_CLASSES
            && v.reserved > 0
            && v.used <= v.reserved
            && v.block_size > 0
            && v.block_size <= u32::MAX as usize
        {
            push(Cell {
                first: i as u8,
                span: span as u8,
                what: PAGE,
                class: v.class,
                used: v.used,
                reserved: v.reserved,
                block_size: v.block_size as u32,
                current: v.current,
            });
            i += span;
        } else {
            push(Cell {
                first: i as u8,
                what: OTHER,
                ..blank
            });
            i += 1;
        }
    }
    row.cells = n as u8;
    true
}

/// Fills `row` from the copied header prefix of a large segment.
///
/// # Safety
/// `seg` is a private copy of at least [`LARGE_COPY`] bytes (any bytes).
unsafe fn fill_large(row: &mut Row, seg: *const Segment) -> bool {
    // SAFETY: per the contract these prefix fields (integers) were copied.
    let (kind, map, off, req) = unsafe {
        (
            (*seg).kind,
            (*seg).map_size,
            (*seg).block_offset,
            (*seg).requested,
        )
    };
    row.kind = match kind {
        crate::segment::KIND_HUGE => LARGE,
        KIND_CACHED => CACHED,
        _ => return false,
    };
    row.map_size = map;
    row.usable = map.saturating_sub(off);
    row.requested = req;
    true
}

// --- drawing ---

/// Pixels per slice, per row, and for the label column.
const CELL_W: usize = 12;
const ROW_H: usize = 14;
const LABEL_W: usize = 150;
const TOP: usize = 106;
const WIDTH: usize = LABEL_W + SLICES * CELL_W + 80;

/// The fill of a page with `used` of `reserved` blocks live: hue 120
/// (green) when full down to 0 (red) when empty.
fn fill(used: u32, reserved: u32) -> u32 {
    (120 * used as u64 / reserved.max(1) as u64) as u32
}

impl PageMap {
    /// Segments found (small and large; those past [`MAX_ROWS`] included).
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Segments drawn: at most [`MAX_ROWS`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The statistics snapshot taken with the map (drawn in its header).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the pages of small blocks drawn hold, from each page's count
    /// at the instant of its copy (see the module docs), which does not lag
    /// as the counters of other running threads do: pages, bytes of the
    /// blocks they hold, and bytes of their live blocks.
    pub(crate) fn pages_now(&self) -> (usize, usize, usize) {
        let (mut pages, mut held, mut live) = (0, 0, 0);
        for i in 0..self.rows {
            let r = self.row(i);
            for c in &r.cell[..r.cells as usize] {
                if r.kind == SMALL && c.what == PAGE {
                    pages += 1;
                    held += c.reserved as usize * c.block_size as usize;
                    live += c.used as usize * c.block_size as usize;
                }
            }
        }
        (pages, held, live)
    }

    fn row(&self, i: usize) -> &Row {
        debug_assert!(i < self.rows);
        // SAFETY: rows below `self.rows` were filled in the mapping, which
        // lives as long as `self`.
        unsafe { &*self.mem.add(HEADER_COPY).cast::<Row>().add(i) }
    }

    /// Draws the map as an SVG document into `out`, without allocating.
    fn render(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        let height = TOP + self.rows * ROW_H + 10;
        let s = &self.stats;
        writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
        writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
             font-family=\"monospace\" font-size=\"11\">"
        )?;
        writeln!(
            out,
            "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"white\"/>"
        )?;
        write!(
            out,
            "<text x=\"4\" y=\"14\">segalloc page map: {} segments",
            self.segments
        )?;
        if self.mem.is_null() {
            write!(out, " (no memory for the map: none drawn)")?;
        } else if self.rows < self.segments {
            write!(
                out,
                " (capped: the first {} drawn, {} left out)",
                self.rows,
                self.segments - self.rows
            )?;
        }
        writeln!(
            out,
            "; one row per segment (4 MiB, {SLICES} slices of 64 KiB), one cell per page</text>"
        )?;
        writeln!(
            out,
            "<text x=\"4\" y=\"28\">live {} (requested), allocated {}, committed {}, resident {}</text>",
            Bytes(s.requested),
            Bytes(s.allocated),
            Bytes(s.committed),
            Bytes(s.resident),
        )?;
        writeln!(
            out,
            "<text x=\"4\" y=\"42\">internal fragmentation {} ({:.1}% of allocated), \
             external {} ({:.1}% of committed: {} free in pages, {} in free pages)</text>",
            Bytes(s.internal_fragmentation()),
            100.0 * s.internal_fragmentation_ratio(),
            Bytes(s.external_fragmentation()),
            100.0 * s.external_fragmentation_ratio(),
            Bytes(s.free_in_pages),
            Bytes(s.free_pages),
        )?;
        // Legend.
        writeln!(out, "<g class=\"legend\">")?;
        let mut x = 4;
        for pct in [100u32, 75, 50, 25, 0] {
            writeln!(
                out,
                "<rect x=\"{x}\" y=\"52\" width=\"{CELL_W}\" height=\"{}\" fill=\"hsl({},75%,45%)\"/>\
                 <text x=\"{}\" y=\"62\">{pct}%</text>",
                ROW_H - 2,
                fill(pct, 100),
                x + CELL_W + 3,
            )?;
            x += CELL_W + 40;
        }
        for (colour, what) in [
            ("#d9d9d9", "free slices"),
            ("#505050", "segment header"),
            ("#7b4fa8", "large block"),
            ("#cdb8e6", "cached large block"),
            ("#000000", "guard / changing"),
        ] {
            writeln!(
                out,
                "<rect x=\"{x}\" y=\"52\" width=\"{CELL_W}\" height=\"{}\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"62\">{what}</text>",
                ROW_H - 2,
                x + CELL_W + 3,
            )?;
            x += CELL_W + 10 + 7 * what.len();
        }
        writeln!(out, "</g>")?;
        writeln!(
            out,
            "<text x=\"4\" y=\"80\">colour: a page's live blocks over the blocks it holds; \
             hover over a cell for its class and figures; large blocks fill their row, \
             not to scale</text>"
        )?;
        self.render_stranding(out)?;
        for r in 0..self.rows {
            self.render_row(out, r)?;
        }
        writeln!(out, "</svg>")
    }

    /// One line naming the classes whose pages hold the most free bytes
    /// (reserved less live blocks, times the block size) in the rows drawn.
    fn render_stranding(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        // Per class: free bytes in its pages, pages, block size.
        let mut by = [(0usize, 0usize, 0usize); NUM_CLASSES];
        for r in 0..self.rows {
            let row = self.row(r);
            for c in &row.cell[..row.cells as usize] {
                if c.what == PAGE {
                    let e = &mut by[c.class as usize];
                    e.0 += (c.reserved - c.used) as usize * c.block_size as usize;
                    e.1 += 1;
                    e.2 = c.block_size as usize;
                }
            }
        }
        write!(out, "<text x=\"4\" y=\"94\">free in pages, most first:")?;
        for k in 0..3 {
            let Some((c, e)) = by
                .iter()
                .enumerate()
                .filter(|(_, e)| e.0 > 0)
                .max_by_key(|(_, e)| e.0)
            else {
                if k == 0 {
                    write!(out, " none")?;
                }
                break;
            };
            let (free, pages, bs) = *e;
            write!(
                out,
                "{} class {c} ({bs} B): {} in {pages} page{}",
                if k == 0 { "" } else { ";" },
                Bytes(free),
                if pages == 1 { "" } else { "s" }
            )?;
            by[c].0 = 0;
        }
        writeln!(out, "</text>")
    }

    fn render_row(&self, out: &mut dyn fmt::Write, r: usize) -> fmt::Result {
        let row = self.row(r);
        let y = TOP + r * ROW_H;
        let h = ROW_H - 2;
        let (kind, owner) = match row.kind {
            SMALL if row.abandoned => ("small", "abandoned (its thread exited)"),
            SMALL => ("small", "owned by a heap"),
            LARGE => ("large", "a large block"),
            _ => ("cached", "a freed large block kept for reuse"),
        };
        writeln!(
            out,
            "<g class=\"segment {kind}\"><title>segment {:#x}: {owner}</title>\
             <text x=\"4\" y=\"{}\">{:#x}</text>",
            row.base,
            y + h - 2,
            row.base,
        )?;
        if row.kind != SMALL {
            let colour = if row.kind == LARGE {
                "#7b4fa8"
            } else {
                "#cdb8e6"
            };
            writeln!(
                out,
                "<rect class=\"{kind}\" x=\"{LABEL_W}\" y=\"{y}\" width=\"{}\" height=\"{h}\" \
                 fill=\"{colour}\"><title>{}: usable {} B, requested {} B, mapped {} B</title></rect>",
                SLICES * CELL_W,
                if row.kind == LARGE {
                    "large block"
                } else {
                    "cached large block"
                },
                row.usable,
                row.requested,
                row.map_size
            )?;
            return writeln!(out, "</g>");
        }
        for c in &row.cell[..row.cells as usize] {
            let x = LABEL_W + c.first as usize * CELL_W;
            let w = c.span as usize * CELL_W - 1;
            write!(
                out,
                "<rect class=\"{}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"",
                match c.what {
                    PAGE => "page",
                    FREE => "free",
                    HEADER => "header",
                    _ => "other",
                }
            )?;
            match c.what {
                PAGE => write!(out, "hsl({},75%,45%)", fill(c.used, c.reserved))?,
                FREE => out.write_str("#d9d9d9")?,
                HEADER => out.write_str("#505050")?,
                _ => out.write_str("#000000")?,
            }
            out.write_str("\"><title>")?;
            match c.what {
                PAGE => {
                    let bs = c.block_size as usize;
                    write!(
                        out,
                        "class {}: {} B blocks, {}/{} used ({}%), {} B of {} B, {} slice{}{}",
                        c.class,
                        bs,
                        c.used,
                        c.reserved,
                        c.used as u64 * 100 / c.reserved as u64,
                        c.used as usize * bs,
                        c.reserved as usize * bs,
                        c.span,
                        if c.span == 1 { "" } else { "s" },
                        if c.current {
                            ", serving new blocks"
                        } else {
                            ""
                        }
                    )?;
                }
                FREE => write!(out, "{} free slices", c.span)?,
                HEADER => out.write_str("segment header")?,
                _ => out.write_str("guard slice, or a page changing while read")?,
            }
            writeln!(out, "</title></rect>")?;
        }
        writeln!(out, "</g>")
    }

    /// The SVG document as a `String`.
    ///
    /// ```
    /// # #[global_allocator] static G: segalloc::SegAlloc = segalloc::SegAlloc;
    /// let svg = segalloc::page_map().to_svg();
    /// assert!(svg.contains("segalloc page map"));
    /// ```
    pub fn to_svg(&self) -> String {
        let mut s = String::with_capacity(4096 + self.rows * 4096);
        let _ = self.render(&mut s);
        s
    }

    /// Writes the SVG document to `out` (wrap a file in a `BufWriter`).
    pub fn write_svg(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        struct Adapter<'a, W: std::io::Write> {
            w: &'a mut W,
            err: Option<std::io::Error>,
        }
        impl<W: std::io::Write> fmt::Write for Adapter<'_, W> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.w.write_all(s.as_bytes()).map_err(|e| {
                    self.err = Some(e);
                    fmt::Error
                })
            }
        }
        let mut a = Adapter { w: out, err: None };
        match self.render(&mut a) {
            Ok(()) => Ok(()),
            Err(_) => Err(a
                .err
                .unwrap_or_else(|| std::io::Error::other("formatting failed"))),
        }
    }
}

/// At exit: when `SEGALLOC_PAGE_MAP` names a file, writes the page map
/// there (created or truncated), without allocating through segalloc. A
/// file that cannot be written gets one line on stderr.
pub(crate) fn write_at_exit() {
    // SAFETY: getenv with a NUL-terminated name; the result is only passed
    // on to open while the environment is unchanged.
    let path = unsafe { libc::getenv(c"SEGALLOC_PAGE_MAP".as_ptr()) };
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    if path.is_null() || unsafe { *path } == 0 {
        return;
    }
    let map = page_map();
    // SAFETY: opening a NUL-terminated path; the mode is passed as the
    // variadic argument open expects with O_CREAT.
    let fd = unsafe {
        libc::open(
            path,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    let mut ok = fd >= 0;
    if ok {
        let mut out = FdOut::new(fd);
        ok = map.render(&mut out).is_ok();
        ok &= out.flush();
        // SAFETY: closing the descriptor we opened.
        ok &= unsafe { libc::close(fd) } == 0;
    }
    if !ok {
        let msg = b"segalloc: could not write the page map to SEGALLOC_PAGE_MAP\n";
        // SAFETY: writing a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    }
}
