//! Pages of blocks over 8 KiB hold few blocks (`heap::span_for`: the fewest
//! slices that hold a block with at most an eighth left over), so that a
//! class with a block or two live holds little more than them, and its
//! pages empty and give their slices back to any class. Checked on a
//! first-class heap (its own statistics, no other thread in them): one
//! live block of each size from 8 KiB to 64 KiB in 2 KiB steps (28 blocks,
//! 1.0 MiB) leaves at most twice as much free in its pages as is allocated
//! (1.6 MiB free; with pages of eight blocks, 4.5 MiB), and the contents of
//! every block survive the allocations of the others.

mod common;

use common::{check, fill};
use segalloc::allocator_api2::alloc::Allocator;
use segalloc::Heap;
use std::alloc::Layout;

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

#[test]
fn one_block_of_each_mid_class_leaves_little_free_in_its_pages() {
    let heap = Heap::new();
    let sizes: Vec<usize> = (8..64).step_by(2).map(|k| (k << 10) + 1).collect();
    let blocks: Vec<(std::ptr::NonNull<u8>, Layout)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let layout = Layout::from_size_align(len, 8).unwrap();
            let p = heap.allocate(layout).expect("allocation").cast::<u8>();
            // SAFETY: `len` bytes just allocated.
            unsafe { fill(p.as_ptr(), len, i as u64) };
            (p, layout)
        })
        .collect();
    let s = heap.stats();
    assert!(s.allocated >= sizes.iter().sum::<usize>());
    assert!(
        s.free_in_pages <= 2 * s.allocated,
        "{} bytes free in the pages of {} blocks ({} allocated)",
        s.free_in_pages,
        blocks.len(),
        s.allocated
    );
    for (i, (p, layout)) in blocks.into_iter().enumerate() {
        // SAFETY: a live block of `layout` from `heap`, filled above.
        unsafe {
            check(p.as_ptr(), layout.size(), i as u64, "mid-size block");
            heap.deallocate(p, layout);
        }
    }
    assert_eq!(heap.stats().allocated, 0);
}
