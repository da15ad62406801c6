use std::time::Instant;
#[test]
fn bench() {
    let b = std::fs::read("/root/.cache/purrify/photos/astronaut.png").unwrap();
    let t = Instant::now();
    let d = purrify_imaging::decode(&b, &Default::default()).unwrap();
    eprintln!("decode png 512 {:?}", t.elapsed());
    let t = Instant::now();
    let big = purrify_imaging::resize_rgb(&d.rgb, 4096, 3072);
    eprintln!("resize to 12MP {:?}", t.elapsed());
    for (f, q) in [(purrify_imaging::OutputFormat::Jpeg, 92), (purrify_imaging::OutputFormat::Png, 0), (purrify_imaging::OutputFormat::Webp, 0)] {
        let t = Instant::now();
        let out = purrify_imaging::encode(&big, None, f, q).unwrap();
        eprintln!("encode 12MP {f:?} {:?} {} bytes", t.elapsed(), out.len());
        let t = Instant::now();
        let _ = purrify_imaging::decode(&out, &Default::default()).unwrap();
        eprintln!("decode 12MP {f:?} {:?}", t.elapsed());
    }
    let t = Instant::now();
    let _ = purrify_imaging::resize_rgb(&big, 2048, 1536);
    eprintln!("resize 12MP->3MP {:?}", t.elapsed());
}
