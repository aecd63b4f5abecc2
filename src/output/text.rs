//! [`Text`]: decoded output that shares the buffer it was read into. A chunk of output
//! goes to the log, the tail and the event handler; copying it for each would cost a
//! pass over every byte the agent prints (a large share of the time at pipe speed), so
//! they share one reference-counted buffer instead.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// Immutable UTF-8 text, cheap to clone (a reference count), derefs to `str`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` must be valid UTF-8 (checked by the caller).
    pub(crate) fn from_utf8_unchecked(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }

    /// The bytes, if they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks (or is given checked) UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The shared bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_its_bytes_and_reads_as_a_str() {
        let bytes = Bytes::from_static("héllo".as_bytes());
        let text = Text::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text, "héllo");
        assert_eq!(text.len(), 6);
        assert_eq!(text.as_bytes().as_ptr(), bytes.as_ptr());
        assert_eq!(format!("{text}|{text:?}"), "héllo|\"héllo\"");
        assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
    }
}
