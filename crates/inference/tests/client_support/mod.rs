//! A fake inference worker for the client tests: a tokio `TcpListener` and a minimal
//! HTTP/1.1 responder driven by a scripted handler. Hand-rolled (no axum in the client
//! feature) so tests control exactly how bytes hit the wire: split writes, a connection
//! dropped mid-body, a worker that never answers, a worker that goes away and comes back.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use purrify_inference::protocol::{FaceRestoration, GpuInfo, JobAccepted, JobResult, JobState, JobStatus, WorkerInfo};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn route(&self) -> (&str, &str) {
        (self.method.as_str(), self.path.as_str())
    }
}

/// What happens after the pieces of a streamed body are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Terminating chunk, then close: a complete response.
    Finish,
    /// Close without the terminating chunk: the client sees a truncated body.
    Drop,
    /// Keep the connection open and silent until the worker stops.
    Hold,
}

#[derive(Debug, Clone)]
pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Chunked body, one TCP write (and one HTTP chunk) per piece.
    Stream {
        status: u16,
        content_type: String,
        pieces: Vec<Vec<u8>>,
        after: After,
    },
    /// Read the request, never answer.
    Hang,
}

impl Reply {
    pub fn json(status: u16, value: impl Serialize) -> Self {
        Reply::Full { status, headers: vec![("Content-Type".into(), "application/json".into())], body: serde_json::to_vec(&value).unwrap() }
    }

    pub fn empty(status: u16) -> Self {
        Reply::Full { status, headers: vec![], body: vec![] }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Reply::Full { status, headers: vec![("Content-Type".into(), "text/plain".into())], body: body.into() }
    }

    pub fn busy(retry_after: &str) -> Self {
        Reply::Full {
            status: 429,
            headers: vec![("Retry-After".into(), retry_after.into())],
            body: br#"{"error":"busy","message":"worker at capacity"}"#.to_vec(),
        }
    }

    pub fn sse(pieces: &[&str], after: After) -> Self {
        Reply::Stream {
            status: 200,
            content_type: "text/event-stream".into(),
            pieces: pieces.iter().map(|p| p.as_bytes().to_vec()).collect(),
            after,
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct FakeWorker {
    addr: SocketAddr,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Request>>>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl FakeWorker {
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let server = serve(listener, handler.clone(), log.clone());
        Self { addr, handler, log, server: Mutex::new(Some(server)) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listening socket and every open connection, as a crashed pod would.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        *self.server.lock().unwrap() = Some(serve(listener, self.handler.clone(), self.log.clone()));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }
}

fn serve(listener: TcpListener, handler: Arc<Handler>, log: Arc<Mutex<Vec<Request>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Owned here so aborting the server also drops (and so closes) every connection.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    conns.spawn(connection(stream, handler.clone(), log.clone()));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

async fn connection(mut stream: TcpStream, handler: Arc<Handler>, log: Arc<Mutex<Vec<Request>>>) {
    let _ = stream.set_nodelay(true);
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    log.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let _ = write_reply(&mut stream, reply).await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, path, headers, body })
}

async fn write_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Full { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await
        }
        Reply::Stream { status, content_type, pieces, after } => {
            let head =
                format!("HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            stream.flush().await?;
            for piece in pieces {
                stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                stream.write_all(&piece).await?;
                stream.write_all(b"\r\n").await?;
                stream.flush().await?;
                // Gives the client a chance to read each piece on its own; the tests' outcome
                // does not depend on whether it does (the parser is split-invariant).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            match after {
                After::Finish => {
                    stream.write_all(b"0\r\n\r\n").await?;
                    stream.shutdown().await
                }
                After::Drop => Ok(()),
                After::Hold => std::future::pending().await,
            }
        }
        Reply::Hang => std::future::pending().await,
    }
}

pub fn worker_info(capacity: u32, in_flight: u32) -> WorkerInfo {
    WorkerInfo {
        version: "0.1.0-fake".into(),
        models: vec![],
        execution_provider: "cuda".into(),
        requested_execution_provider: "cuda".into(),
        gpu: Some(GpuInfo { name: "Fake T4".into(), utilization: 42.0, memory_used: 1 << 30, memory_total: 16 << 30 }),
        gpus: vec![],
        host: None,
        capacity,
        in_flight,
        ready: true,
    }
}

pub fn job_result(id: &str) -> JobResult {
    JobResult {
        output_uri: format!("file:///out/{id}.jpg"),
        content_type: "image/jpeg".into(),
        width: 1024,
        height: 768,
        bytes: 123_456,
        faces: 1,
        face_restoration: FaceRestoration::Applied,
        model: "realesrgan-x4plus".into(),
        elapsed_ms: 1500,
    }
}

pub fn accepted(id: &str) -> JobAccepted {
    JobAccepted { id: id.into(), state: JobState::Queued, existing: false }
}

pub fn status(id: &str, state: JobState, progress: f32) -> JobStatus {
    JobStatus {
        id: id.into(),
        state,
        progress,
        stage: (!state.is_terminal()).then(|| "tiles".to_owned()),
        result: (state == JobState::Succeeded).then(|| job_result(id)),
        error: None,
    }
}

/// `data:` payload of an SSE event as the worker writes it.
pub fn event_json(event: &purrify_inference::protocol::JobEvent) -> String {
    serde_json::to_string(event).unwrap()
}
