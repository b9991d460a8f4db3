//! Unit tests of the cache's bookkeeping (fake addresses: nothing is mapped).

use super::*;

const MIB: usize = 1 << 20;
/// Segment-aligned fake addresses: the bookkeeping never touches them.
const A: usize = 0x1000_0000_0000;
const B: usize = A + 64 * MIB;
const C: usize = A + 128 * MIB;

fn put(c: &mut Cache, addr: usize, len: usize, split: usize, now: u64) -> Vec<Range> {
    put_within(c, addr, len, split, now, BUDGET)
}

fn put_within(
    c: &mut Cache,
    addr: usize,
    len: usize,
    split: usize,
    now: u64,
    budget: usize,
) -> Vec<Range> {
    let mut out = Evicted::new();
    c.put(addr, len, split, now, budget, &mut out);
    out.ranges().to_vec()
}

#[test]
fn a_close_fit_is_reused_whole_and_in_place() {
    let mut c = Cache::new();
    assert_eq!(c.take(MIB, true), Found::Miss);
    assert!(put(&mut c, A, 9 * MIB, 0, 0).is_empty());
    assert_eq!(c.bytes(), 9 * MIB);
    // 9 MiB for 8.5: within an eighth, handed over whole.
    let need = 8 * MIB + MIB / 2;
    assert_eq!(
        c.take(need, true),
        Found::InPlace {
            addr: A,
            len: 9 * MIB,
            split: 0
        }
    );
    assert_eq!((c.bytes(), c.len(), c.deadline()), (0, 0, 0));
}

#[test]
fn the_smallest_fit_is_chosen_and_a_long_tail_stays_cached_then_joins_back() {
    let mut c = Cache::new();
    put(&mut c, A, 30 * MIB, 0, 0);
    put(&mut c, B, 12 * MIB, 0, 0);
    let Found::InPlace { addr, len, split } = c.take(5 * MIB, true) else {
        panic!("expected an in-place fit");
    };
    assert_eq!((addr, len), (B, 5 * MIB), "the smaller mapping, cut");
    assert_ne!(split, 0);
    assert_eq!((c.len(), c.bytes()), (2, 37 * MIB), "the 7 MiB tail stays");
    // The block comes back while its tail is still here: one mapping.
    assert!(put(&mut c, B, 5 * MIB, split, 5).is_empty());
    assert_eq!((c.len(), c.bytes()), (2, 42 * MIB));
    assert_eq!(
        c.take(11 * MIB, true),
        Found::InPlace {
            addr: B,
            len: 12 * MIB,
            split: 0
        }
    );
    // No join for a stale token, nor for a block that no longer ends
    // where its tail starts (shrunk in place meanwhile).
    let Found::InPlace { split, .. } = c.take(9 * MIB, true) else {
        panic!("expected an in-place fit");
    };
    assert_eq!(c.len(), 1);
    put(&mut c, A, 6 * MIB, split, 1);
    assert_eq!(c.len(), 2);
    put(&mut c, C, 9 * MIB, split.wrapping_add(1), 1);
    assert_eq!((c.len(), c.bytes()), (3, 36 * MIB));
}

#[test]
fn an_unaligned_fit_moves_and_tails_are_taken_from_the_end() {
    let mut c = Cache::new();
    put(&mut c, A, 40 * MIB, 0, 0);
    let Found::InPlace { split, .. } = c.take(9 * MIB, true) else {
        panic!("expected an in-place fit");
    };
    // The 31 MiB tail at A + 9 MiB is not segment-aligned: it moves, from
    // its end, so that its start still meets the block.
    assert_eq!(
        c.take(12 * MIB, true),
        Found::Move {
            addr: A + 28 * MIB,
            len: 12 * MIB
        }
    );
    put(&mut c, A, 9 * MIB, split, 1);
    assert_eq!((c.len(), c.bytes()), (1, 28 * MIB));
    // A fit within an eighth moves whole.
    put(&mut c, B + MIB, 8 * MIB, 0, 0);
    assert_eq!(
        c.take(7 * MIB + MIB / 2, true),
        Found::InPlace {
            addr: A,
            len: 7 * MIB + MIB / 2,
            split: c.tokens
        },
        "an aligned fit comes first"
    );
    let _ = c.take(20 * MIB, true); // the rest of A
    assert_eq!(
        c.take(7 * MIB + MIB / 2, true),
        Found::Move {
            addr: B + MIB,
            len: 8 * MIB
        }
    );
    assert_eq!(c.bytes(), 0);
}

#[test]
fn a_block_grows_into_its_cached_tail() {
    let mut c = Cache::new();
    put(&mut c, A, 32 * MIB, 0, 0);
    let Found::InPlace { split, .. } = c.take(2 * MIB, true) else {
        panic!("expected an in-place fit");
    };
    assert_eq!(c.take_tail(A + 2 * MIB, split.wrapping_add(1), MIB), 0);
    assert_eq!(c.take_tail(A + 3 * MIB, split, MIB), 0, "not where it ends");
    assert_eq!(c.take_tail(A + 2 * MIB, 0, MIB), 0);
    // 2 -> 4 MiB: the front of the tail, which keeps the token.
    assert_eq!(c.take_tail(A + 2 * MIB, split, 2 * MIB), 2 * MIB);
    assert_eq!((c.len(), c.bytes()), (1, 28 * MIB));
    // 4 -> 30 MiB: the whole tail, within an eighth.
    assert_eq!(c.take_tail(A + 4 * MIB, split, 26 * MIB), 28 * MIB);
    assert_eq!((c.len(), c.bytes()), (0, 0));
    assert_eq!(c.take_tail(A + 32 * MIB, split, MIB), 0);
}

#[test]
fn a_shrunk_block_leaves_one_tail_that_it_takes_back_or_joins_when_freed() {
    let mut c = Cache::new();
    let mut out = Evicted::new();
    // A 12 MiB block at A with no tail, halved twice: one tail (whose
    // start is not segment-aligned).
    let t = c.put_tail(A + 6 * MIB, 6 * MIB, 0, 1, BUDGET, &mut out);
    assert_ne!(t, 0);
    assert_eq!(c.put_tail(A + 3 * MIB, 3 * MIB, t, 2, BUDGET, &mut out), t);
    assert!(out.ranges().is_empty());
    assert_eq!((c.len(), c.bytes()), (1, 9 * MIB), "joined: one tail");
    // Not for another block, nor an unaligned fit without mremap.
    assert_eq!(c.take_tail(A + 3 * MIB, t.wrapping_add(1), MIB), 0);
    assert_eq!(c.take(5 * MIB, false), Found::Miss);
    // Growing back takes the front of it; what is left keeps the token.
    assert_eq!(c.take_tail(A + 3 * MIB, t, 3 * MIB), 3 * MIB);
    assert_eq!((c.len(), c.bytes()), (1, 6 * MIB));
    // Freed, the block (6 MiB now) and its tail are one mapping again.
    assert!(put(&mut c, A, 6 * MIB, t, 3).is_empty());
    assert_eq!((c.len(), c.bytes()), (1, 12 * MIB));
    assert_eq!(
        c.take(12 * MIB, false),
        Found::InPlace {
            addr: A,
            len: 12 * MIB,
            split: 0
        }
    );
    // A block whose tail is gone gets it cached afresh under its token.
    assert_eq!(c.put_tail(B + MIB, MIB, t, 4, BUDGET, &mut out), t);
    assert_eq!((c.len(), c.bytes()), (1, MIB));
    assert!(out.ranges().is_empty());
}

#[test]
fn a_cut_tail_stays_within_the_budget() {
    let mut c = Cache::new();
    let budget = 40 * MIB;
    put_within(&mut c, B, 32 * MIB, 0, 1, budget);
    let mut out = Evicted::new();
    // The oldest mapping gives up its end to make room for the tail.
    let t = c.put_tail(A + 16 * MIB, 16 * MIB, 0, 2, budget, &mut out);
    assert_eq!(
        out.ranges(),
        [Range {
            addr: B + 24 * MIB,
            len: 8 * MIB
        }]
    );
    assert_eq!((c.len(), c.bytes()), (2, budget));
    // A tail longer than the cache may hold is unmapped at once...
    let mut out = Evicted::new();
    c.put_tail(C, BUDGET + 4096, 0, 3, BUDGET, &mut out);
    let whole = Range {
        addr: C,
        len: BUDGET + 4096,
    };
    assert_eq!(out.ranges(), [whole]);
    assert_eq!(c.bytes(), budget);
    // ...and so is one that grows too long by joining the block's tail.
    let mut out = Evicted::new();
    let cut = BUDGET - 8 * MIB;
    assert_eq!(
        c.put_tail(A + 16 * MIB - cut, cut, t, 4, BUDGET, &mut out),
        t
    );
    let joined = Range {
        addr: A + 16 * MIB - cut,
        len: BUDGET + 8 * MIB,
    };
    assert_eq!(out.ranges(), [joined]);
    assert_eq!((c.len(), c.bytes()), (1, 24 * MIB));
}

#[test]
fn without_a_fit_the_longest_mapping_grows() {
    let mut c = Cache::new();
    put(&mut c, A, 3 * MIB, 0, 0);
    put(&mut c, B, 5 * MIB, 0, 0);
    assert_eq!(
        c.take(20 * MIB, true),
        Found::Grow {
            addr: B,
            len: 5 * MIB
        }
    );
    // Without mremap only an in-place fit will do.
    assert_eq!(c.take(20 * MIB, false), Found::Miss);
    assert_eq!(c.bytes(), 3 * MIB);
    put(&mut c, C + MIB, 8 * MIB, 0, 0); // not segment-aligned
    assert_eq!(c.take(6 * MIB, false), Found::Miss);
    assert_eq!(
        c.take(2 * MIB, false),
        Found::InPlace {
            addr: A,
            len: 2 * MIB,
            split: c.tokens
        }
    );
}

#[test]
fn bytes_and_slots_stay_bounded_evicting_the_oldest() {
    let mut c = Cache::new();
    let mut unmapped = 0;
    let mut put_bytes = 0;
    for i in 0..100usize {
        let len = (1 + i % 23) * MIB;
        let addr = A + i * 64 * MIB;
        put_bytes += len;
        let out = put(&mut c, addr, len, 0, i as u64);
        for r in &out {
            assert!(r.len > 0 && r.addr % os::OS_PAGE == 0);
            unmapped += r.len;
        }
        assert!(c.bytes() <= BUDGET && c.len() <= SLOTS);
        assert_eq!(put_bytes, c.bytes() + unmapped, "nothing lost");
        // The newest mapping is always kept whole.
        assert!(c.entries[..c.n]
            .iter()
            .any(|e| e.addr == addr && e.len == len));
    }
    assert!(c.bytes() > BUDGET / 2, "the budget is used");
    // A mapping longer than the budget is not cached at all.
    let out = put(&mut c, C, BUDGET + os::OS_PAGE, 0, 200);
    assert_eq!(
        out,
        [Range {
            addr: C,
            len: BUDGET + os::OS_PAGE
        }]
    );
    assert!(accepts(BUDGET) && !accepts(BUDGET + 1));
}

#[test]
fn eviction_cuts_only_what_it_must_from_the_oldest() {
    let mut c = Cache::new();
    let budget = 64 * MIB;
    put_within(&mut c, A, 40 * MIB, 0, 1, budget);
    put_within(&mut c, B, 20 * MIB, 0, 2, budget);
    let out = put_within(&mut c, C, 10 * MIB, 0, 3, budget);
    assert_eq!(
        out,
        [Range {
            addr: A + 34 * MIB,
            len: 6 * MIB
        }]
    );
    assert_eq!(c.bytes(), budget);
    // A smaller budget at the next free evicts down to it, oldest first;
    // a mapping longer than it is not cached.
    let out = put_within(&mut c, C + 64 * MIB, 8 * MIB, 0, 4, 32 * MIB);
    assert_eq!(
        out,
        [
            Range {
                addr: A,
                len: 34 * MIB
            },
            Range {
                addr: B + 14 * MIB,
                len: 6 * MIB
            }
        ]
    );
    assert_eq!(c.bytes(), 32 * MIB);
    // The mapping just freed is kept even when longer than the budget
    // (not when longer than BUDGET): the others make room.
    let out = put_within(&mut c, A, 40 * MIB, 0, 5, 32 * MIB);
    assert_eq!(out.len(), 3);
    assert_eq!((c.len(), c.bytes()), (1, 40 * MIB));
}

#[test]
fn the_budget_lets_live_blocks_regrow_to_their_peak_within_bounds() {
    assert_eq!(budget(0, 0), FLOOR);
    assert_eq!(budget(FLOOR / 2, 0), FLOOR);
    assert_eq!(budget(100 * MIB, 40 * MIB), 60 * MIB);
    assert_eq!(budget(100 * MIB, 90 * MIB), FLOOR);
    assert_eq!(budget(usize::MAX, 0), BUDGET);
    // Live above a peak not yet updated: the floor.
    assert_eq!(budget(10 * MIB, 50 * MIB), FLOOR);
}

#[test]
fn purge_takes_what_waited_long_enough() {
    let mut c = Cache::new();
    put(&mut c, A, 4 * MIB, 0, 1000);
    put(&mut c, B, 8 * MIB, 0, 1050);
    assert_eq!(c.deadline(), 1000 + purge_delay_ms());
    let mut out = Evicted::new();
    c.purge(1000 + purge_delay_ms() - 1, false, &mut out);
    assert!(out.ranges().is_empty());
    c.purge(1000 + purge_delay_ms(), false, &mut out);
    assert_eq!(
        out.ranges(),
        [Range {
            addr: A,
            len: 4 * MIB
        }]
    );
    assert_eq!(
        (c.bytes(), c.deadline()),
        (8 * MIB, 1050 + purge_delay_ms())
    );
    let mut out = Evicted::new();
    c.purge(0, true, &mut out);
    assert_eq!(out.ranges().len(), 1);
    assert_eq!((c.bytes(), c.len(), c.deadline()), (0, 0, 0));
}
