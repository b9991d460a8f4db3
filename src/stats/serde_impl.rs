//! `serde::Serialize` for the statistics (feature `serde`): every field by
//! name, so that a snapshot exports as JSON or any serde format.

use super::{ClassStats, OsCalls, Stats};
use crate::MeshStats;
use serde::ser::{Serialize, SerializeStruct, Serializer};

impl Serialize for ClassStats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ClassStats", 5)?;
        st.serialize_field("block_size", &self.block_size)?;
        st.serialize_field("live_blocks", &self.live_blocks)?;
        st.serialize_field("requested", &self.requested)?;
        st.serialize_field("pages", &self.pages)?;
        st.serialize_field("free_blocks", &self.free_blocks)?;
        st.end()
    }
}

impl Serialize for OsCalls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("OsCalls", 8)?;
        st.serialize_field("mmap", &self.mmap)?;
        st.serialize_field("munmap", &self.munmap)?;
        st.serialize_field("madvise", &self.madvise)?;
        st.serialize_field("mremap", &self.mremap)?;
        st.serialize_field("brk", &self.brk)?;
        st.serialize_field("limit_hits", &self.limit_hits)?;
        st.serialize_field("purges", &self.purges)?;
        st.serialize_field("purged", &self.purged)?;
        st.end()
    }
}

impl Serialize for MeshStats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("MeshStats", 6)?;
        st.serialize_field("pages_meshed", &self.pages_meshed)?;
        st.serialize_field("bytes_released", &self.bytes_released)?;
        st.serialize_field("groups", &self.groups)?;
        st.serialize_field("writes_held", &self.writes_held)?;
        st.serialize_field("os_pages_meshed", &self.os_pages_meshed)?;
        st.serialize_field("shared_os_pages", &self.shared_os_pages)?;
        st.end()
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Stats", 33)?;
        st.serialize_field("requested", &self.requested)?;
        st.serialize_field("allocated", &self.allocated)?;
        st.serialize_field("committed", &self.committed)?;
        st.serialize_field("resident", &self.resident)?;
        st.serialize_field("mapped", &self.mapped)?;
        st.serialize_field("metadata", &self.metadata)?;
        st.serialize_field("free_in_pages", &self.free_in_pages)?;
        st.serialize_field("free_pages", &self.free_pages)?;
        st.serialize_field("purged_in_pages", &self.purged_in_pages)?;
        st.serialize_field("meshed_in_pages", &self.meshed_in_pages)?;
        st.serialize_field("remote_pending", &self.remote_pending)?;
        st.serialize_field("internal_fragmentation", &self.internal_fragmentation())?;
        st.serialize_field(
            "internal_fragmentation_ratio",
            &self.internal_fragmentation_ratio(),
        )?;
        st.serialize_field("external_fragmentation", &self.external_fragmentation())?;
        st.serialize_field(
            "external_fragmentation_ratio",
            &self.external_fragmentation_ratio(),
        )?;
        st.serialize_field("allocations", &self.allocations)?;
        st.serialize_field("frees", &self.frees)?;
        st.serialize_field("reallocs_in_place", &self.reallocs_in_place)?;
        st.serialize_field("reallocs_moved", &self.reallocs_moved)?;
        st.serialize_field("cross_thread_frees", &self.cross_thread_frees)?;
        st.serialize_field("pages_obtained", &self.pages_obtained)?;
        st.serialize_field("pages_returned", &self.pages_returned)?;
        st.serialize_field("segments_obtained", &self.segments_obtained)?;
        st.serialize_field("segments_returned", &self.segments_returned)?;
        st.serialize_field("segments_abandoned", &self.segments_abandoned)?;
        st.serialize_field("large_objects", &self.large_objects)?;
        st.serialize_field("large_bytes", &self.large_bytes)?;
        st.serialize_field("large_cached", &self.large_cached)?;
        st.serialize_field("sampled_objects", &self.sampled_objects)?;
        st.serialize_field("sampled_bytes", &self.sampled_bytes)?;
        st.serialize_field("os_calls", &self.os_calls)?;
        st.serialize_field("mesh", &self.mesh)?;
        st.serialize_field("classes", &self.classes[..])?;
        st.end()
    }
}
