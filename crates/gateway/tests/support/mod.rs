//! The gateway's one test harness: configurations on SQLite and on a throwaway PostgreSQL
//! database (databases from `purrify_store::testing`), a fleet with short timeouts,
//! multipart bodies, and real photos.
#![allow(dead_code, unused_imports)]

pub mod client;

use std::path::{Path, PathBuf};

use purrify_gateway::config::Config;
use purrify_inference::client::Fleet;
pub use purrify_store::on_both_databases;
pub use purrify_store::testing::{Backend, TestDb};

/// A test configuration: no embedded worker, generous rate limits, secrets set.
pub fn config(dir: &Path, database_url: Option<String>) -> Config {
    let mut c = Config::for_tests(dir.to_path_buf());
    c.database_url = database_url;
    c.embedded_worker = false;
    c.webhook_secret = Some("test-secret".into());
    c.admin_token = Some("admin-token".into());
    c.rate_limit = 0.0;
    c.uploads_per_minute = 100_000.0;
    c.probe_interval_seconds = 1;
    // Logins: cheap hashes (the real cost is measured by `make bench`) and no rate limits
    // (every oneshot request comes from one address); the tests that check them set them.
    c.argon2_memory_kib = 1024;
    c.argon2_iterations = 1;
    c.logins_per_minute_per_address = 0.0;
    c.logins_per_minute_per_account = 0.0;
    c
}

pub fn cache_root() -> PathBuf {
    purrify_inference::cache::cache_root()
}

pub fn photo_bytes(name: &str) -> Vec<u8> {
    let p = cache_root().join("photos").join(name);
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} is missing: run `make models` first", p.display()))
}

/// A small real photo as PNG.
pub fn small_photo_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::load_from_memory(&photo_bytes("chelsea.png")).unwrap().to_rgb8();
    let crop = image::imageops::crop_imm(&img, 100, 50, w, h).to_image();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(crop).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub const BOUNDARY: &str = "purrify-test-boundary";

/// A multipart/form-data body: `(name, filename, bytes)` parts.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut crc = 0xFFFF_FFFFu32;
    for &b in &ihdr {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&(!crc).to_be_bytes());
    out
}

/// A fleet with short client timeouts, so lost workers are noticed quickly.
pub fn test_fleet() -> Fleet {
    Fleet::new(purrify_testkit::fake_worker::fleet_config()).unwrap()
}
