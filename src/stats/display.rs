//! How a [`Stats`] snapshot reads: the compact table that `Display` prints
//! (and `SEGALLOC_SHOW_STATS` at exit), formatted without allocating, so
//! that it can be written from inside the allocator.

use super::{ratio, stats, Stats};
use core::fmt;

/// Writes a byte count compactly: 512 B, 12.3 KiB, 4.0 MiB, 1.5 GiB.
pub(crate) struct Bytes(pub(crate) usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let w = f.width().unwrap_or(0);
        let mut buf = FixedBuf::new();
        let _ = if self.0 < 1024 {
            fmt::write(&mut buf, format_args!("{} B", self.0))
        } else if b < 1024.0 * 1024.0 {
            fmt::write(&mut buf, format_args!("{:.1} KiB", b / 1024.0))
        } else if b < 1024.0 * 1024.0 * 1024.0 {
            fmt::write(&mut buf, format_args!("{:.1} MiB", b / (1024.0 * 1024.0)))
        } else {
            fmt::write(
                &mut buf,
                format_args!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0)),
            )
        };
        write!(f, "{:>w$}", buf.as_str(), w = w)
    }
}

/// A byte count that may read negative (a class's figures while other
/// threads run), formatted as [`Bytes`] with its sign.
pub(crate) struct SignedBytes(pub(crate) isize);

impl fmt::Display for SignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 0 {
            return fmt::Display::fmt(&Bytes(self.0 as usize), f);
        }
        let mut buf = FixedBuf::new();
        let _ = fmt::write(&mut buf, format_args!("-{}", Bytes(self.0.unsigned_abs())));
        write!(f, "{:>w$}", buf.as_str(), w = f.width().unwrap_or(0))
    }
}

/// A small stack buffer for formatting without allocating.
pub(crate) struct FixedBuf {
    buf: [u8; 64],
    len: usize,
}

impl FixedBuf {
    pub(crate) const fn new() -> Self {
        FixedBuf {
            buf: [0; 64],
            len: 0,
        }
    }
    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

const BAR: usize = 20;

impl fmt::Display for Stats {
    /// A compact table: totals, the two fragmentation ratios, then one line per
    /// size class in use with a bar of its pages' use (`#` live, `.` free).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "segalloc: requested {} allocated {} committed {} resident {} mapped {} metadata {}",
            Bytes(self.requested),
            Bytes(self.allocated),
            Bytes(self.committed),
            Bytes(self.resident),
            Bytes(self.mapped),
            Bytes(self.metadata)
        )?;
        writeln!(
            f,
            "  internal fragmentation {} ({:.1}% of allocated); external {} ({:.1}% of committed): \
             {} free in pages ({} more purged), {} in free pages ({} of them cached large blocks), \
             {} pending remote frees",
            Bytes(self.internal_fragmentation()),
            100.0 * self.internal_fragmentation_ratio(),
            Bytes(self.external_fragmentation()),
            100.0 * self.external_fragmentation_ratio(),
            Bytes(self.free_in_pages),
            Bytes(self.purged_in_pages),
            Bytes(self.free_pages),
            Bytes(self.large_cached),
            Bytes(self.remote_pending)
        )?;
        writeln!(
            f,
            "  {} allocs, {} frees ({} cross-thread), reallocs {} in place / {} moved; \
             pages +{} -{}, segments +{} -{} ({} abandoned); large {} ({})",
            self.allocations,
            self.frees,
            self.cross_thread_frees,
            self.reallocs_in_place,
            self.reallocs_moved,
            self.pages_obtained,
            self.pages_returned,
            self.segments_obtained,
            self.segments_returned,
            self.segments_abandoned,
            self.large_objects,
            Bytes(self.large_bytes)
        )?;
        if self.sampled_objects != 0 {
            writeln!(
                f,
                "  heap profiler: {} sampled blocks ({}) in mappings of their own",
                self.sampled_objects,
                Bytes(self.sampled_bytes)
            )?;
        }
        writeln!(
            f,
            "  os calls: mmap {} munmap {} madvise {} ({} purges of {}) mremap {} brk {}; limit {} (hit {} times)",
            self.os_calls.mmap,
            self.os_calls.munmap,
            self.os_calls.madvise,
            self.os_calls.purges,
            Bytes(self.os_calls.purged),
            self.os_calls.mremap,
            self.os_calls.brk,
            Bytes(crate::options::LIMIT.get()),
            self.os_calls.limit_hits
        )?;
        if self.mesh.pages_meshed != 0 || self.mesh.os_pages_meshed != 0 {
            writeln!(
                f,
                "  meshing: {} pages and {} OS pages merged so far; {} merged pages and {} shared OS pages give back {} now",
                self.mesh.pages_meshed,
                self.mesh.os_pages_meshed,
                self.mesh.groups,
                self.mesh.shared_os_pages,
                Bytes(self.mesh.bytes_released)
            )?;
        }
        writeln!(
            f,
            "  {:>7} {:>9} {:>10} {:>6} {:>9} {:>6}  use",
            "block", "live", "requested", "pages", "free", "waste"
        )?;
        for row in self
            .classes
            .iter()
            .filter(|r| r.pages != 0 || r.live_blocks != 0)
        {
            // While other threads run, a class can read negative (their
            // frees are counted at once, their allocations when their
            // pages are settled: see `Stats`); it is shown so, not wrapped.
            let live = row.live_blocks as isize;
            let cap = row.live_blocks.wrapping_add(row.free_blocks);
            let filled = if live <= 0 || cap as isize <= 0 {
                0
            } else {
                (row.live_blocks.min(cap) * BAR).div_ceil(cap)
            };
            let live_bytes = row.live_blocks.wrapping_mul(row.block_size);
            let waste = if live <= 0 || (row.requested as isize) < 0 {
                0.0
            } else {
                100.0 * ratio(live_bytes.saturating_sub(row.requested), live_bytes)
            };
            write!(
                f,
                "  {:>7} {:>9} {:>10} {:>6} {:>9} {:>5.1}%  ",
                row.block_size,
                live,
                SignedBytes(row.requested as isize),
                row.pages as isize,
                row.free_blocks as isize,
                waste
            )?;
            for i in 0..BAR {
                f.write_str(if i < filled { "#" } else { "." })?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

/// A file written through a stack buffer, without allocating: the page
/// map's SVG, the statistics file's reports.
pub(crate) struct FdOut {
    fd: libc::c_int,
    buf: [u8; 8192],
    len: usize,
    failed: bool,
}

impl FdOut {
    /// A writer to the open descriptor `fd`.
    pub(crate) const fn new(fd: libc::c_int) -> Self {
        FdOut {
            fd,
            buf: [0; 8192],
            len: 0,
            failed: false,
        }
    }

    /// Writes what the buffer holds; returns whether every write so far
    /// succeeded.
    pub(crate) fn flush(&mut self) -> bool {
        let mut b = &self.buf[..self.len];
        while !b.is_empty() && !self.failed {
            // SAFETY: writing a valid buffer to our open descriptor.
            let n = unsafe { libc::write(self.fd, b.as_ptr().cast(), b.len()) };
            if n <= 0 {
                self.failed = true;
            } else {
                b = &b[n as usize..];
            }
        }
        self.len = 0;
        !self.failed
    }
}

impl fmt::Write for FdOut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        if self.failed {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Writes `s`'s table to the file descriptor `fd` without allocating.
#[cfg(feature = "override")]
pub(crate) fn write_fd(fd: libc::c_int, s: &Stats) {
    let mut out = FdOut::new(fd);
    let _ = fmt::write(&mut out, format_args!("{s}"));
    out.flush();
}

/// At exit, prints the statistics and the options in force when the option
/// `show_stats` is on (`SEGALLOC_SHOW_STATS=1`). Called by the exit hook
/// that `thread` registers.
pub(crate) fn print_at_exit() {
    if crate::options::SHOW_STATS.get() == 0 {
        return;
    }
    let mut out = FdOut::new(2);
    let _ = write_table(&mut out);
    out.flush();
}

/// Writes the table of a statistics snapshot taken now, and a line of the
/// options in force, to `out`, without allocating.
pub(crate) fn write_table(out: &mut impl fmt::Write) -> fmt::Result {
    write!(out, "{}options:", stats())?;
    for o in crate::options::runtime_options() {
        match o.word() {
            Some(w) => write!(out, " {}={w}", o.name)?,
            None => write!(out, " {}={}", o.name, o.get())?,
        }
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ClassStats;

    #[test]
    fn a_class_that_reads_negative_prints_so() {
        let mut s = Stats::zero();
        s.classes[2] = ClassStats {
            block_size: 48,
            live_blocks: (-6isize) as usize,
            requested: (-288isize) as usize,
            pages: 3,
            free_blocks: 4101,
        };
        s.classes[3] = ClassStats {
            block_size: 64,
            live_blocks: 3,
            requested: 150,
            pages: 1,
            free_blocks: 1021,
        };
        let text = std::format!("{s}");
        let row = |b: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(b))
                .unwrap()
                .to_owned()
        };
        let neg = row("48 ");
        assert!(neg.contains(" -6 ") && neg.contains("-288 B"), "{neg}");
        assert!(!neg.contains("GiB") && !neg.contains('#'), "{neg}");
        let pos = row("64 ");
        assert!(
            pos.contains(" 3 ") && pos.contains("150 B") && pos.contains('#'),
            "{pos}"
        );
        assert_eq!(std::format!("{:>9}", SignedBytes(-2048)), " -2.0 KiB");
    }
}
