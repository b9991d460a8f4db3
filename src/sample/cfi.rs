//! A frame's unwind rule read from the unwind tables (`.eh_frame`), for
//! [`super::dwarf`]'s cache misses (x86-64 Linux with glibc 2.35 or later).
//!
//! The object holding a code address, and its `.eh_frame_hdr`, come from
//! glibc's `_dl_find_object`: it takes no lock, unlike `dl_iterate_phdr`,
//! whose loader lock may be held by the very thread being sampled (a
//! `malloc` called from inside `dlopen`), which would then deadlock. The
//! header's sorted table finds the FDE by binary search; its CIE's and its
//! own call-frame instructions are run up to the address, keeping only what
//! the walk needs: the CFA (a register plus an offset), the return
//! address's rule and `rbp`'s. Any other form (a CFA expression or a base
//! register other than `rsp`/`rbp`, `rbp` or the return address kept in a
//! register or by an expression, a signal frame, 64-bit DWARF, an unknown
//! instruction or pointer encoding) gives `None`, and the sample falls back
//! to the system unwinder. Rules of other registers are parsed and dropped.
//!
//! The tables are trusted as the system unwinder trusts them: every read
//! stays inside the object's mapped range as `_dl_find_object` reports it,
//! and every length and count is checked against that range, but the
//! contents are taken as the linker wrote them.

use super::dwarf::Rule;
use core::ffi::{c_int, c_void};

/// glibc's `struct dl_find_object` (`<dlfcn.h>`, glibc 2.35).
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *mut c_void,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

extern "C" {
    /// Lock-free lookup of the object holding an address (glibc 2.35).
    fn _dl_find_object(address: *mut c_void, result: *mut DlFindObject) -> c_int;
}

/// DWARF register numbers on x86-64.
const RBP: u64 = 6;
const RSP: u64 = 7;
const RA: u64 = 16;
/// Depth of `DW_CFA_remember_state` kept; deeper gives up.
const STATES: usize = 8;

/// Bounds-checked little-endian reads of an object's mapped range.
struct Reader {
    p: usize,
    end: usize,
}

impl Reader {
    /// A reader of the CIE or FDE whose length field is at `at` (records
    /// end before `hi`), past that field and bounded by the record's end,
    /// which is returned too; `None` for a terminator, a 64-bit record
    /// (`.eh_frame` has none) or one running past `hi`.
    fn record(at: usize, hi: usize) -> Option<(Reader, usize)> {
        let mut r = Reader { p: at, end: hi };
        let len = r.u32()?;
        if len == 0 || len == 0xffff_ffff {
            return None;
        }
        let end = r.p.checked_add(len as usize)?;
        if end > hi {
            return None;
        }
        r.end = end;
        Some((r, end))
    }

    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        if self.end.checked_sub(self.p)? < N {
            return None;
        }
        // SAFETY: `[p, p + N)` lies within the object's range (checked just
        // above; `end` never exceeds the range `_dl_find_object` gave), which
        // the loader mapped readable for as long as the object is loaded.
        let v = unsafe { core::ptr::read_unaligned(self.p as *const [u8; N]) };
        self.p += N;
        Some(v)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes()?))
    }
    fn uleb(&mut self) -> Option<u64> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(v);
            }
            if shift > 70 {
                return None;
            }
        }
    }
    fn sleb(&mut self) -> Option<i64> {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Some(v);
            }
            if shift > 70 {
                return None;
            }
        }
    }
    /// A pointer in encoding `enc` (`DW_EH_PE_*`): absolute or relative to
    /// its own address (`pcrel`), or to `data` (`datarel`); indirect and
    /// other applications give None.
    fn pointer(&mut self, enc: u8, data: usize) -> Option<usize> {
        if enc & 0x80 != 0 {
            return None;
        }
        let at = self.p;
        let v = match enc & 0x0f {
            0x00 | 0x04 | 0x0c => self.u64()? as usize,
            0x01 => self.uleb()? as usize,
            0x02 => self.u16()? as usize,
            0x03 => self.u32()? as usize,
            0x09 => self.sleb()? as usize,
            0x0a => self.u16()? as i16 as isize as usize,
            0x0b => self.u32()? as i32 as isize as usize,
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(v),
            0x10 => Some(at.wrapping_add(v)),
            0x30 => Some(data.wrapping_add(v)),
            _ => None,
        }
    }
}

/// Where a register's value in the caller is, as far as the walk cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// The same as in this frame.
    Same,
    /// Saved at CFA + this.
    At(i64),
    /// Undefined (for the return address: the outermost frame).
    Undefined,
    /// Anything else (in a register, by an expression, a value rule).
    Other,
}

/// The row of the CFI table the walk needs.
#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    /// The CFA is given by an expression.
    cfa_expr: bool,
    rbp: Reg,
    ra: Reg,
}

/// A CIE's fields the FDE's evaluation needs.
struct Cie {
    code_align: u64,
    data_align: i64,
    /// The FDE's pointer encoding (augmentation `R`).
    enc: u8,
    /// Whether the FDE has augmentation data (augmentation `z`).
    z: bool,
    /// The initial instructions, `[insns, end)`.
    insns: usize,
    end: usize,
}

/// The unwind rule of the frame executing at `pc` (a return address minus
/// one, or the capture's own address), or None if it has no FDE or its
/// rule is not of the simple forms (see the module docs). Never allocates,
/// takes no lock.
pub(super) fn rule_for(pc: usize) -> Option<Rule> {
    let mut obj = DlFindObject {
        flags: 0,
        map_start: core::ptr::null_mut(),
        map_end: core::ptr::null_mut(),
        link_map: core::ptr::null_mut(),
        eh_frame: core::ptr::null_mut(),
        reserved: [0; 7],
    };
    // SAFETY: `_dl_find_object` only writes the struct we pass (glibc's
    // layout, above); it reads the loader's lock-free object list.
    if unsafe { _dl_find_object(pc as *mut c_void, &mut obj) } != 0 {
        return None;
    }
    let (lo, hi) = (obj.map_start as usize, obj.map_end as usize);
    let hdr = obj.eh_frame as usize;
    if hdr < lo || hdr >= hi {
        return None;
    }
    let fde = find_fde(hdr, hi, pc)?;
    eval_fde(fde, lo, hi, pc)
}

/// The FDE whose range may hold `pc`, by binary search of the sorted table
/// of `.eh_frame_hdr` at `hdr` (the object's range ending at `hi`).
fn find_fde(hdr: usize, hi: usize, pc: usize) -> Option<usize> {
    let mut r = Reader { p: hdr, end: hi };
    let [version, ptr_enc, count_enc, table_enc] = r.bytes::<4>()?;
    // The table as every linker writes it: 4-byte offsets from `hdr`.
    if version != 1 || table_enc != 0x3b || count_enc == 0xff {
        return None;
    }
    r.pointer(ptr_enc, hdr)?;
    let count = r.pointer(count_enc, hdr)?;
    let table = r.p;
    if count == 0 || count > (hi - table) / 8 {
        return None;
    }
    let key = (pc as isize).wrapping_sub(hdr as isize);
    let entry = |i: usize| -> Option<(isize, usize)> {
        let mut e = Reader {
            p: table + 8 * i,
            end: hi,
        };
        let loc = e.u32()? as i32 as isize;
        let off = e.u32()? as i32 as isize;
        Some((loc, (hdr as isize).wrapping_add(off) as usize))
    };
    // The last entry whose start is at or below `pc`.
    let (mut a, mut b) = (0usize, count);
    while b - a > 1 {
        let m = a + (b - a) / 2;
        if entry(m)?.0 <= key {
            a = m;
        } else {
            b = m;
        }
    }
    let (loc, fde) = entry(a)?;
    (loc <= key).then_some(fde)
}

/// Parses the CIE at `at` (its length field) within `[lo, hi)`.
fn parse_cie(at: usize, lo: usize, hi: usize) -> Option<Cie> {
    if at < lo {
        return None;
    }
    let (mut r, end) = Reader::record(at, hi)?;
    if r.u32()? != 0 {
        return None;
    }
    let version = r.u8()?;
    // The augmentation string: only the letters z, R, P, L are understood
    // (S, a signal frame, and the rest give up).
    let aug = r.p;
    let mut z = false;
    loop {
        let c = r.u8()?;
        if c == 0 {
            break;
        }
        match (r.p - aug, c) {
            (1, b'z') => z = true,
            (_, b'R' | b'P' | b'L') if z => {}
            _ => return None,
        }
    }
    let code_align = r.uleb()?;
    let data_align = r.sleb()?;
    let ra = if version == 1 {
        u64::from(r.u8()?)
    } else {
        r.uleb()?
    };
    if ra != RA {
        return None;
    }
    let mut enc = 0u8;
    if z {
        let n = r.uleb()? as usize;
        let data_end = r.p.checked_add(n)?;
        let mut s = aug;
        loop {
            // SAFETY: `s` walks the augmentation string read above, within
            // the CIE.
            let c = unsafe { *(s as *const u8) };
            s += 1;
            match c {
                0 => break,
                b'R' => enc = r.u8()?,
                b'P' => {
                    let e = r.u8()?;
                    r.pointer(e & 0x7f, 0)?;
                }
                b'L' => {
                    r.u8()?;
                }
                _ => {}
            }
        }
        if data_end > end {
            return None;
        }
        r.p = data_end;
    }
    Some(Cie {
        code_align,
        data_align,
        enc,
        z,
        insns: r.p,
        end,
    })
}

/// Evaluates the FDE at `fde` up to `pc` (within the object's `[lo, hi)`).
fn eval_fde(fde: usize, lo: usize, hi: usize, pc: usize) -> Option<Rule> {
    let (mut r, end) = Reader::record(fde, hi)?;
    let id_at = r.p;
    let cie_off = r.u32()? as usize;
    let cie = parse_cie(id_at.checked_sub(cie_off)?, lo, hi)?;
    let begin = r.pointer(cie.enc, 0)?;
    // The range: the same format, no application.
    let range = r.pointer(cie.enc & 0x0f, 0)?;
    if pc < begin || pc - begin >= range {
        return None;
    }
    if cie.z {
        let n = r.uleb()? as usize;
        r.p = r.p.checked_add(n)?;
        if r.p > end {
            return None;
        }
    }
    let mut row = Row {
        cfa_reg: RSP,
        cfa_off: 0,
        cfa_expr: false,
        rbp: Reg::Same,
        ra: Reg::Undefined,
    };
    let mut stack = [row; STATES];
    let mut depth = 0;
    let init = row;
    run(
        &mut Reader {
            p: cie.insns,
            end: cie.end,
        },
        &cie,
        &mut row,
        &init,
        (0, usize::MAX),
        &mut stack,
        &mut depth,
    )?;
    let init = row;
    run(
        &mut r,
        &cie,
        &mut row,
        &init,
        (begin, pc),
        &mut stack,
        &mut depth,
    )?;
    to_rule(&row)
}

/// Runs call-frame instructions from `r` on `row` while the location
/// (`at.0`, starting at the FDE's start) stays at or below `at.1`. `init`
/// is the row after the CIE's instructions (for `DW_CFA_restore`). None on
/// an instruction it does not know, or an unsupported `set_loc`.
fn run(
    r: &mut Reader,
    cie: &Cie,
    row: &mut Row,
    init: &Row,
    at: (usize, usize),
    stack: &mut [Row; STATES],
    depth: &mut usize,
) -> Option<()> {
    let (mut loc, pc) = at;
    let set = |row: &mut Row, reg: u64, rule: Reg| match reg {
        RBP => row.rbp = rule,
        RA => row.ra = rule,
        _ => {}
    };
    let restore = |row: &mut Row, reg: u64| match reg {
        RBP => row.rbp = init.rbp,
        RA => row.ra = init.ra,
        _ => {}
    };
    let mut advance = |delta: u64| -> Option<bool> {
        loc = loc.checked_add(delta.checked_mul(cie.code_align)? as usize)?;
        Some(loc > pc)
    };
    while r.p < r.end {
        let op = r.u8()?;
        let low = u64::from(op & 0x3f);
        match op >> 6 {
            1 => {
                if advance(low)? {
                    return Some(());
                }
                continue;
            }
            2 => {
                let off = r.uleb()? as i64;
                set(row, low, Reg::At(off.wrapping_mul(cie.data_align)));
                continue;
            }
            3 => {
                restore(row, low);
                continue;
            }
            _ => {}
        }
        match op {
            0x00 => {}
            0x02..=0x04 => {
                let d = match op {
                    0x02 => u64::from(r.u8()?),
                    0x03 => u64::from(r.u16()?),
                    _ => u64::from(r.u32()?),
                };
                if advance(d)? {
                    return Some(());
                }
            }
            0x05 => {
                let reg = r.uleb()?;
                let off = r.uleb()? as i64;
                set(row, reg, Reg::At(off.wrapping_mul(cie.data_align)));
            }
            0x06 => {
                let reg = r.uleb()?;
                restore(row, reg);
            }
            0x07 => {
                let reg = r.uleb()?;
                set(row, reg, Reg::Undefined);
            }
            0x08 => {
                let reg = r.uleb()?;
                set(row, reg, Reg::Same);
            }
            0x09 => {
                let reg = r.uleb()?;
                r.uleb()?;
                set(row, reg, Reg::Other);
            }
            0x0a => {
                if *depth == STATES {
                    return None;
                }
                stack[*depth] = *row;
                *depth += 1;
            }
            0x0b => {
                if *depth == 0 {
                    return None;
                }
                *depth -= 1;
                *row = stack[*depth];
            }
            0x0c => {
                row.cfa_reg = r.uleb()?;
                row.cfa_off = r.uleb()? as i64;
                row.cfa_expr = false;
            }
            0x0d => {
                row.cfa_reg = r.uleb()?;
                row.cfa_expr = false;
            }
            0x0e => row.cfa_off = r.uleb()? as i64,
            0x0f => {
                let n = r.uleb()? as usize;
                r.p = r.p.checked_add(n)?;
                row.cfa_expr = true;
            }
            0x10 | 0x16 => {
                let reg = r.uleb()?;
                let n = r.uleb()? as usize;
                r.p = r.p.checked_add(n)?;
                set(row, reg, Reg::Other);
            }
            0x11 => {
                let reg = r.uleb()?;
                let off = r.sleb()?;
                set(row, reg, Reg::At(off.wrapping_mul(cie.data_align)));
            }
            0x12 => {
                row.cfa_reg = r.uleb()?;
                row.cfa_off = r.sleb()?.wrapping_mul(cie.data_align);
                row.cfa_expr = false;
            }
            0x13 => row.cfa_off = r.sleb()?.wrapping_mul(cie.data_align),
            0x14 | 0x15 => {
                let reg = r.uleb()?;
                if op == 0x14 {
                    r.uleb()?;
                } else {
                    r.sleb()?;
                }
                set(row, reg, Reg::Other);
            }
            // DW_CFA_GNU_args_size: only for landing pads.
            0x2e => {
                r.uleb()?;
            }
            // DW_CFA_GNU_negative_offset_extended.
            0x2f => {
                let reg = r.uleb()?;
                let off = r.uleb()? as i64;
                set(
                    row,
                    reg,
                    Reg::At(off.wrapping_mul(cie.data_align).wrapping_neg()),
                );
            }
            _ => return None,
        }
    }
    Some(())
}

/// The compact rule of `row`, if it is of the forms the walk takes.
fn to_rule(row: &Row) -> Option<Rule> {
    if row.cfa_expr || (row.cfa_reg != RSP && row.cfa_reg != RBP) {
        return None;
    }
    match row.ra {
        Reg::Undefined => return Some(Rule::End),
        Reg::At(-8) => {}
        _ => return None,
    }
    let cfa = u32::try_from(row.cfa_off).ok()?;
    let rbp_slot = match row.rbp {
        Reg::Same => 0,
        Reg::At(o) if o <= -16 && o % 8 == 0 => u32::try_from(-o / 8).ok()?,
        _ => return None,
    };
    Rule::frame(row.cfa_reg == RBP, cfa, rbp_slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// LEB128 and pointer decoding, and the refusal of reads past the end.
    #[test]
    fn reader_decodes_and_stays_in_bounds() {
        let b: [u8; 8] = [0xe5, 0x8e, 0x26, 0x7f, 0x80, 0x7f, 0xfc, 0xff];
        let p = b.as_ptr() as usize;
        let mut r = Reader { p, end: p + 8 };
        assert_eq!(r.uleb(), Some(624_485));
        assert_eq!(r.sleb(), Some(-1));
        assert_eq!(r.sleb(), Some(-128));
        assert_eq!(r.u16(), Some(0xfffc));
        assert_eq!(r.u8(), None);
        let mut r = Reader { p, end: p + 3 };
        assert_eq!(r.u32(), None);
        let mut r = Reader { p, end: p + 8 };
        // pcrel sdata4: relative to the field's own address.
        let v = r.pointer(0x1b, 0).unwrap();
        assert_eq!(v, p.wrapping_add(0x7f26_8ee5));
        // indirect: refused.
        assert_eq!(Reader { p, end: p + 8 }.pointer(0x9b, 0), None);
    }

    /// This function's own rule is found, and is a frame's (not the end).
    #[test]
    fn own_rule_is_found() {
        let pc = own_rule_is_found as fn() as usize + 1;
        let r = rule_for(pc);
        assert!(matches!(r, Some(Rule::Frame { .. })), "{r:?}");
        // No object holds address 8.
        assert_eq!(rule_for(8), None);
    }
}
