//! Uploads through the real router on SQLite and PostgreSQL: truncated files refused on
//! `/api/v1/enhance` by their container's completeness, and seed 001's and seed 003's upload
//! routes (ownership, quota, base64, bad files), each refusal leaving no object and no row.

mod support;

use axum::http::StatusCode;
use support::client::*;
use support::*;

fn jpeg_photo(w: u32, h: u32) -> Vec<u8> {
    let img = image::load_from_memory(&small_photo_png(w, h)).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

on_both!(truncated_images_are_refused_on_enhance);

async fn truncated_images_are_refused_on_enhance(backend: Backend) {
    let api = api(backend).await;
    let jpeg = jpeg_photo(160, 120);
    let png = small_photo_png(96, 64);
    assert!(jpeg.len() > 2000, "the JPEG must be longer than the cut");
    for (what, cut) in [("JPEG cut after 1.5 kB", &jpeg[..1536]), ("PNG cut in half", &png[..png.len() / 2]), ("PNG without IEND", &png[..png.len() - 12])] {
        let r = api.upload(&[("file", Some("photo"), cut)]).await;
        assert_envelope(&r, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_IMAGE", what);
        assert!(r.body["message"].as_str().unwrap().contains("incomplete"), "{what}: {}", r.body);
        assert_eq!(api.stored_uploads(), 0, "{what}: nothing stored");
    }
    assert_eq!(api.stack.state.tasks.db().count_by_status().await.unwrap().queued, 0, "no task row for a refused upload");
    for (what, full) in [("whole JPEG", &jpeg), ("whole PNG", &png)] {
        let r = api.upload(&[("file", Some("photo"), full)]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{what}: {}", r.body);
    }
    assert_eq!(api.stored_uploads(), 2);
}
