use std::time::Instant;
#[test]
fn bench() {
    let b = std::fs::read("/tmp/big.avif").unwrap();
    for _ in 0..2 {
    let t = Instant::now();
    let d = purrify_imaging::decode(&b, &Default::default()).unwrap();
    eprintln!("decode avif 3MP {:?} {:?}", t.elapsed(), d.rgb.dimensions());
    }
}
