#[test]
fn time() {
    let b = std::fs::read("tests/fixtures/avif8_420.avif").unwrap();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        purrify_imaging::decode(&b, &Default::default()).unwrap();
        eprintln!("{:?}", t.elapsed());
    }
}
