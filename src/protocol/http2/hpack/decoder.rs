//! HPACK decoder (RFC 7541 §3, §5, §6): turns request header blocks from
//! the network into a [`HeaderList`], keeping the peer's dynamic table.
//!
//! Every byte here is attacker-controlled, so decoding never panics:
//! reads go through `get`, integers are capped at `u32`, string lengths are
//! checked against what is left of the block before anything is copied
//! (so allocation is bounded by the block size), and table sizes by the
//! limit we advertised. For speed, fields go straight into the list's
//! single buffer; only Huffman strings and names copied out of the dynamic
//! table pass through one reusable scratch buffer.

use super::huffman;
use super::table::{static_entry, DynamicTable, ENTRY_OVERHEAD, STATIC_LEN};
use super::{HeaderList, HpackError};

/// Decodes request header blocks; owns the peer-to-us dynamic table.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertised: the ceiling for the
    /// peer's dynamic table size updates.
    max_table_size: usize,
    /// Huffman-decoded strings and copied names of the current field.
    scratch: Vec<u8>,
}

/// Where a decoded string lives until the field is complete. Ranges, not
/// slices, so the scratch buffer can grow while an earlier string is held.
#[derive(Clone, Copy)]
enum Str {
    Static(&'static [u8]),
    Block(usize, usize),
    Scratch(usize, usize),
}

impl Str {
    #[inline]
    fn get<'a>(self, block: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        // The ranges were checked when the string was read; `get` keeps a
        // would-be bug from turning into a panic.
        match self {
            Str::Static(s) => s,
            Str::Block(s, e) => block.get(s..e).unwrap_or_default(),
            Str::Scratch(s, e) => scratch.get(s..e).unwrap_or_default(),
        }
    }
}

/// Collects fields into the caller's list while it stays under the limit.
struct Sink<'o> {
    out: &'o mut HeaderList,
    size: usize,
    max: usize,
}

impl Sink<'_> {
    #[inline]
    fn push(&mut self, name: &[u8], value: &[u8]) {
        self.size = self
            .size
            .saturating_add(name.len() + value.len() + ENTRY_OVERHEAD);
        // Once over, always over: later fields are dropped as well, but the
        // caller's block is still decoded to the end for the table's sake.
        if self.size <= self.max {
            self.out.push(name, value);
        }
    }

    fn overflowed(&self) -> bool {
        self.size > self.max
    }
}

impl Decoder {
    /// `max_table_size` is the SETTINGS_HEADER_TABLE_SIZE we advertise
    /// (4096 by default): the ceiling for size updates from the peer.
    pub fn new(max_table_size: usize) -> Self {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments
    /// joined) and appends its fields to `out`. Fails with
    /// `HeaderListTooLarge` once `out.size()` would exceed `max_list_size`,
    /// but only after decoding the whole block so the table stays in sync.
    pub fn decode(
        &mut self,
        block: &[u8],
        max_list_size: usize,
        out: &mut HeaderList,
    ) -> Result<(), HpackError> {
        let mut sink = Sink {
            size: out.size(),
            out,
            max: max_list_size,
        };
        let mut pos = 0;
        // §4.2: size updates are only allowed before the first field.
        let mut fields_started = false;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // §6.1 indexed field.
                let index = decode_int(block, &mut pos, 7)?;
                let (name, value) = self.lookup(index)?;
                sink.push(name, value);
            } else if first & 0x40 != 0 {
                // §6.2.1 literal with incremental indexing.
                self.literal(block, &mut pos, 6, true, &mut sink)?;
            } else if first & 0x20 != 0 {
                // §6.3 dynamic table size update.
                let size = decode_int(block, &mut pos, 5)?;
                if fields_started || size > self.max_table_size {
                    return Err(HpackError::InvalidTableSizeUpdate(size));
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // §6.2.2 without indexing (0000) and §6.2.3 never indexed
                // (0001): the same to a decoder that does not re-encode.
                self.literal(block, &mut pos, 4, false, &mut sink)?;
            }
            fields_started = true;
        }
        if sink.overflowed() {
            return Err(HpackError::HeaderListTooLarge);
        }
        Ok(())
    }

    /// A full (name, value) by HPACK index (§2.3.3).
    #[inline]
    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index <= STATIC_LEN {
            static_entry(index).ok_or(HpackError::InvalidIndex(index))
        } else {
            self.table
                .get(index - STATIC_LEN - 1)
                .ok_or(HpackError::InvalidIndex(index))
        }
    }

    /// A literal field (§6.2) whose first byte has a `prefix`-bit name index.
    fn literal(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
        index: bool,
        sink: &mut Sink<'_>,
    ) -> Result<(), HpackError> {
        let name_index = decode_int(block, pos, prefix)?;
        self.scratch.clear();
        let name = if name_index == 0 {
            read_string(block, pos, &mut self.scratch)?
        } else if name_index <= STATIC_LEN {
            match static_entry(name_index) {
                Some((name, _)) => Str::Static(name),
                None => return Err(HpackError::InvalidIndex(name_index)),
            }
        } else {
            // Copied out because inserting the new entry may evict the one
            // the name came from (§4.4).
            let (name, _) = self
                .table
                .get(name_index - STATIC_LEN - 1)
                .ok_or(HpackError::InvalidIndex(name_index))?;
            self.scratch.extend_from_slice(name);
            Str::Scratch(0, self.scratch.len())
        };
        let value = read_string(block, pos, &mut self.scratch)?;
        let name = name.get(block, &self.scratch);
        let value = value.get(block, &self.scratch);
        sink.push(name, value);
        if index {
            self.table.insert(name, value);
        }
        Ok(())
    }

    /// The current dynamic table, newest first (tests compare it with the
    /// encoder's mirror and with the RFC examples).
    #[cfg(test)]
    pub(crate) fn table(&self) -> &DynamicTable {
        &self.table
    }
}

/// §5.1 integer with an `n`-bit prefix (1..=8) starting at `block[*pos]`.
/// Values above `u32::MAX`, or that take more than five continuation bytes
/// to say so, are rejected.
#[inline]
pub(crate) fn decode_int(block: &[u8], pos: &mut usize, n: u8) -> Result<usize, HpackError> {
    let mask = ((1u16 << n) - 1) as u8;
    let first = *block.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let prefix = first & mask;
    if prefix < mask {
        return Ok(prefix as usize);
    }
    let mut value = prefix as u64;
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += ((byte & 0x7f) as u64) << shift;
        if value > u32::MAX as u64 {
            return Err(HpackError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// §5.2 string literal at `block[*pos]`: plain strings stay in the block,
/// Huffman ones are decoded onto the end of `scratch`.
#[inline]
fn read_string(block: &[u8], pos: &mut usize, scratch: &mut Vec<u8>) -> Result<Str, HpackError> {
    let huffman = block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_int(block, pos, 7)?;
    let start = *pos;
    if len > block.len() - start {
        return Err(HpackError::StringTooLong);
    }
    let end = start + len;
    *pos = end;
    let bytes = block.get(start..end).ok_or(HpackError::StringTooLong)?;
    if huffman {
        let from = scratch.len();
        huffman::decode(bytes, scratch)?;
        Ok(Str::Scratch(from, scratch.len()))
    } else {
        Ok(Str::Block(start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoder::encode_int;
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    type Fields = Vec<(String, String)>;

    fn fields(list: &HeaderList) -> Fields {
        list.iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Fields {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn table_of(d: &Decoder) -> Fields {
        d.table()
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut list = HeaderList::new();
        d.decode(block, usize::MAX, &mut list)?;
        Ok(fields(&list))
    }

    // ---- C.1 integers -------------------------------------------------

    #[test]
    fn c1_integers() {
        let cases: [(usize, u8, &[u8]); 3] = [
            (10, 5, &[0b0000_1010]),
            (1337, 5, &[0b0001_1111, 0b1001_1010, 0b0000_1010]),
            (42, 8, &[0b0010_1010]),
        ];
        for (value, n, bytes) in cases {
            let mut pos = 0;
            assert_eq!(decode_int(bytes, &mut pos, n), Ok(value));
            assert_eq!(pos, bytes.len());
            let mut enc = bytes::BytesMut::new();
            encode_int(&mut enc, value, n, 0);
            assert_eq!(&enc[..], bytes);
        }
        // The bits above the prefix belong to the representation, not the value.
        let mut pos = 0;
        assert_eq!(decode_int(&[0b1110_1010], &mut pos, 5), Ok(10));
    }

    #[test]
    fn integer_limits() {
        for value in [
            0usize,
            30,
            31,
            127,
            128,
            255,
            4096,
            65535,
            1 << 28,
            u32::MAX as usize,
        ] {
            for n in 1..=8 {
                let mut enc = bytes::BytesMut::new();
                encode_int(&mut enc, value, n, 0);
                let mut pos = 0;
                assert_eq!(decode_int(&enc, &mut pos, n), Ok(value), "{value} {n}");
                assert_eq!(pos, enc.len());
            }
        }
        // u32::MAX + 1 with a 7-bit prefix.
        let mut enc = bytes::BytesMut::new();
        encode_int(&mut enc, u32::MAX as usize + 1, 7, 0);
        assert_eq!(
            decode_int(&enc, &mut 0, 7),
            Err(HpackError::IntegerOverflow)
        );
        // Endless continuation bytes.
        let long = [0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            decode_int(&long, &mut 0, 7),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            decode_int(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut 0, 7),
            Err(HpackError::IntegerOverflow)
        );
        // Truncated continuation.
        assert_eq!(
            decode_int(&[0x7f, 0x80], &mut 0, 7),
            Err(HpackError::Truncated)
        );
        assert_eq!(decode_int(&[], &mut 0, 7), Err(HpackError::Truncated));
    }

    // ---- C.2 single representations ------------------------------------

    #[test]
    fn c2_1_literal_with_indexing() {
        let mut d = Decoder::new(4096);
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            pairs(&[("custom-key", "custom-header")])
        );
        assert_eq!(table_of(&d), pairs(&[("custom-key", "custom-header")]));
        assert_eq!(d.table().size(), 55);
    }

    #[test]
    fn c2_2_literal_without_indexing() {
        let mut d = Decoder::new(4096);
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            pairs(&[(":path", "/sample/path")])
        );
        assert_eq!(d.table().len(), 0);
    }

    #[test]
    fn c2_3_literal_never_indexed() {
        let mut d = Decoder::new(4096);
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            pairs(&[("password", "secret")])
        );
        assert_eq!(d.table().len(), 0);
    }

    #[test]
    fn c2_4_indexed() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(d.table().len(), 0);
    }

    // ---- C.3 / C.4 requests --------------------------------------------

    fn requests() -> [(Fields, Fields, usize); 3] {
        let r1 = pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]);
        let r2 = pairs(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ]);
        let r3 = pairs(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]);
        let t1 = pairs(&[(":authority", "www.example.com")]);
        let t2 = pairs(&[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ]);
        let t3 = pairs(&[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ]);
        [(r1, t1, 57), (r2, t2, 110), (r3, t3, 164)]
    }

    pub(crate) const C3: [&str; 3] = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    pub(crate) const C4: [&str; 3] = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];

    #[test]
    fn c3_requests_without_huffman() {
        let mut d = Decoder::new(4096);
        for (block, (want, table, size)) in C3.iter().zip(requests()) {
            assert_eq!(decode(&mut d, &hex(block)).unwrap(), want);
            assert_eq!(table_of(&d), table);
            assert_eq!(d.table().size(), size);
        }
    }

    #[test]
    fn c4_requests_with_huffman() {
        let mut d = Decoder::new(4096);
        for (block, (want, table, size)) in C4.iter().zip(requests()) {
            assert_eq!(decode(&mut d, &hex(block)).unwrap(), want);
            assert_eq!(table_of(&d), table);
            assert_eq!(d.table().size(), size);
        }
    }

    // ---- C.5 / C.6 responses with eviction -----------------------------

    pub(crate) fn responses() -> [(Fields, Fields, usize); 3] {
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let loc = "https://www.example.com";
        let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
        [
            (
                pairs(&[
                    (":status", "302"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", loc),
                ]),
                pairs(&[
                    ("location", loc),
                    ("date", date1),
                    ("cache-control", "private"),
                    (":status", "302"),
                ]),
                222,
            ),
            (
                pairs(&[
                    (":status", "307"),
                    ("cache-control", "private"),
                    ("date", date1),
                    ("location", loc),
                ]),
                pairs(&[
                    (":status", "307"),
                    ("location", loc),
                    ("date", date1),
                    ("cache-control", "private"),
                ]),
                222,
            ),
            (
                pairs(&[
                    (":status", "200"),
                    ("cache-control", "private"),
                    ("date", date2),
                    ("location", loc),
                    ("content-encoding", "gzip"),
                    ("set-cookie", cookie),
                ]),
                pairs(&[
                    ("set-cookie", cookie),
                    ("content-encoding", "gzip"),
                    ("date", date2),
                ]),
                215,
            ),
        ]
    }

    pub(crate) const C5: [&str; 3] = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
         3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
         7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
         6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ];
    pub(crate) const C6: [&str; 3] = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
         1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
         e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];

    #[test]
    fn c5_responses_without_huffman() {
        let mut d = Decoder::new(256);
        for (block, (want, table, size)) in C5.iter().zip(responses()) {
            assert_eq!(decode(&mut d, &hex(block)).unwrap(), want);
            assert_eq!(table_of(&d), table);
            assert_eq!(d.table().size(), size);
        }
    }

    #[test]
    fn c6_responses_with_huffman() {
        let mut d = Decoder::new(256);
        for (block, (want, table, size)) in C6.iter().zip(responses()) {
            assert_eq!(decode(&mut d, &hex(block)).unwrap(), want);
            assert_eq!(table_of(&d), table);
            assert_eq!(d.table().size(), size);
        }
    }

    // ---- errors ---------------------------------------------------------

    #[test]
    fn truncated_blocks() {
        for block in C3.iter().chain(&C4).chain(&C5).chain(&C6) {
            let block = hex(block);
            // Cutting a block anywhere either yields a valid shorter block
            // (at a field boundary) or an error; never a panic. Cutting
            // inside an integer reports Truncated.
            for cut in 0..block.len() {
                let mut d = Decoder::new(4096);
                let _ = decode(&mut d, &block[..cut]);
            }
        }
        let mut d = Decoder::new(4096);
        // A literal whose name index is present but no value length.
        assert_eq!(decode(&mut d, &hex("41")), Err(HpackError::Truncated));
        // A multi-byte index cut short.
        assert_eq!(decode(&mut d, &hex("ff")), Err(HpackError::Truncated));
        // A literal name with no value at all.
        assert_eq!(decode(&mut d, &hex("4001 61")), Err(HpackError::Truncated));
        // A string cut short.
        assert_eq!(
            decode(&mut d, &hex("4003 6161")),
            Err(HpackError::StringTooLong)
        );
    }

    #[test]
    fn invalid_indices() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode(&mut d, &hex("80")), Err(HpackError::InvalidIndex(0)));
        assert_eq!(
            decode(&mut d, &hex("be")),
            Err(HpackError::InvalidIndex(62))
        );
        assert_eq!(
            decode(&mut d, &hex("7f00 0161")),
            Err(HpackError::InvalidIndex(63))
        );
        assert_eq!(
            decode(&mut d, &hex("0f2f 0161")),
            Err(HpackError::InvalidIndex(62))
        );
        assert_eq!(
            decode(&mut d, &hex("bd")).unwrap(),
            pairs(&[("www-authenticate", "")])
        );
        // Once an entry exists, 62 is valid and 63 is not.
        decode(&mut d, &hex("4001 6101 62")).unwrap();
        assert_eq!(decode(&mut d, &hex("be")).unwrap(), pairs(&[("a", "b")]));
        assert_eq!(
            decode(&mut d, &hex("bf")),
            Err(HpackError::InvalidIndex(63))
        );
        // Huge index.
        assert_eq!(
            decode(&mut d, &hex("ff ffff ffff 07")),
            Err(HpackError::InvalidIndex((1 << 31) + 126))
        );
    }

    #[test]
    fn integer_overflow_in_block() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("ff ffff ffff 7f")),
            Err(HpackError::IntegerOverflow)
        );
        assert_eq!(
            decode(&mut d, &hex("ff ffff ffff 0f")),
            Err(HpackError::IntegerOverflow)
        );
        // String length overflow.
        assert_eq!(
            decode(&mut d, &hex("40 ff ffff ffff 7f")),
            Err(HpackError::IntegerOverflow)
        );
    }

    #[test]
    fn string_length_beyond_block() {
        let mut d = Decoder::new(4096);
        // Length 2^31 with nothing behind it: rejected before any allocation.
        assert_eq!(
            decode(&mut d, &hex("40 ff 81 ff ff ff 07")),
            Err(HpackError::StringTooLong)
        );
        assert_eq!(
            decode(&mut d, &hex("41 85 6161")),
            Err(HpackError::StringTooLong)
        );
        assert_eq!(d.table().len(), 0);
    }

    #[test]
    fn table_size_updates() {
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex(C3[0])).unwrap();
        assert_eq!(d.table().len(), 1);
        // Several updates in a row at the start; 0 empties the table.
        assert_eq!(
            decode(&mut d, &hex("20 3f e1 1f 82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(d.table().max_size(), 4096);
        assert_eq!(d.table().len(), 0);
        // Up to exactly the advertised maximum.
        assert!(decode(&mut d, &hex("3f e1 1f")).is_ok());
        // Above it.
        assert_eq!(
            decode(&mut d, &hex("3f e2 1f")),
            Err(HpackError::InvalidTableSizeUpdate(4097))
        );
        // After a field.
        assert_eq!(
            decode(&mut d, &hex("82 20")),
            Err(HpackError::InvalidTableSizeUpdate(0))
        );
        // A lower limit evicts.
        let mut d = Decoder::new(4096);
        decode(&mut d, &hex(C3[0])).unwrap();
        decode(&mut d, &hex(C3[1])).unwrap();
        assert_eq!(d.table().size(), 110);
        decode(&mut d, &hex("3f 23")).unwrap(); // 31 + 35 = 66
        assert_eq!(d.table().max_size(), 66);
        assert_eq!(table_of(&d), pairs(&[("cache-control", "no-cache")]));
    }

    #[test]
    fn header_list_too_large_keeps_table_in_sync() {
        let mut d = Decoder::new(4096);
        let mut list = HeaderList::new();
        // The first two fields fit in 100 (42 + 43), the rest do not.
        let r = d.decode(&hex(C3[0]), 100, &mut list);
        assert_eq!(r, Err(HpackError::HeaderListTooLarge));
        assert_eq!(list.len(), 2);
        assert!(list.size() <= 100);
        // The literal after the limit still went into the table...
        assert_eq!(table_of(&d), pairs(&[(":authority", "www.example.com")]));
        // ...so the next block, which refers to it, decodes.
        let want = requests()[1].0.clone();
        assert_eq!(decode(&mut d, &hex(C3[1])).unwrap(), want);
        // The limit counts what `out` already holds.
        let mut list = HeaderList::new();
        list.push(b"x", &[b'y'; 60]);
        assert_eq!(
            d.decode(&hex("82"), 100, &mut list),
            Err(HpackError::HeaderListTooLarge)
        );
        assert_eq!(list.len(), 1);
        let mut list = HeaderList::new();
        assert_eq!(d.decode(&hex("82"), 42, &mut list), Ok(()));
    }

    #[test]
    fn huffman_errors_in_block() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, &hex("41 84 ffff ffff")),
            Err(HpackError::InvalidHuffman)
        );
        assert_eq!(
            decode(&mut d, &hex("41 81 00")),
            Err(HpackError::InvalidHuffman)
        );
        assert_eq!(
            decode(&mut d, &hex("41 82 1fff")),
            Err(HpackError::InvalidHuffman)
        );
        assert_eq!(
            decode(&mut d, &hex("41 81 1f")).unwrap(),
            pairs(&[(":authority", "a")])
        );
        // Empty Huffman string.
        assert_eq!(
            decode(&mut d, &hex("01 80")).unwrap(),
            pairs(&[(":authority", "")])
        );
    }

    #[test]
    fn dynamic_name_survives_its_own_eviction() {
        // Table of 60: one entry "aaaa: bbbb" (40). A literal with indexed
        // name 62 and a value that forces the eviction of entry 62 itself.
        let mut d = Decoder::new(60);
        decode(&mut d, &hex("4004 6161 6161 0462 6262 62")).unwrap();
        assert_eq!(
            decode(&mut d, &hex("7e 0463 6363 63")).unwrap(),
            pairs(&[("aaaa", "cccc")])
        );
        assert_eq!(table_of(&d), pairs(&[("aaaa", "cccc")]));
    }

    // ---- fuzz -----------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let seeds: Vec<Vec<u8>> = C3
            .iter()
            .chain(&C4)
            .chain(&C5)
            .chain(&C6)
            .map(|s| hex(s))
            .chain([
                hex("3fe11f 82 20"),
                hex("ff ffff ffff 0f"),
                hex("40 ff 81 ff ff ff 07"),
            ])
            .collect();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut decoder = Decoder::new(4096);
        let mut small = Decoder::new(128);
        let mut list = HeaderList::new();
        let mut ok = 0;
        for round in 0..100_000 {
            let block: Vec<u8> = match round % 3 {
                // Pure noise, short.
                0 => (0..rng.below(48)).map(|_| rng.next() as u8).collect(),
                // A valid block with a few bytes mutated, inserted or cut.
                1 => {
                    let mut b = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(b.len() + 1);
                        match rng.below(4) {
                            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
                            1 if at < b.len() => b[at] = rng.next() as u8,
                            2 => b.insert(at, rng.next() as u8),
                            _ => b.truncate(at),
                        }
                    }
                    b
                }
                // Noise biased towards representation prefixes and Huffman bits.
                _ => (0..rng.below(64))
                    .map(|_| match rng.below(4) {
                        0 => 0x80 | rng.next() as u8,
                        1 => 0x40 | (rng.next() as u8 & 0x3f),
                        2 => 0xff,
                        _ => rng.next() as u8 & 0x8f,
                    })
                    .collect(),
            };
            list.clear();
            let limit = if round % 7 == 0 { 64 } else { 1 << 16 };
            if decoder.decode(&block, limit, &mut list).is_ok() {
                ok += 1;
            }
            assert!(decoder.table().size() <= decoder.table().max_size());
            list.clear();
            let _ = small.decode(&block, limit, &mut list);
            assert!(small.table().size() <= 128);
            // A connection error ends the connection: start over sometimes.
            if round % 101 == 0 {
                decoder = Decoder::new(4096);
            }
        }
        assert!(ok > 1000, "fuzz reached few valid blocks: {ok}");
    }
}
