//! Size classes: which block size serves a request.
//!
//! Requests up to [`MAX_SMALL`] bytes are rounded up to one of [`NUM_CLASSES`]
//! block sizes:
//! - 16, 32, 48, 64: the 16-byte granules;
//! - above 64 bytes, eight classes per doubling: within `(2^k, 2^(k+1)]` the
//!   sizes `2^k + j * 2^(k-3)` for `j = 1..=8`.
//!
//! So a request of 64 bytes or more wastes less than one ninth of its block
//! (under 12.5%), and [`class_of`] is O(1): a compare, a `lzcnt`, shifts.
//!
//! Alignment: every block is aligned to the largest power of two dividing its
//! size, up to the page alignment. All classes are multiples of 16 except
//! 72, 88, 104 and 120, which exist so that requests between 64 and 128 bytes
//! keep waste under 12.5%; [`class_for`] gives them only to requests whose
//! alignment is 8 or less, so every request for 16-byte alignment (and every
//! C `malloc`) gets a block that is a multiple of 16 bytes.

use static_assertions::const_assert;

/// Number of small size classes.
pub const NUM_CLASSES: usize = 116;
/// The largest request served from size-classed pages; larger ones are mapped
/// on their own.
pub const MAX_SMALL: usize = 1024 * 1024;
/// Every block is at least this aligned when the request asks for 16 or more,
/// and every class but the four documented above is a multiple of it.
pub const MIN_ALIGN: usize = 16;

/// Block size of class `c`, for `c < NUM_CLASSES`.
pub const fn class_size(c: usize) -> usize {
    if c < 4 {
        (c + 1) * 16
    } else {
        let k = 6 + (c - 4) / 8; // the doubling: (2^k, 2^(k+1)]
        let j = (c - 4) % 8;
        (9 + j) << (k - 3)
    }
}

const fn build_table() -> [u32; NUM_CLASSES] {
    let mut t = [0u32; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        t[c] = class_size(c) as u32;
        c += 1;
    }
    t
}

/// Block size of every class, as a table for the hot paths.
pub static CLASS_SIZES: [u32; NUM_CLASSES] = build_table();
const TABLE: [u32; NUM_CLASSES] = build_table();

// The table's shape, checked at compile time.
const_assert!(TABLE[0] == 16);
const_assert!(TABLE[3] == 64);
const_assert!(TABLE[4] == 72);
const_assert!(TABLE[11] == 128);
const_assert!(TABLE[12] == 144);
const_assert!(TABLE[91] == 128 * 1024);
const_assert!(TABLE[NUM_CLASSES - 1] as usize == MAX_SMALL);
const_assert!(MAX_SMALL.is_power_of_two());

const fn strictly_increasing(t: &[u32; NUM_CLASSES]) -> bool {
    let mut c = 1;
    while c < NUM_CLASSES {
        if t[c] <= t[c - 1] {
            return false;
        }
        c += 1;
    }
    true
}
const_assert!(strictly_increasing(&TABLE));

/// Worst waste of class `c` over the requests it serves, checked against 1/8:
/// the smallest request a class serves is one byte over the class below it.
const fn waste_ok(t: &[u32; NUM_CLASSES]) -> bool {
    let mut c = 1;
    while c < NUM_CLASSES {
        let smallest = t[c - 1] as usize + 1;
        let block = t[c] as usize;
        if smallest >= 64 && (block - smallest) * 8 > block {
            return false;
        }
        c += 1;
    }
    true
}
const_assert!(waste_ok(&TABLE));

const fn multiples_of_8(t: &[u32; NUM_CLASSES]) -> bool {
    let mut c = 0;
    while c < NUM_CLASSES {
        if t[c] % 8 != 0 {
            return false;
        }
        c += 1;
    }
    true
}
const_assert!(multiples_of_8(&TABLE));

/// The class serving a request of `size` bytes with alignment at most 8.
/// `size` must be at most [`MAX_SMALL`]; a size of 0 gets the smallest class.
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    if size <= 64 {
        // 0 and 1..=16 both land in class 0.
        size.div_ceil(16) - (size != 0) as usize
    } else {
        let w = size - 1;
        let k = (usize::BITS - 1 - w.leading_zeros()) as usize; // 2^k <= w < 2^(k+1)
        4 + (k - 6) * 8 + ((w >> (k - 3)) & 7)
    }
}

/// The class for a request of `size` bytes aligned to `align` (a power of two
/// no larger than a page's alignment), or `None` when it is not a small request.
#[inline]
pub const fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL || align > MAX_SMALL {
        return None;
    }
    if align <= 8 {
        return Some(class_of(size));
    }
    // Rounding up to the alignment skips the 8-aligned classes when align is 16.
    let s = (size + align - 1) & !(align - 1);
    if s > MAX_SMALL {
        return None;
    }
    let mut c = class_of(s);
    // Larger alignments need a block size that is a multiple of the alignment;
    // powers of two are classes, so this stops within eight steps.
    while c < NUM_CLASSES && class_size(c) % align != 0 {
        c += 1;
    }
    if c < NUM_CLASSES {
        Some(c)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_of_is_the_smallest_class_that_fits() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size);
            assert!(c < NUM_CLASSES, "size {size}");
            assert!(class_size(c) >= size, "size {size} class {c}");
            if c > 0 {
                assert!(
                    class_size(c - 1) < size.max(1),
                    "size {size} not in smallest class"
                );
            }
        }
    }

    #[test]
    fn waste_is_under_an_eighth_from_64_bytes() {
        let mut worst = 0.0f64;
        for size in 64..=MAX_SMALL {
            let b = class_size(class_of(size));
            let w = (b - size) as f64 / b as f64;
            worst = worst.max(w);
            assert!(w <= 0.125, "size {size} block {b} waste {w}");
        }
        assert!(
            worst > 0.10,
            "the table is not as fine as it claims: {worst}"
        );
    }

    #[test]
    fn table_matches_function() {
        for (c, &size) in CLASS_SIZES.iter().enumerate() {
            assert_eq!(size as usize, class_size(c));
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_their_alignment() {
        let mut align = 16;
        while align <= MAX_SMALL {
            for size in (0..=MAX_SMALL).step_by(7) {
                if let Some(c) = class_for(size, align) {
                    let b = class_size(c);
                    assert!(
                        b >= size && b % align == 0,
                        "size {size} align {align} -> {b}"
                    );
                } else {
                    assert!(size.next_multiple_of(align) > MAX_SMALL);
                }
            }
            align *= 2;
        }
    }

    #[test]
    fn sixteen_byte_requests_never_get_8_aligned_classes() {
        for size in 0..=1024 {
            let b = class_size(class_for(size, 16).unwrap());
            assert_eq!(b % 16, 0, "size {size}");
        }
    }

    #[test]
    fn oversize_is_not_small() {
        assert_eq!(class_for(MAX_SMALL + 1, 1), None);
        assert_eq!(class_for(usize::MAX, 16), None);
        assert_eq!(class_for(usize::MAX - 3, 64), None);
    }
}
