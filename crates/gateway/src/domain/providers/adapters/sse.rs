//! An incremental reader of `text/event-stream` (the WHATWG server-sent events format), for
//! streamed chat answers: bytes go in as they arrive, whole events come out. Comments
//! (`: keep-alive`) are skipped, `data:` lines of one event are joined with newlines, and
//! an event ends at a blank line. CRLF line ends are accepted.

/// Longest line kept while waiting for its end: a provider that never ends a line must not
/// grow memory without bound.
const MAX_LINE: usize = 1 << 20;

/// One event: its `event:` name, if any, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Takes the next bytes; returns the events they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, &'static str> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + n;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line).map_err(|_| "the event stream is not UTF-8")?.to_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err("the event stream has a line without an end");
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            match self.data.take() {
                Some(data) => out.push(Event { event: self.event.take(), data }),
                None => self.event = None,
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.data).collect()
    }

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut p = Parser::default();
        assert!(p.push(b": keep-alive\n\nda").unwrap().is_empty());
        assert!(p.push(b"ta: {\"a\":").unwrap().is_empty());
        assert_eq!(data(p.push(b"1}\r\n\r\ndata: [DONE]\n").unwrap()), vec!["{\"a\":1}"]);
        assert_eq!(data(p.push(b"\n").unwrap()), vec!["[DONE]"]);
    }

    #[test]
    fn multi_line_data_is_joined_and_event_names_kept() {
        let mut p = Parser::default();
        let ev = p.push("event: error\ndata: one\ndata:two\nid: 3\n\n".as_bytes()).unwrap();
        assert_eq!(ev, vec![Event { event: Some("error".into()), data: "one\ntwo".into() }]);
    }

    #[test]
    fn a_line_that_never_ends_is_refused() {
        let mut p = Parser::default();
        assert!(p.push(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn multibyte_characters_split_between_chunks_survive() {
        let mut p = Parser::default();
        let bytes = "data: 猫\n\n".as_bytes();
        assert!(p.push(&bytes[..7]).unwrap().is_empty());
        assert_eq!(data(p.push(&bytes[7..]).unwrap()), vec!["猫"]);
    }
}
