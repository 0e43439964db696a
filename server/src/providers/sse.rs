//! Server-sent events framing for upstream streams: bytes in, complete `data:` payloads
//! out, as soon as each event's blank line arrives. Lines are bounded so a hostile or
//! broken upstream cannot make the gateway buffer without limit.

use bytes::{Buf, BytesMut};

/// Longest SSE line accepted from an upstream.
pub const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    data: String,
    has_data: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

impl SseDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event's data (multi-line data joined with `\n`), if one is ready.
    pub fn next_event(&mut self) -> Result<Option<String>, LineTooLong> {
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    return Err(LineTooLong);
                }
                return Ok(None);
            };
            if nl > MAX_LINE {
                return Err(LineTooLong);
            }
            let mut line = &self.buf[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.buf.advance(nl + 1);
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(std::mem::take(&mut self.data)));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(v);
                self.has_data = true;
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing OpenAI streams need.
        }
    }

    /// At end of input: an event the upstream did not terminate with a blank line.
    pub fn finish(&mut self) -> Option<String> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest);
            if let Some(v) = line.trim_end_matches(['\r', '\n']).strip_prefix("data:") {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                self.has_data = true;
            }
        }
        if self.has_data {
            self.has_data = false;
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_crlf() {
        let mut d = SseDecoder::default();
        d.push(b"data: {\"a\"");
        assert_eq!(d.next_event().unwrap(), None);
        d.push(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n");
        assert_eq!(d.next_event().unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(d.next_event().unwrap().as_deref(), Some("x\ny"));
        assert_eq!(d.next_event().unwrap().as_deref(), Some("[DONE]"));
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn unterminated_last_event_and_long_lines() {
        let mut d = SseDecoder::default();
        d.push(b"data: tail");
        assert_eq!(d.next_event().unwrap(), None);
        assert_eq!(d.finish().as_deref(), Some("tail"));
        let mut d = SseDecoder::default();
        d.push(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(d.next_event(), Err(LineTooLong));
    }
}
