#![cfg(feature = "engine")]
//! The `purrify-inference enhance` command as a user runs it: real files, exit codes, one-line
//! errors, no panics.

mod common;

use std::process::Command;

use common::*;

fn enhance(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_purrify-inference"))
        .arg("enhance")
        .args(args)
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.success(), stderr)
}

#[test]
fn enhances_a_real_photo_into_the_format_of_the_extension() {
    require_models();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jpg");
    std::fs::write(&input, jpeg_bytes(&crop(&photo("rocket.jpg"), 200, 200, 60, 40))).unwrap();
    for (name, magic) in [("out.png", &b"\x89PNG"[..]), ("out.webp", &b"RIFF"[..]), ("out.JPG", &b"\xFF\xD8\xFF"[..])] {
        let out = dir.path().join(name);
        let (ok, stderr) = enhance(&[input.to_str().unwrap(), out.to_str().unwrap(), "--quality", "fast", "--scale", "4"]);
        assert!(ok, "{stderr}");
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.starts_with(magic), "{name}");
        assert_eq!(image::load_from_memory(&bytes).unwrap().to_rgb8().dimensions(), (240, 160), "{name}");
    }
}

#[test]
fn bad_inputs_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("photo.jpg");
    std::fs::write(&text, "this is text").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, "").unwrap();
    let good = dir.path().join("good.png");
    std::fs::write(&good, png_bytes(&image::RgbImage::new(4, 4))).unwrap();
    let out = dir.path().join("out.jpg");
    let out_s = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![text.to_str().unwrap(), out_s], "not a JPEG, PNG, WebP or AVIF"),
        (vec![empty.to_str().unwrap(), out_s], "empty"),
        (vec!["/nonexistent/x.jpg", out_s], "cannot read /nonexistent/x.jpg"),
        (vec![good.to_str().unwrap(), "out.gif"], "must end in .jpg"),
        (vec![good.to_str().unwrap(), out_s, "--scale", "3"], "scale must be 2 or 4"),
        (vec![good.to_str().unwrap(), out_s, "--tile-size", "5"], "tile_size"),
    ];
    for (args, expected) in cases {
        let (ok, stderr) = enhance(&args);
        assert!(!ok, "{args:?} should fail");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected, got {stderr:?}");
        assert!(lines[0].starts_with("purrify-inference: error: "), "{stderr}");
        assert!(lines[0].contains(expected), "{args:?}: {stderr:?} should mention {expected:?}");
    }
    assert!(!out.exists(), "nothing is written on failure");
}
