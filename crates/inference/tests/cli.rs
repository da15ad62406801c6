#![cfg(feature = "engine")]
//! The `purrify-inference enhance` command as a user runs it: real files, exit codes, one-line
//! errors, no panics.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn enhance(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_purrify-inference")).arg("enhance").args(args).output().expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (out.status.success(), stderr)
}

/// Runs `enhance` expecting failure: non-zero exit, exactly one stderr line, naming `expected`.
fn fails_with_one_line(args: &[&str], expected: &str) {
    let (ok, stderr) = enhance(args);
    assert!(!ok, "{args:?} should fail");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got {stderr:?}");
    assert!(lines[0].starts_with("purrify-inference: error: "), "{stderr}");
    assert!(lines[0].contains(expected), "{args:?}: {stderr:?} should mention {expected:?}");
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
        fails_with_one_line(&args, expected);
    }
    assert!(!out.exists(), "nothing is written on failure");
}

#[test]
fn hostile_files_exit_non_zero_with_one_line() {
    require_models();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let photo = crop(&photo("rocket.jpg"), 100, 100, 48, 32);
    let jpeg = jpeg_bytes(&photo);
    let truncated = write("truncated.jpg", jpeg[..jpeg.len() / 3].to_vec());
    let gif = write("anim.gif", gif_bytes(&photo));
    let bomb = write("bomb.png", png_header_claiming(100_000, 100_000));
    let wide = write("wide.png", png_without_pixels(16_384, 10));
    let out = dir.path().join("out.jpg");
    let out_s = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&truncated, out_s, "--quality", "fast"], "damaged or incomplete"),
        (vec![&gif, out_s], "GIF images are not supported"),
        (vec![&bomb, out_s], "100000x100000 = 10000000000 pixels; the limit is 50000000"),
        // Refused from the header, before any model loads: a 65536 px wide JPEG cannot exist.
        (vec![&wide, out_s, "--scale", "4"], "JPEG images cannot be wider or taller than 65535"),
        (vec![&wide, out_s, "--scale", "2", "--max-output-pixels", "100000"], "the limit is 100000"),
    ];
    for (args, expected) in cases {
        fails_with_one_line(&args, expected);
    }
    assert!(!out.exists(), "nothing is written on failure");

    // The smallest image is not hostile: 1x1 becomes 2x2.
    let tiny = write("tiny.png", png_bytes(&image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10]))));
    let (ok, stderr) = enhance(&[&tiny, out_s, "--quality", "fast"]);
    assert!(ok, "{stderr}");
    assert_eq!(image::open(&out).unwrap().to_rgb8().dimensions(), (2, 2));
}

/// Argument errors stay clap's own: exit code 2, the argument named, a usage hint.
#[test]
fn argument_errors_name_the_argument() {
    let out =
        Command::new(env!("CARGO_BIN_EXE_purrify-inference")).args(["enhance", "in.jpg", "out.jpg", "--scale", "two"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: invalid value 'two' for '--scale <SCALE>'"), "{stderr}");
    assert!(stderr.contains("--help"), "{stderr}");
}

/// A panic anywhere prints one line and exits non-zero. Writing the `--json` line to a closed
/// stdout is a real one: `println!` panics on a broken pipe.
#[test]
fn a_panic_prints_one_line_and_exits_non_zero() {
    require_models();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    std::fs::write(&input, png_bytes(&crop(&photo("coffee.png"), 0, 0, 16, 16))).unwrap();
    let out = dir.path().join("out.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_purrify-inference"))
        .args(["enhance", input.to_str().unwrap(), out.to_str().unwrap(), "--quality", "fast", "--json"])
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the process writes its result line.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got {stderr:?}");
    assert!(lines[0].starts_with("purrify-inference: internal error: failed printing to stdout"), "{stderr}");
    assert!(out.exists(), "the image itself was written before the report");
}
