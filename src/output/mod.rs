//! Output handling shared by every stream: the bounded in-memory tail of a stream,
//! a streaming UTF-8 decoder that never splits a character between chunks, the
//! shared text it produces, and a bounded line splitter for line-based protocols.

mod tail;
mod text;

use bytes::Bytes;

pub use tail::TailBuffer;
pub use text::Text;

/// Decodes a byte stream chunk by chunk. A character split across chunks is held
/// back until its end arrives; bytes that can never form a character become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    pub fn decode(&mut self, chunk: &[u8]) -> String {
        let joined;
        let input: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY: from_utf8 just said these bytes are valid.
                    out.push_str(unsafe { std::str::from_utf8_unchecked(valid) });
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Like [`Utf8Decoder::decode`], sharing `chunk` (or the valid part before an
    /// unfinished last character) instead of copying it when there is nothing pending
    /// and no invalid byte in it.
    pub fn decode_bytes(&mut self, chunk: Bytes) -> Text {
        if self.pending.is_empty() {
            match std::str::from_utf8(&chunk) {
                Ok(_) => return Text::from_utf8_unchecked(chunk),
                Err(e) if e.error_len().is_none() => {
                    let valid = e.valid_up_to();
                    self.pending = chunk[valid..].to_vec();
                    return Text::from_utf8_unchecked(chunk.slice(..valid));
                }
                Err(_) => {}
            }
        }
        Text::from(self.decode(&chunk))
    }

    /// The start of a character the last chunk cut (at most 3 bytes). A reader that
    /// reads the next chunk right after these bytes, and then takes them
    /// ([`Utf8Decoder::take_pending`]), lets [`Utf8Decoder::decode_bytes`] share the
    /// whole buffer.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Takes the pending bytes: the caller now puts them in front of the next chunk.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// At end of stream: an unfinished character is replaced.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

/// What a [`LineSplitter`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line without its `\n` (and without a `\r` before it).
    Complete(&'a [u8]),
    /// A line that grew past the limit; its bytes are dropped as they arrive.
    /// Reported once per overlong line, with the length seen so far.
    TooLong(usize),
}

/// Splits a byte stream into lines, holding at most `limit` bytes of an unfinished
/// line. A longer line is reported as [`Line::TooLong`] and skipped to its end.
#[derive(Debug)]
pub struct LineSplitter {
    partial: Vec<u8>,
    limit: usize,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(limit: usize) -> Self {
        Self {
            partial: Vec::new(),
            limit,
            skipping: false,
        }
    }

    /// Feeds a chunk; `on_line` gets each line it completes, in order.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(Line<'_>)) {
        while !chunk.is_empty() {
            let newline = memchr(b'\n', chunk);
            let (piece, rest) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..]),
                None => (chunk, &chunk[chunk.len()..]),
            };
            if self.skipping {
                if newline.is_some() {
                    self.skipping = false;
                }
            } else if self.partial.len() + piece.len() > self.limit {
                on_line(Line::TooLong(self.partial.len() + piece.len()));
                self.partial = Vec::new();
                self.skipping = newline.is_none();
            } else if newline.is_some() {
                if self.partial.is_empty() {
                    on_line(Line::Complete(trim_cr(piece)));
                } else {
                    self.partial.extend_from_slice(piece);
                    on_line(Line::Complete(trim_cr(&self.partial)));
                    self.partial.clear();
                }
            } else {
                self.partial.extend_from_slice(piece);
            }
            chunk = rest;
        }
    }

    /// At end of stream: the unfinished last line, if any.
    pub fn finish(&mut self, mut on_line: impl FnMut(Line<'_>)) {
        if !self.partial.is_empty() {
            on_line(Line::Complete(trim_cr(&self.partial)));
        }
        self.partial = Vec::new();
        self.skipping = false;
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_joins_characters_split_between_chunks() {
        let mut d = Utf8Decoder::default();
        let bytes = "añ€😀".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&d.decode(std::slice::from_ref(b)));
        }
        out.push_str(&d.finish());
        assert_eq!(out, "añ€😀");
    }

    #[test]
    fn decode_bytes_agrees_with_decode_and_shares_valid_chunks() {
        let mut a = Utf8Decoder::default();
        let mut b = Utf8Decoder::default();
        for chunk in [&b"plain "[..], b"caf\xc3", b"\xa9 ok", b"bad\xff", b"\xe2\x82", b"\xac"] {
            assert_eq!(a.decode_bytes(Bytes::copy_from_slice(chunk)), b.decode(chunk));
        }
        assert_eq!(a.finish(), b.finish());
        let chunk = Bytes::from_static("naïve €".as_bytes());
        let text = a.decode_bytes(chunk.slice(..chunk.len() - 1));
        assert_eq!(text, "naïve ");
        assert_eq!(text.as_bytes().as_ptr(), chunk.as_ptr());
        // The cut character, put in front of the rest, completes it.
        let mut next = a.take_pending();
        next.extend_from_slice(&chunk[chunk.len() - 1..]);
        assert_eq!(a.decode_bytes(Bytes::from(next)), "€");
    }

    #[test]
    fn decoder_replaces_invalid_bytes_and_goes_on() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.decode(b"a\xffb\xc3"), "a\u{fffd}b");
        assert_eq!(d.decode(b"("), "\u{fffd}(");
        assert_eq!(d.decode(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn lines_across_chunks_and_too_long_lines() {
        let mut s = LineSplitter::new(8);
        let mut seen = Vec::new();
        let mut collect = |l: Line<'_>| {
            seen.push(match l {
                Line::Complete(b) => String::from_utf8(b.to_vec()).unwrap(),
                Line::TooLong(n) => format!("<too long {n}>"),
            })
        };
        s.feed(b"ab", &mut collect);
        s.feed(b"c\r\nshort\n0123456", &mut collect);
        s.feed(b"789abc", &mut collect);
        s.feed(b"def\nnext\nend", &mut collect);
        s.finish(&mut collect);
        assert_eq!(seen, ["abc", "short", "<too long 13>", "next", "end"]);
    }
}
