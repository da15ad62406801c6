//! Every prefix and many single-byte corruptions of every fixture: Ok or Err, never a panic
//! escaping, never an abort, never a hang.
//!
//! Kept in its own test binary because it installs a panic hook (process-wide) that silences
//! panics raised inside dependencies: avif-parse has `debug_assert`s that fire on corrupt
//! input in debug builds (caught by our `catch_unwind`), and printing hundreds of backtraces
//! under RUST_BACKTRACE=1 takes a minute.

mod common;

use common::*;
use purrify_imaging::{Limits, decode, read_header};

fn quiet_dependency_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_dependency = info.location().is_some_and(|l| l.file().contains("/.cargo/registry/"));
        if !in_dependency {
            default(info);
        }
    }));
}

#[test]
/// Every prefix and many single-byte corruptions of every fixture: Ok or Err, never a panic.
fn corrupted_fixtures_never_panic() {
    quiet_dependency_panics();
    let limits = Limits::default();
    let names = [
        "avif8_420.avif",
        "avif10_alpha.avif",
        "avif12_444_limited.avif",
        "avif8_irot1_imir1.avif",
        "cmyk.jpg",
        "palette_trns.png",
        "webp_lossy.webp",
        "webp_alpha_lossless.webp",
    ];
    for name in names {
        let f = fixture(name);
        for len in (0..f.len()).step_by(7) {
            let _ = read_header(&f[..len], &limits);
            let _ = decode(&f[..len], &limits);
        }
        let flips = noise(450, name.len() as u64);
        for pair in flips.chunks_exact(3) {
            let mut g = f.clone();
            let at = (usize::from(pair[0]) << 8 | usize::from(pair[1])) % g.len();
            g[at] ^= pair[2] | 1;
            if let Ok(d) = decode(&g, &limits) {
                // Whatever decodes must still be within limits and consistent.
                assert!(d.rgb.width() > 0 && d.rgb.height() > 0);
                if let Some(a) = &d.alpha {
                    assert_eq!(a.dimensions(), d.rgb.dimensions());
                }
            }
        }
    }
}
