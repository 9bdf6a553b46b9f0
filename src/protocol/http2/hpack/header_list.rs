//! A decoded header list stored in one buffer: two allocations per request
//! whatever the number of fields, instead of two per field.

/// Decoded header fields in arrival order. Names and values are raw bytes
/// (HPACK does not promise UTF-8).
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    buf: Vec<u8>,
    /// (name start, name end, value end) offsets into `buf`; a value starts
    /// where its name ends.
    fields: Vec<(u32, u32, u32)>,
    /// RFC 7541 §4.1 size: sum of name + value + 32 per field.
    size: usize,
}

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for a typical request's fields, so decoding does not regrow.
    pub fn with_capacity(bytes: usize, fields: usize) -> Self {
        HeaderList {
            buf: Vec::with_capacity(bytes),
            fields: Vec::with_capacity(fields),
            size: 0,
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.size = 0;
    }

    /// Inlined: it is the decoder's per-field hot path.
    #[inline]
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let mid = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        let end = self.buf.len() as u32;
        self.fields.push((start, mid, end));
        self.size += name.len() + value.len() + 32;
    }

    /// The header list size as RFC 7541 §4.1 defines it.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().map(move |&(s, m, e)| {
            (
                &self.buf[s as usize..m as usize],
                &self.buf[m as usize..e as usize],
            )
        })
    }

    /// The first value for `name` (names are lower-case in HTTP/2).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_and_size() {
        let mut h = HeaderList::new();
        h.push(b":path", b"/cache.Cache/Get");
        h.push(b"te", b"trailers");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get(b":path"), Some(&b"/cache.Cache/Get"[..]));
        assert_eq!(h.get(b"te"), Some(&b"trailers"[..]));
        assert_eq!(h.get(b"x"), None);
        assert_eq!(h.size(), 5 + 16 + 32 + 2 + 8 + 32);
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.size(), 0);
    }
}
