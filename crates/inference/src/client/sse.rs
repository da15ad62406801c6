//! Incremental `text/event-stream` parser (the WHATWG "interpreting an event stream" rules).
//!
//! Fed raw body chunks as they arrive: chunk boundaries fall anywhere (inside a UTF-8
//! sequence, between the CR and LF of one line ending, in the middle of an event), so lines
//! are cut on bytes and decoded only once complete.

use std::time::Duration;

use super::ClientError;

/// One dispatched event. `event` is `message` when the stream gave no `event:` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    /// The last event id seen on the stream, as the spec carries it over between events.
    pub id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Generous for our events (a few hundred bytes); only there to bound a misbehaving peer.
const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Prefix of `buf` already searched for a line end, so a long line arriving in many small
    /// chunks is not rescanned from its start each time.
    scanned: usize,
    /// The previous chunk ended in CR: an LF at the start of the next one is the same line end.
    skip_lf: bool,
    /// The optional BOM is only allowed at the very start of the stream.
    bom_checked: bool,
    event: String,
    data: String,
    last_id: Option<String>,
    retry: Option<Duration>,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            skip_lf: false,
            bom_checked: false,
            event: String::new(),
            data: String::new(),
            last_id: None,
            retry: None,
            max_event_bytes,
        }
    }

    /// Reconnection delay the server asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Consumes one chunk and returns the events it completed, in order.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, ClientError> {
        let mut out = Vec::new();
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        if !self.bom_checked {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(out);
            }
            self.bom_checked = true;
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
        }

        let buf = std::mem::take(&mut self.buf);
        let mut start = 0;
        let mut from = self.scanned;
        let mut result = Ok(());
        while let Some(off) = buf[from..].iter().position(|&b| b == b'\r' || b == b'\n') {
            let end = from + off;
            let mut next = end + 1;
            if buf[end] == b'\r' {
                if next < buf.len() {
                    if buf[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            let line = String::from_utf8_lossy(&buf[start..end]);
            if let Err(e) = self.line(&line, &mut out) {
                result = Err(e);
                break;
            }
            start = next;
            from = next;
        }
        self.buf = buf;
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        result?;
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            return Err(ClientError::Protocol(format!("server-sent event larger than {} bytes", self.max_event_bytes)));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) -> Result<(), ClientError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() > self.max_event_bytes {
                    return Err(ClientError::Protocol(format!("server-sent event larger than {} bytes", self.max_event_bytes)));
                }
                self.data.push_str(value);
                self.data.push('\n');
            }
            // The spec ignores ids with NUL so a hostile id cannot truncate a Last-Event-ID header.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        self.data.pop();
        let event = if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
        out.push(SseEvent { event, data: std::mem::take(&mut self.data), id: self.last_id.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into(), id: None }
    }

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        SseParser::new().feed(input).unwrap()
    }

    /// Every way of cutting `input` in two, plus byte by byte, must give the same events.
    fn assert_split_invariant(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_all(input), expected, "whole");
        for cut in 0..=input.len() {
            let mut p = SseParser::new();
            let mut got = p.feed(&input[..cut]).unwrap();
            got.extend(p.feed(&input[cut..]).unwrap());
            assert_eq!(got, expected, "cut at {cut}");
        }
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for b in input {
            got.extend(p.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, expected, "byte by byte");
    }

    #[test]
    fn named_events_with_json_data() {
        let input = b"event: progress\ndata: {\"p\":0.5}\n\nevent: done\ndata: {}\n\n";
        assert_split_invariant(input, &[ev("progress", "{\"p\":0.5}"), ev("done", "{}")]);
    }

    #[test]
    fn crlf_lf_and_lone_cr_line_endings_are_equivalent() {
        let expected = [ev("progress", "a"), ev("done", "b")];
        assert_split_invariant(b"event: progress\r\ndata: a\r\n\r\nevent: done\r\ndata: b\r\n\r\n", &expected);
        assert_split_invariant(b"event: progress\rdata: a\r\revent: done\rdata: b\r\r", &expected);
        assert_split_invariant(b"event: progress\r\ndata: a\n\revent: done\ndata: b\r\n\n", &expected);
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end_not_a_blank_line() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: x\r").unwrap().is_empty());
        // Were the LF taken as a second line end, the event would dispatch here.
        assert!(p.feed(b"\n").unwrap().is_empty());
        assert_eq!(p.feed(b"\r\n").unwrap(), [ev("message", "x")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        assert_split_invariant(b"data: first\ndata: second\ndata\ndata:third\n\n", &[ev("message", "first\nsecond\n\nthird")]);
    }

    #[test]
    fn comments_and_keep_alives_dispatch_nothing() {
        assert_split_invariant(b": keep-alive\n\n:\n\nevent: done\n: inside an event\ndata: 1\n\n", &[ev("done", "1")]);
    }

    #[test]
    fn event_without_data_is_dropped_and_its_name_forgotten() {
        assert_split_invariant(b"event: progress\n\ndata: x\n\n", &[ev("message", "x")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped_and_unknown_fields_ignored() {
        assert_split_invariant(b"data:  two spaces\nfoo: bar\nevent:done\n\n", &[ev("done", " two spaces")]);
    }

    #[test]
    fn incomplete_event_at_end_of_stream_is_not_dispatched() {
        assert!(parse_all(b"event: done\ndata: {}\n").is_empty());
        assert!(parse_all(b"data: {}").is_empty());
    }

    #[test]
    fn utf8_split_inside_a_character_survives() {
        let input = "data: tête à tête ✓\n\n".as_bytes();
        assert_split_invariant(input, &[ev("message", "tête à tête ✓")]);
    }

    #[test]
    fn leading_bom_is_skipped_even_when_split() {
        let input = b"\xEF\xBB\xBFdata: x\n\n";
        assert_split_invariant(input, &[ev("message", "x")]);
    }

    #[test]
    fn id_carries_over_and_retry_is_remembered() {
        let mut p = SseParser::new();
        let got = p.feed(b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\nid\ndata: c\n\nretry: soon\n").unwrap();
        let ids: Vec<_> = got.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, [Some("7".into()), Some("7".into()), Some(String::new())]);
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(p.last_event_id(), Some(""));
    }

    #[test]
    fn oversized_event_is_a_protocol_error() {
        let mut p = SseParser::with_max_event_bytes(16);
        assert!(p.feed(b"data: 0123456789").is_ok());
        assert!(matches!(p.feed(b"0123456789"), Err(ClientError::Protocol(_))));
        let mut p = SseParser::with_max_event_bytes(16);
        assert!(matches!(p.feed(b"data: 0123456789\ndata: 0123456789\n"), Err(ClientError::Protocol(_))));
    }
}
