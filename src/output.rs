//! Output handling shared by every stream: the bounded in-memory tail of a stream,
//! a streaming UTF-8 decoder that never splits a character between chunks, and a
//! bounded line splitter for line-based protocols.

/// The newest `capacity` bytes of a stream: a ring buffer that grows as output
/// arrives, up to `capacity`.
#[derive(Debug)]
pub struct TailBuffer {
    bytes: Vec<u8>,
    /// Once full, where the oldest byte is (and the next write goes).
    head: usize,
    capacity: usize,
    total: u64,
}

impl TailBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::new(),
            head: 0,
            capacity,
            total: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.capacity)..];
        let room = self.capacity - self.bytes.len();
        if room > 0 {
            let now = chunk.len().min(room);
            self.bytes.extend_from_slice(&chunk[..now]);
            self.write_ring(&chunk[now..]);
        } else {
            self.write_ring(chunk);
        }
    }

    /// Overwrites the oldest bytes of a full buffer.
    fn write_ring(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let first = chunk.len().min(self.capacity - self.head);
        self.bytes[self.head..self.head + first].copy_from_slice(&chunk[..first]);
        self.bytes[..chunk.len() - first].copy_from_slice(&chunk[first..]);
        self.head = (self.head + chunk.len()) % self.capacity;
    }

    /// Bytes ever pushed, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The kept bytes as text. A character cut at the front by the bound is dropped;
    /// invalid bytes become U+FFFD.
    pub fn to_text(&self) -> String {
        let mut all = Vec::with_capacity(self.bytes.len());
        all.extend_from_slice(&self.bytes[self.head..]);
        all.extend_from_slice(&self.bytes[..self.head]);
        let cut = self.total > all.len() as u64;
        let start = if cut {
            all.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count()
        } else {
            0
        };
        match String::from_utf8(all) {
            Ok(s) if start == 0 => s,
            Ok(s) => s[start..].to_owned(),
            Err(e) => String::from_utf8_lossy(&e.into_bytes()[start..]).into_owned(),
        }
    }
}

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

    /// Like [`Utf8Decoder::decode`], reusing `chunk`'s allocation when it is valid
    /// UTF-8 on its own (the usual case), instead of copying it.
    pub fn decode_owned(&mut self, chunk: Vec<u8>) -> String {
        if self.pending.is_empty() && std::str::from_utf8(&chunk).is_ok() {
            // SAFETY: just checked.
            return unsafe { String::from_utf8_unchecked(chunk) };
        }
        self.decode(&chunk)
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
    fn tail_keeps_the_newest_bytes() {
        let mut t = TailBuffer::new(5);
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.to_text(), "cdefg");
        t.push(b"0123456789");
        assert_eq!(t.to_text(), "56789");
        assert_eq!(t.total_bytes(), 17);
    }

    #[test]
    fn tail_drops_a_character_cut_by_the_bound() {
        let mut t = TailBuffer::new(4);
        t.push("xé€".as_bytes()); // x(1) é(2) €(3): the last 4 bytes cut é in half
        assert_eq!(t.to_text(), "€");
    }

    #[test]
    fn tail_wraps_many_times_in_odd_pieces() {
        let mut t = TailBuffer::new(7);
        let text: String = (0..200).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let mut at = 0;
        for size in [1, 3, 5, 7, 2, 11, 4, 6].iter().cycle() {
            if at >= text.len() {
                break;
            }
            let end = (at + size).min(text.len());
            t.push(&text.as_bytes()[at..end]);
            at = end;
            assert_eq!(t.to_text(), text[end.saturating_sub(7)..end]);
        }
    }

    #[test]
    fn tail_with_zero_capacity_keeps_nothing() {
        let mut t = TailBuffer::new(0);
        t.push(b"abc");
        assert_eq!(t.to_text(), "");
        assert_eq!(t.total_bytes(), 3);
    }

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
    fn decode_owned_agrees_with_decode() {
        let mut a = Utf8Decoder::default();
        let mut b = Utf8Decoder::default();
        for chunk in [&b"plain "[..], b"caf\xc3", b"\xa9 ok", b"bad\xff"] {
            assert_eq!(a.decode_owned(chunk.to_vec()), b.decode(chunk));
        }
        assert_eq!(a.finish(), b.finish());
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
