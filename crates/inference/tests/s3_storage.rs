//! `Storage` on `s3://` against a real S3 server: s3s-fs (S3 over a temporary directory, with
//! SigV4 authentication) served over plain HTTP on loopback in this process. What the images
//! do in a cluster: put, get, range reads, list, delete, a 100 MB streamed (multipart)
//! upload, and wrong credentials refused with an error that says so.

use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use purrify_inference::storage::{S3Options, Storage, StorageError};

const KEY: &str = "purrify-test-key";
const SECRET: &str = "purrify-test-secret-0123456789";
const BUCKET: &str = "photos";

/// Starts s3s-fs on an ephemeral loopback port with one bucket; its endpoint URL.
async fn s3_server(dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir.join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(dir).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = ConnBuilder::new(TokioExecutor::new()).serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    format!("http://{addr}")
}

fn storage(endpoint: &str, key: &str, secret: &str) -> Storage {
    let s3 = S3Options {
        endpoint: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        allow_http: true,
        credentials: Some((key.into(), secret.into())),
    };
    Storage::new(&format!("s3://{BUCKET}/purrify"), s3).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_range_list_delete_multipart_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = s3_server(dir.path()).await;
    let s = storage(&endpoint, KEY, SECRET);

    // put, get, range reads
    let a = s.uri_for("inputs/a.jpg");
    assert_eq!(a, "s3://photos/purrify/inputs/a.jpg");
    s.put(&a, Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(s.get(&a, 100).await.unwrap(), Bytes::from_static(b"0123456789"));
    assert_eq!(s.get_range(&a, 2..5).await.unwrap(), Bytes::from_static(b"234"));
    assert_eq!(s.get_range(&a, 9..10).await.unwrap(), Bytes::from_static(b"9"));
    assert!(matches!(s.get(&a, 3).await, Err(StorageError::TooLarge { size: 10, .. })));
    // The object is on the server's disk, path-style: <root>/<bucket>/<key>.
    assert_eq!(std::fs::read(dir.path().join("photos/purrify/inputs/a.jpg")).unwrap(), b"0123456789");
    let (size, _) = s.get_stream(&a).await.unwrap();
    assert_eq!(size, 10);
    assert!(matches!(s.get(&s.uri_for("inputs/missing.jpg"), 100).await, Err(StorageError::NotFound { .. })));
    assert!(matches!(s.get("s3://other-bucket/purrify/a.jpg", 100).await, Err(StorageError::OutsideRoot { .. })));

    // list
    let b = s.uri_for("inputs/b c.png");
    s.put(&b, Bytes::from_static(b"bc")).await.unwrap();
    s.put(&s.uri_for("results/a.jpg"), Bytes::from_static(b"r")).await.unwrap();
    let listed = s.list(&s.uri_for("inputs/")).await.unwrap();
    assert_eq!(listed, vec![(a.clone(), 10), ("s3://photos/purrify/inputs/b%20c.png".to_string(), 2)]);
    assert_eq!(s.get(&listed[1].0, 10).await.unwrap(), Bytes::from_static(b"bc"), "listed URIs read back");
    assert_eq!(s.list(&s.uri_for("")).await.unwrap().len(), 3);

    // delete (idempotent)
    s.delete(&a).await.unwrap();
    s.delete(&a).await.unwrap();
    assert!(matches!(s.get(&a, 100).await, Err(StorageError::NotFound { .. })));
    assert_eq!(s.list(&s.uri_for("inputs/")).await.unwrap().len(), 1);

    // A 100 MB upload streamed in 1 MiB chunks: multipart, never held whole.
    let big = s.uri_for("inputs/big.bin");
    const MIB: usize = 1 << 20;
    let chunks = futures::stream::iter((0..100).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i as u8; MIB]))));
    let started = std::time::Instant::now();
    assert_eq!(s.put_stream(&big, chunks).await.unwrap(), 100 * MIB as u64);
    eprintln!("100 MiB multipart upload: {:?}", started.elapsed());
    let (size, _) = s.get_stream(&big).await.unwrap();
    assert_eq!(size, 100 * MIB as u64);
    assert_eq!(s.get_range(&big, (57 * MIB as u64 - 1)..(57 * MIB as u64 + 1)).await.unwrap(), Bytes::from(vec![56u8, 57]));
    assert!(matches!(s.get(&big, 1000).await, Err(StorageError::TooLarge { .. })));
    s.delete(&big).await.unwrap();
    // A stream that fails mid-way aborts the upload: nothing is left.
    let failing = s.uri_for("inputs/failing.bin");
    let chunks = futures::stream::iter(
        (0..8).map(|i| if i < 7 { Ok(Bytes::from(vec![0u8; MIB])) } else { Err(std::io::Error::other("client went away")) }),
    );
    assert!(s.put_stream(&failing, chunks).await.is_err());
    assert!(matches!(s.get(&failing, u64::MAX).await, Err(StorageError::NotFound { .. })));

    // Wrong credentials: refused, and the error says what to check.
    for (key, secret) in [(KEY, "wrong-secret"), ("unknown-key", SECRET)] {
        let bad = storage(&endpoint, key, secret);
        let err = tokio::time::timeout(Duration::from_secs(60), bad.get(&b, 100)).await.unwrap().unwrap_err();
        let msg = err.to_string();
        eprintln!("wrong credentials ({key}): {msg}");
        assert!(!err.is_client_error(), "{msg}");
        assert!(msg.contains("access denied") && msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
        let err = bad.put(&s.uri_for("inputs/x"), Bytes::from_static(b"x")).await.unwrap_err();
        assert!(err.to_string().contains("access denied"), "{err}");
    }
    assert!(matches!(s.get(&s.uri_for("inputs/x"), 10).await, Err(StorageError::NotFound { .. })));
}
