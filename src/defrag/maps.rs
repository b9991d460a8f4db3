//! The walks behind the [`DefragMap`](super::DefragMap) implementations.

use super::{Meter, Relocate};
use core::ops::Bound;
use std::collections::BTreeMap;

/// Visits the values of `values` from position `*pos` on while `meter`
/// allows, advancing `*pos`; true at the end.
///
/// The walk back to `*pos` is one `nth` (no check per entry, as `skip`
/// makes), and the budget is asked once per run of entries it allows
/// rather than per entry.
pub(super) fn walk_from<'a, V: Relocate + 'a>(
    mut values: impl Iterator<Item = &'a mut V>,
    pos: &mut usize,
    meter: &mut Meter,
) -> bool {
    if *pos > 0 && values.nth(*pos - 1).is_none() {
        return true;
    }
    loop {
        let allowed = meter.allowance();
        if allowed == 0 {
            return false;
        }
        let (mut seen, mut moved) = (0, 0);
        for v in values.by_ref().take(allowed) {
            seen += 1;
            moved += v.relocate() as usize;
        }
        meter.counted(seen, moved);
        *pos += seen;
        if seen < allowed {
            return true;
        }
    }
}

/// Visits the values of `map` after the key `*last` (from the start when
/// `None`) while `meter` allows; `*last` becomes the last key visited. True
/// at the end.
pub(super) fn btree_from<K: Ord + Clone, V: Relocate>(
    map: &mut BTreeMap<K, V>,
    last: &mut Option<K>,
    meter: &mut Meter,
) -> bool {
    let mut entries = match last.as_ref() {
        Some(k) => map.range_mut((Bound::Excluded(k), Bound::Unbounded)),
        None => map.range_mut::<K, _>(..),
    };
    // The key is cloned once per step, not per entry.
    let mut seen: Option<&K> = None;
    let end = loop {
        if !meter.more() {
            break false;
        }
        let Some((k, v)) = entries.next() else {
            break true;
        };
        meter.visit(v);
        seen = Some(k);
    };
    if let Some(k) = seen {
        *last = Some(k.clone());
    }
    end
}

/// Visits the entries of `table` from bucket `*next` on while `meter`
/// allows; `*next` becomes the first bucket not visited. True at the end.
#[cfg(feature = "hashbrown")]
pub(super) fn table_from<T: Relocate>(
    table: &mut hashbrown::HashTable<T>,
    next: &mut usize,
    meter: &mut Meter,
) -> bool {
    let buckets = table.num_buckets();
    while *next < buckets {
        if let Some(entry) = table.get_bucket_mut(*next) {
            if !meter.more() {
                return false;
            }
            meter.visit(entry);
        }
        *next += 1;
    }
    true
}
