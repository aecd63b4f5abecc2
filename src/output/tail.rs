//! [`TailBuffer`]: the newest bytes of a stream, kept in memory for the session's
//! status. Large reads are kept by reference to the buffer they were read into (the
//! log and the event share it too), small ones are copied together into segments of
//! their own, so a flood costs no copy and a trickle of short lines no per-line
//! allocation.

use std::collections::VecDeque;

use bytes::Bytes;

/// A piece at least this big is kept by reference; a smaller one is copied.
const SHARE_MIN: usize = 16 * 1024;

/// Copied pieces are gathered into segments of about this size.
const SEGMENT: usize = 16 * 1024;

/// The newest `capacity` bytes of a stream. It holds at most `capacity` bytes plus
/// the piece that straddles the bound; in memory, up to twice that, as a shared piece
/// keeps its whole read buffer (which the reader only hands over at least half full).
#[derive(Debug)]
pub struct TailBuffer {
    /// Closed segments, oldest first.
    segments: VecDeque<Bytes>,
    /// The segment small pieces are copied into, after the closed ones.
    open: Vec<u8>,
    /// Bytes in `segments` and `open`.
    kept: usize,
    capacity: usize,
    total: u64,
}

impl TailBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            segments: VecDeque::new(),
            open: Vec::new(),
            kept: 0,
            capacity,
            total: 0,
        }
    }

    /// Keeps a copy of `chunk`'s newest bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.capacity)..];
        if chunk.is_empty() {
            return;
        }
        if !self.open.is_empty() && self.open.len() + chunk.len() > SEGMENT {
            self.close_open();
        }
        self.open.extend_from_slice(chunk);
        self.kept += chunk.len();
        self.trim();
    }

    /// Keeps `chunk` by reference when it is large, else a copy of it.
    pub fn push_shared(&mut self, chunk: Bytes) {
        if chunk.len() < SHARE_MIN {
            return self.push(&chunk);
        }
        self.total += chunk.len() as u64;
        self.close_open();
        self.kept += chunk.len();
        self.segments.push_back(chunk);
        self.trim();
    }

    fn close_open(&mut self) {
        if !self.open.is_empty() {
            self.segments.push_back(Bytes::from(std::mem::take(&mut self.open)));
        }
    }

    /// Drops the oldest segments that lie wholly before the newest `capacity` bytes,
    /// and the front of the open segment when it is all there is.
    fn trim(&mut self) {
        while let Some(front) = self.segments.front() {
            if self.kept - front.len() < self.capacity {
                break;
            }
            self.kept -= front.len();
            self.segments.pop_front();
        }
        if self.segments.is_empty() && self.open.len() > self.capacity {
            let excess = self.open.len() - self.capacity;
            self.open.drain(..excess);
            self.kept -= excess;
        }
    }

    /// Bytes ever pushed, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The kept bytes as text. A character cut at the front by the bound is dropped;
    /// invalid bytes become U+FFFD.
    pub fn to_text(&self) -> String {
        let keep = self.kept.min(self.capacity);
        let mut skip = self.kept - keep;
        let mut all = Vec::with_capacity(keep);
        for piece in self.segments.iter().map(|b| &b[..]).chain(std::iter::once(&self.open[..])) {
            let from = skip.min(piece.len());
            skip -= from;
            all.extend_from_slice(&piece[from..]);
        }
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
        t.push_shared(Bytes::from(vec![b'x'; 40_000]));
        assert_eq!(t.to_text(), "");
        assert_eq!(t.total_bytes(), 40_003);
    }

    #[test]
    fn shared_and_copied_pieces_keep_their_order_and_the_bound() {
        let capacity = 100_000;
        let mut t = TailBuffer::new(capacity);
        let mut all = Vec::new();
        for i in 0..300u32 {
            // Big pieces (kept by reference) among small ones (copied).
            let size = if i % 7 == 0 { 20_000 + i as usize } else { 1 + (i as usize * 37) % 900 };
            let piece: Vec<u8> = (0..size).map(|j| b'a' + ((i as usize + j) % 26) as u8).collect();
            all.extend_from_slice(&piece);
            if i % 2 == 0 {
                t.push_shared(Bytes::from(piece));
            } else {
                t.push(&piece);
            }
            let expected = &all[all.len().saturating_sub(capacity)..];
            assert_eq!(t.to_text().as_bytes(), expected, "after piece {i}");
            // At most the bound plus the piece that straddles it.
            assert!(t.kept <= capacity + 20_300, "kept {} after piece {i}", t.kept);
        }
        assert_eq!(t.total_bytes(), all.len() as u64);
    }

    #[test]
    fn a_shared_piece_is_not_copied() {
        let mut t = TailBuffer::new(1 << 20);
        let piece = Bytes::from(vec![b'z'; 64 * 1024]);
        t.push_shared(piece.clone());
        assert_eq!(t.segments.back().map(|b| b.as_ptr()), Some(piece.as_ptr()));
    }
}
