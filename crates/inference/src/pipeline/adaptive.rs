//! Tile sizes that adapt to the device's memory.
//!
//! Large tiles are faster (less overlap recomputed), but a tile's working memory grows with
//! its area, and on a GPU an oversized tile fails the whole job with an allocation error (the
//! top complaint of Real-ESRGAN and GFPGAN users). So: the default tile comes from the
//! device's free memory where we can read it; a tile that still fails to allocate is split in
//! four and retried, down to [`FLOOR`]; and the largest tile that worked after a failure is
//! remembered for the model's session (one model on one provider), so later jobs start there
//! instead of failing again.

use std::sync::Mutex;

use crate::protocol::{DEFAULT_TILE_SIZE, MAX_TILE_SIZE, MIN_TILE_SIZE};

/// Smallest tile edge a failing tile is split down to. Below it the padding (up to 20 px per
/// side) dominates the work, and a device that cannot run 32 px tiles cannot run the model.
pub const FLOOR: u32 = MIN_TILE_SIZE;

/// Share of the free device memory a tile may plan for: the provider's arena, cuDNN
/// workspaces and other jobs' tiles need the rest.
const FREE_MEMORY_SHARE: f64 = 0.5;

/// Peak working memory per input pixel of a tile, in bytes, estimated from the architecture
/// (fp32 activations the runtime keeps alive at once), not measured on a GPU (none here).
/// animevideov3: 64-channel convolutions at input resolution, about three live buffers
/// (768 B) plus the pixel-shuffled output; rounded up to 2 KiB. x4plus: dense blocks
/// concatenate up to 192 channels at input resolution, then 64-channel convolutions at 16x the
/// area after the two upsamplings (4 KiB per buffer, about three live); rounded up to 16 KiB.
pub fn bytes_per_input_pixel(model: &str) -> u64 {
    if model.starts_with("realesrgan-x4plus") { 16 * 1024 } else { 2 * 1024 }
}

/// The tile edge whose estimated working memory fits in `FREE_MEMORY_SHARE` of `free_bytes`,
/// within the tile bounds the API accepts.
pub fn tile_for_free_memory(free_bytes: u64, bytes_per_px: u64) -> u32 {
    let pixels = free_bytes as f64 * FREE_MEMORY_SHARE / bytes_per_px.max(1) as f64;
    (pixels.sqrt() as u32).clamp(MIN_TILE_SIZE, MAX_TILE_SIZE)
}

/// What one upscale's tiles did, for the job result and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adaptation {
    /// Tile edge the job asked for (its effective `tile_size`).
    pub requested: u32,
    /// Tile edge the job was planned with: the request capped by what the device is known
    /// to hold.
    pub planned: u32,
    /// Smallest tile edge run after splitting (`planned` without splits).
    pub smallest: u32,
    /// Tiles split in four after an allocation failure.
    pub splits: u32,
}

impl Adaptation {
    /// Whether the job ran with other tiles than it asked for.
    pub fn adapted(&self) -> bool {
        self.splits > 0 || self.planned != self.requested
    }
}

/// The tile limits of one model session: the device's default, and what allocation
/// failures taught.
#[derive(Debug)]
pub struct TileLimits {
    /// Tile edge for `tile_size: 0` requests, from free device memory (or the API default).
    default: u32,
    learned: Mutex<Learned>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Learned {
    /// Smallest tile edge that failed to allocate; `None` before any failure.
    failed: Option<u32>,
    /// Largest tile edge that ran below `failed`.
    worked: u32,
}

impl TileLimits {
    /// `free_bytes`: free device memory where the provider's device reports it (GPUs);
    /// `None` on the CPU, where the API default applies.
    pub fn new(model: &str, free_bytes: Option<u64>) -> Self {
        let default = free_bytes.map_or(DEFAULT_TILE_SIZE, |f| tile_for_free_memory(f, bytes_per_input_pixel(model)));
        Self { default, learned: Mutex::new(Learned::default()) }
    }

    pub fn default_tile(&self) -> u32 {
        self.default
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest tile edge known to work after a failure, if any failed.
    pub fn remembered(&self) -> Option<u32> {
        let l = *self.learned();
        l.failed.map(|_| l.worked.max(FLOOR))
    }

    /// The tile edge to plan a job with: `requested` (0: this device's default), capped by
    /// the largest tile that worked once a larger one failed.
    pub fn plan(&self, requested: u32) -> u32 {
        let wanted = if requested == 0 { self.default } else { requested };
        match self.remembered() {
            Some(limit) => wanted.min(limit),
            None => wanted,
        }
    }

    /// A tile of core edge `edge` failed to allocate.
    pub fn record_failure(&self, edge: u32) {
        let mut l = self.learned();
        if l.failed.is_none_or(|f| edge < f) {
            l.failed = Some(edge);
            // What worked at or above the new failure size is not evidence any more.
            if l.worked >= edge {
                l.worked = 0;
            }
        }
    }

    /// A tile of core edge `edge` ran. Only remembered below a failure: without one, every
    /// size up to the request is fine.
    pub fn record_success(&self, edge: u32) {
        let mut l = self.learned();
        if l.failed.is_some_and(|f| edge < f) && edge > l.worked {
            l.worked = edge;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tile_follows_free_memory() {
        const GIB: u64 = 1 << 30;
        // 8 GiB free: x4plus sqrt(4 GiB / 16 KiB) = 512; animevideov3 hits the API maximum.
        assert_eq!(tile_for_free_memory(8 * GIB, bytes_per_input_pixel("realesrgan-x4plus")), 512);
        assert_eq!(tile_for_free_memory(8 * GIB, bytes_per_input_pixel("realesr-animevideov3-x2")), MAX_TILE_SIZE);
        // A nearly full GPU still gets the smallest tile, never zero.
        assert_eq!(tile_for_free_memory(1 << 20, bytes_per_input_pixel("realesrgan-x4plus")), MIN_TILE_SIZE);
        assert_eq!(TileLimits::new("realesrgan-x4plus", Some(GIB)).default_tile(), 181);
        // The CPU reports no device memory: the API default.
        assert_eq!(TileLimits::new("realesrgan-x4plus", None).default_tile(), DEFAULT_TILE_SIZE);
    }

    #[test]
    fn limits_remember_the_largest_tile_that_worked_after_a_failure() {
        let t = TileLimits::new("realesr-animevideov3-x2", None);
        assert_eq!(t.plan(0), DEFAULT_TILE_SIZE);
        t.record_success(400);
        assert_eq!(t.remembered(), None, "successes alone teach nothing");
        assert_eq!(t.plan(1024), 1024);

        t.record_failure(400);
        t.record_success(200);
        t.record_success(100);
        assert_eq!(t.remembered(), Some(200));
        assert_eq!(t.plan(0), 200);
        assert_eq!(t.plan(1024), 200);
        assert_eq!(t.plan(64), 64, "smaller requests are left alone");

        // A later, smaller failure forgets the 200 that no longer holds.
        t.record_failure(200);
        assert_eq!(t.remembered(), Some(FLOOR));
        t.record_success(100);
        assert_eq!(t.plan(400), 100);
        // A larger failure than the known one changes nothing.
        t.record_failure(300);
        assert_eq!(t.plan(400), 100);
    }

    #[test]
    fn adaptation_is_reported_only_when_tiles_changed() {
        let same = Adaptation { requested: 400, planned: 400, smallest: 400, splits: 0 };
        assert!(!same.adapted());
        assert!(Adaptation { splits: 1, smallest: 200, ..same }.adapted());
        assert!(Adaptation { planned: 200, smallest: 200, ..same }.adapted());
    }
}
