//! With the `serde` feature, a `Stats` snapshot serialises to JSON with every
//! figure a service would export (run with `--features serde`).
#![cfg(feature = "serde")]

#[global_allocator]
static GLOBAL: segalloc::SegAlloc = segalloc::SegAlloc;

#[test]
fn stats_serialise_to_json() {
    let keep: Vec<String> = (0..1000).map(|i| format!("value {i}")).collect();
    let s = segalloc::stats();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["requested"].as_u64().unwrap() as usize, s.requested);
    assert_eq!(json["committed"].as_u64().unwrap() as usize, s.committed);
    let ratio = json["external_fragmentation_ratio"].as_f64().unwrap();
    assert!((ratio - s.external_fragmentation_ratio()).abs() < 1e-12);
    let classes = json["classes"].as_array().unwrap();
    assert_eq!(classes.len(), s.classes.len());
    let live: u64 = classes
        .iter()
        .map(|c| c["live_blocks"].as_u64().unwrap())
        .sum();
    assert!(live as usize >= keep.len());
    assert!(json["os_calls"]["mmap"].as_u64().unwrap() > 0);
    drop(keep);
}
