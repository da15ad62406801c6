//! Tile geometry for super-resolution: pure, no pixels.
//!
//! The image is cut into `tile_size` squares. Each tile is run with `pad` extra input pixels
//! on every side that exist in the image (clamped at the borders), and only the output of the
//! core square is kept. When `pad` covers the model's receptive field, every kept output pixel
//! saw exactly the input it would have seen in a whole-image run, so the stitched result has
//! no seams; this is Real-ESRGAN's own tile procedure.
//!
//! There is no "whole image" mode: the tile size is never zero, so the model's working
//! memory is bounded by the tile whatever the image size.

use std::num::NonZeroU32;

/// One tile: the core region it owns and the padded region fed to the model, both in input
/// pixels. The padded region always contains the core region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub px: u32,
    pub py: u32,
    pub pw: u32,
    pub ph: u32,
}

impl Tile {
    /// Offset of the core region inside the padded region.
    pub fn core_offset(&self) -> (u32, u32) {
        (self.x - self.px, self.y - self.py)
    }
}

/// Plans the tiles for a `width` x `height` image. A `tile_size` at least as large as the
/// image means one tile covering everything, with no padding needed.
pub fn plan(width: u32, height: u32, tile_size: NonZeroU32, pad: u32) -> Vec<Tile> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let ts = tile_size.get();
    let cols = width.div_ceil(ts);
    let rows = height.div_ceil(ts);
    let mut tiles = Vec::with_capacity((cols * rows) as usize);
    for r in 0..rows {
        for c in 0..cols {
            let x = c * ts;
            let y = r * ts;
            let w = ts.min(width - x);
            let h = ts.min(height - y);
            let px = x.saturating_sub(pad);
            let py = y.saturating_sub(pad);
            let pw = (x + w + pad).min(width) - px;
            let ph = (y + h + pad).min(height) - py;
            tiles.push(Tile { x, y, w, h, px, py, pw, ph });
        }
    }
    tiles
}

/// Splits `tile`'s core into (up to) four quarters, each padded like [`plan`] pads, for a
/// retry after the tile did not fit in memory. The quarters partition the core, so their
/// kept outputs stitch exactly as the tile's would have. A core 1 px wide or high splits in
/// two along the other side only.
pub fn split(tile: &Tile, width: u32, height: u32, pad: u32) -> Vec<Tile> {
    let halves = |start: u32, len: u32| {
        let first = len.div_ceil(2);
        [(start, first), (start + first, len - first)].into_iter().filter(|&(_, l)| l > 0)
    };
    let mut out = Vec::with_capacity(4);
    for (y, h) in halves(tile.y, tile.h) {
        for (x, w) in halves(tile.x, tile.w) {
            let px = x.saturating_sub(pad);
            let py = y.saturating_sub(pad);
            let pw = (x + w + pad).min(width) - px;
            let ph = (y + h + pad).min(height) - py;
            out.push(Tile { x, y, w, h, px, py, pw, ph });
        }
    }
    out
}

/// Input pixels the model sees in total, counting the overlap (for cost estimates and the
/// benchmark's overhead accounting).
pub fn padded_area(tiles: &[Tile]) -> u64 {
    tiles.iter().map(|t| u64::from(t.pw) * u64::from(t.ph)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(width: u32, height: u32, tile_size: u32, pad: u32) -> Vec<Tile> {
        super::plan(width, height, NonZeroU32::new(tile_size).unwrap(), pad)
    }

    fn covers_exactly_once(width: u32, height: u32, tiles: &[Tile]) {
        let mut seen = vec![0u8; (width * height) as usize];
        for t in tiles {
            for y in t.y..t.y + t.h {
                for x in t.x..t.x + t.w {
                    seen[(y * width + x) as usize] += 1;
                }
            }
            assert!(t.px <= t.x && t.py <= t.y, "{t:?}");
            assert!(t.px + t.pw >= t.x + t.w && t.py + t.ph >= t.y + t.h, "{t:?}");
            assert!(t.px + t.pw <= width && t.py + t.ph <= height, "{t:?}");
        }
        assert!(seen.iter().all(|&n| n == 1), "every pixel belongs to exactly one core");
    }

    #[test]
    fn cores_partition_the_image() {
        for (w, h, ts, pad) in [(100, 60, 32, 10), (1, 1, 400, 10), (400, 8, 400, 10), (1000, 999, 128, 0), (64, 64, 64, 16)] {
            covers_exactly_once(w, h, &plan(w, h, ts, pad));
        }
    }

    #[test]
    fn padding_is_clamped_at_borders() {
        let tiles = plan(100, 100, 50, 10);
        assert_eq!(tiles.len(), 4);
        assert_eq!(tiles[0], Tile { x: 0, y: 0, w: 50, h: 50, px: 0, py: 0, pw: 60, ph: 60 });
        assert_eq!(tiles[3], Tile { x: 50, y: 50, w: 50, h: 50, px: 40, py: 40, pw: 60, ph: 60 });
        assert_eq!(tiles[3].core_offset(), (10, 10));
    }

    #[test]
    fn a_tile_larger_than_the_image_covers_it_whole() {
        let tiles = plan(300, 200, 400, 10);
        assert_eq!(tiles, vec![Tile { x: 0, y: 0, w: 300, h: 200, px: 0, py: 0, pw: 300, ph: 200 }]);
    }

    #[test]
    fn edge_tiles_are_smaller() {
        let tiles = plan(130, 70, 64, 4);
        assert_eq!(tiles.len(), 6);
        let last = tiles.last().unwrap();
        assert_eq!((last.x, last.y, last.w, last.h), (128, 64, 2, 6));
        assert_eq!(padded_area(&plan(10, 10, 10, 5)), 100);
    }

    #[test]
    fn split_quarters_partition_the_core_and_pad_like_plan() {
        let (w, h, pad) = (130, 70, 6);
        for tile in plan(w, h, 64, pad) {
            let parts = split(&tile, w, h, pad);
            let area: u32 = parts.iter().map(|p| p.w * p.h).sum();
            assert_eq!(area, tile.w * tile.h, "{tile:?}");
            for p in &parts {
                assert!(p.x >= tile.x && p.x + p.w <= tile.x + tile.w && p.y >= tile.y && p.y + p.h <= tile.y + tile.h);
                // Padded like plan(): `pad` on every side, clamped at the borders.
                assert_eq!(p.px, p.x.saturating_sub(pad));
                assert_eq!(p.py, p.y.saturating_sub(pad));
                assert_eq!(p.px + p.pw, (p.x + p.w + pad).min(w));
                assert_eq!(p.py + p.ph, (p.y + p.h + pad).min(h));
            }
        }
        // Every pixel still belongs to exactly one core after splitting every tile.
        let all: Vec<Tile> = plan(w, h, 64, pad).iter().flat_map(|t| split(t, w, h, pad)).collect();
        covers_exactly_once(w, h, &all);
        let first = plan(w, h, 64, pad)[0];
        assert_eq!(split(&first, w, h, pad).iter().map(|t| (t.w, t.h)).collect::<Vec<_>>(), [(32, 32), (32, 32), (32, 32), (32, 32)]);
        // The 2x6 corner tile: halves of 1x3 and 1x3 columns, never empty.
        let corner = *plan(w, h, 64, pad).last().unwrap();
        assert_eq!(split(&corner, w, h, pad).iter().map(|t| (t.w, t.h)).collect::<Vec<_>>(), [(1, 3), (1, 3), (1, 3), (1, 3)]);
        let thin = Tile { x: 0, y: 0, w: 1, h: 5, px: 0, py: 0, pw: 1, ph: 5 };
        assert_eq!(split(&thin, 1, 5, 0).len(), 2);
    }

    #[test]
    fn empty_image_has_no_tiles() {
        assert!(plan(0, 10, 32, 4).is_empty());
    }
}
