//! HPACK encoder (RFC 7541 §6) for our response headers and trailers; owns
//! the mirror of the peer decoder's dynamic table.
//!
//! The fields it sees are few and repetitive (`:status`, `content-type`,
//! `grpc-status`...), so the strategy is simple: an exact match in the
//! static or dynamic table is one indexed byte; otherwise a field the
//! caller marked `index` is sent once as a literal with incremental
//! indexing so that every later response refers to it by index. Literals
//! are plain by default (cheapest for the peer to decode); Huffman coding
//! can be switched on with [`Encoder::set_huffman`].

use bytes::{BufMut, BytesMut};

use super::huffman;
use super::table::{static_find, DynamicTable, ENTRY_OVERHEAD, STATIC_LEN};

/// One field to encode. `index` asks the encoder to add the field to the
/// dynamic table when it is not there yet (for fields repeated on every
/// response); fields with varying values (e.g. `grpc-message`) set it false.
#[derive(Debug, Clone, Copy)]
pub struct HeaderField<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub index: bool,
}

/// The largest dynamic table we use even if the peer allows more: a
/// response's repeated fields take a few hundred octets, and a bigger
/// table would only cost the peer memory.
const MAX_USED_TABLE_SIZE: usize = 4096;

/// Encodes header blocks; owns our mirror of the peer's dynamic table.
#[derive(Debug)]
pub struct Encoder {
    /// Mirror of the peer decoder's table; its `max_size` is the size we
    /// use now (at most the peer's setting and [`MAX_USED_TABLE_SIZE`]).
    table: DynamicTable,
    /// The maximum size the peer's decoder currently applies: its initial
    /// SETTINGS value (4096) or the last size update we sent.
    announced: usize,
    /// The smallest size in force since the last block. §4.2: when the
    /// limit went down (even if it came back up), the next block must
    /// signal that smallest value before any other.
    low_water: usize,
    huffman: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            table: DynamicTable::new(4096),
            announced: 4096,
            low_water: 4096,
            huffman: false,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub fn set_max_table_size(&mut self, size: usize) {
        let used = size.min(MAX_USED_TABLE_SIZE);
        // Evict now: from here on the mirror must fit what the peer allows.
        self.table.set_max_size(used);
        self.low_water = self.low_water.min(used);
    }

    /// Huffman-code string literals when that makes them shorter (off by
    /// default: fewer bytes on the wire, more work for the peer).
    pub fn set_huffman(&mut self, on: bool) {
        self.huffman = on;
    }

    /// Appends one complete header block for `fields` to `dst`.
    pub fn encode(&mut self, fields: &[HeaderField<'_>], dst: &mut BytesMut) {
        // One reservation for the worst case (all literals, long lengths).
        let worst: usize = fields
            .iter()
            .map(|f| f.name.len() + f.value.len() + 12)
            .sum();
        dst.reserve(worst + 12);
        self.size_updates(dst);
        for field in fields {
            self.field(field, dst);
        }
    }

    /// §6.3 size updates owed since the last block.
    fn size_updates(&mut self, dst: &mut BytesMut) {
        if self.low_water < self.announced {
            encode_int(dst, self.low_water, 5, 0x20);
            self.announced = self.low_water;
        }
        let used = self.table.max_size();
        if used != self.announced {
            encode_int(dst, used, 5, 0x20);
            self.announced = used;
        }
        self.low_water = used;
    }

    fn field(&mut self, f: &HeaderField<'_>, dst: &mut BytesMut) {
        let in_static = static_find(f.name, f.value);
        if let Some((index, true)) = in_static {
            encode_int(dst, index, 7, 0x80);
            return;
        }
        let in_dynamic = self.table.find(f.name, f.value);
        if let Some((i, true)) = in_dynamic {
            encode_int(dst, STATIC_LEN + 1 + i, 7, 0x80);
            return;
        }
        let name_index = match (in_static, in_dynamic) {
            (Some((index, _)), _) => index,
            (None, Some((i, _))) => STATIC_LEN + 1 + i,
            (None, None) => 0,
        };
        let size = f.name.len() + f.value.len() + ENTRY_OVERHEAD;
        // An entry larger than the table would just empty it (§4.4).
        let index = f.index && size <= self.table.max_size();
        if index {
            encode_int(dst, name_index, 6, 0x40);
        } else {
            encode_int(dst, name_index, 4, 0x00);
        }
        if name_index == 0 {
            self.string(f.name, dst);
        }
        self.string(f.value, dst);
        if index {
            self.table.insert(f.name, f.value);
        }
    }

    /// §5.2 string literal.
    fn string(&self, s: &[u8], dst: &mut BytesMut) {
        if self.huffman {
            let len = huffman::encoded_len(s);
            if len < s.len() {
                encode_int(dst, len, 7, 0x80);
                huffman::encode(s, dst);
                return;
            }
        }
        encode_int(dst, s.len(), 7, 0x00);
        dst.put_slice(s);
    }

    /// The mirror, for tests comparing it with a decoder's table.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &DynamicTable {
        &self.table
    }
}

/// §5.1 integer with an `n`-bit prefix (1..=8); `flags` fills the bits of
/// the first byte above the prefix. Inlined so each call site's constant
/// prefix folds away.
#[inline]
pub(crate) fn encode_int(dst: &mut BytesMut, value: usize, n: u8, flags: u8) {
    let max = ((1u16 << n) - 1) as usize;
    if value < max {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::super::decoder::Decoder;
    use super::super::{HeaderList, HpackError};
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn f<'a>(name: &'a str, value: &'a str, index: bool) -> HeaderField<'a> {
        HeaderField {
            name: name.as_bytes(),
            value: value.as_bytes(),
            index,
        }
    }

    fn encode(e: &mut Encoder, fields: &[HeaderField<'_>]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        e.encode(fields, &mut dst);
        dst.to_vec()
    }

    /// Decodes `block` and checks it yields `fields` and that the decoder's
    /// table now equals the encoder's mirror.
    fn check(d: &mut Decoder, e: &Encoder, block: &[u8], fields: &[HeaderField<'_>]) {
        let mut list = HeaderList::new();
        d.decode(block, usize::MAX, &mut list).unwrap();
        let got: Vec<(&[u8], &[u8])> = list.iter().collect();
        let want: Vec<(&[u8], &[u8])> = fields.iter().map(|f| (f.name, f.value)).collect();
        assert_eq!(got, want);
        assert_mirror(d, e);
    }

    fn assert_mirror(d: &Decoder, e: &Encoder) {
        let dt: Vec<_> = d.table().iter().collect();
        let et: Vec<_> = e.table().iter().collect();
        assert_eq!(dt, et);
        assert_eq!(d.table().size(), e.table().size());
        assert_eq!(d.table().max_size(), e.table().max_size());
    }

    /// The brief's exact gRPC response headers, all indexed: the second
    /// block is three one-byte indices and both blocks decode back.
    #[test]
    fn grpc_identity_response_second_block_is_three_bytes() {
        let fields = [
            f(":status", "200", true),
            f("content-type", "application/grpc", true),
            f("grpc-accept-encoding", "identity", true),
        ];
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let first = encode(&mut e, &fields);
        check(&mut d, &e, &first, &fields);
        // :status 200 static (0x88); content-type with static name 31 (0x5f 0x10);
        // grpc-accept-encoding with a literal name.
        assert_eq!(first[0], 0x88);
        assert_eq!(&first[1..3], &[0x5f, 0x10]);
        let second = encode(&mut e, &fields);
        assert_eq!(second, [0x88, 0xbf, 0xbe]);
        check(&mut d, &e, &second, &fields);
        assert_eq!(e.table().size(), (12 + 16 + 32) + (20 + 8 + 32));
    }

    fn requests() -> [Vec<HeaderField<'static>>; 3] {
        [
            vec![
                f(":method", "GET", true),
                f(":scheme", "http", true),
                f(":path", "/", true),
                f(":authority", "www.example.com", true),
            ],
            vec![
                f(":method", "GET", true),
                f(":scheme", "http", true),
                f(":path", "/", true),
                f(":authority", "www.example.com", true),
                f("cache-control", "no-cache", true),
            ],
            vec![
                f(":method", "GET", true),
                f(":scheme", "https", true),
                f(":path", "/index.html", true),
                f(":authority", "www.example.com", true),
                f("custom-key", "custom-value", true),
            ],
        ]
    }

    fn responses() -> [Vec<HeaderField<'static>>; 3] {
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let loc = "https://www.example.com";
        [
            vec![
                f(":status", "302", true),
                f("cache-control", "private", true),
                f("date", date1, true),
                f("location", loc, true),
            ],
            vec![
                f(":status", "307", true),
                f("cache-control", "private", true),
                f("date", date1, true),
                f("location", loc, true),
            ],
            vec![
                f(":status", "200", true),
                f("cache-control", "private", true),
                f("date", "Mon, 21 Oct 2013 20:13:22 GMT", true),
                f("location", loc, true),
                f("content-encoding", "gzip", true),
                f(
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
                    true,
                ),
            ],
        ]
    }

    const C3: [&str; 3] = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    const C4: [&str; 3] = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    const C5: [&str; 3] = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
         3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
         7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
         6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ];
    const C6: [&str; 3] = [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
         1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
         e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];

    #[test]
    fn c3_and_c4_requests_byte_exact() {
        for (huffman, blocks) in [(false, C3), (true, C4)] {
            let mut e = Encoder::new();
            e.set_huffman(huffman);
            let mut d = Decoder::new(4096);
            for (fields, want) in requests().iter().zip(blocks) {
                let block = encode(&mut e, fields);
                assert_eq!(block, hex(want), "huffman={huffman}");
                check(&mut d, &e, &block, fields);
            }
        }
    }

    #[test]
    fn c5_and_c6_responses_with_eviction() {
        for (huffman, blocks) in [(false, C5), (true, C6)] {
            let mut e = Encoder::new();
            e.set_huffman(huffman);
            e.set_max_table_size(256);
            let mut d = Decoder::new(256);
            for (i, (fields, want)) in responses().iter().zip(blocks).enumerate() {
                let block = encode(&mut e, fields);
                let mut want = hex(want);
                if i == 0 {
                    // The RFC's decoder starts at 256; ours is told so.
                    want.splice(0..0, [0x3f, 0xe1, 0x01]);
                }
                if huffman && i == 1 {
                    // "307" is 3 octets either way: the RFC Huffman-codes
                    // it, we keep the plain form (cheaper to decode).
                    want = hex("4803 3330 37c1 c0bf");
                }
                assert_eq!(block, want, "huffman={huffman} response {i}");
                check(&mut d, &e, &block, fields);
            }
            assert_eq!(e.table().size(), 215);
        }
    }

    fn grpc_response() -> Vec<HeaderField<'static>> {
        vec![
            f(":status", "200", true),
            f("content-type", "application/grpc", true),
            f("grpc-accept-encoding", "identity,deflate,gzip", true),
        ]
    }

    fn grpc_trailers(message: &'static str) -> Vec<HeaderField<'static>> {
        vec![
            f("grpc-status", "0", true),
            f("grpc-message", message, false),
        ]
    }

    #[test]
    fn grpc_response_twice_is_indexed_the_second_time() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let first = encode(&mut e, &grpc_response());
        check(&mut d, &e, &first, &grpc_response());
        let first_trailers = encode(&mut e, &grpc_trailers("ok"));
        check(&mut d, &e, &first_trailers, &grpc_trailers("ok"));

        let second = encode(&mut e, &grpc_response());
        check(&mut d, &e, &second, &grpc_response());
        let second_trailers = encode(&mut e, &grpc_trailers("fine"));
        check(&mut d, &e, &second_trailers, &grpc_trailers("fine"));

        assert!(first.len() > 50, "{}", first.len());
        // ":status 200" static, the other two in the dynamic table (behind
        // grpc-status, inserted by the trailers).
        assert_eq!(second, [0x88, 0xc0, 0xbf]);
        // grpc-status indexed; grpc-message a literal, never indexed.
        assert_eq!(second_trailers[0], 0xbe);
        assert_eq!(second_trailers.len(), 1 + (1 + 1 + 12 + 1 + 4));
        assert_eq!(e.table().len(), 3);
    }

    #[test]
    fn table_size_reduction_starts_next_block_with_update() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let block = encode(&mut e, &grpc_response());
        check(&mut d, &e, &block, &grpc_response());
        assert_eq!(e.table().len(), 2);

        // Down to 0: mirror empties, next block starts with "size 0".
        e.set_max_table_size(0);
        assert_eq!(e.table().len(), 0);
        let block = encode(&mut e, &grpc_response());
        assert_eq!(block[0], 0x20);
        check(&mut d, &e, &block, &grpc_response());
        assert_eq!(d.table().len(), 0);
        // Nothing is indexed any more; no further update.
        let block = encode(&mut e, &grpc_response());
        assert_ne!(block[0] & 0xe0, 0x20);
        check(&mut d, &e, &block, &grpc_response());

        // Back up to 100 (only grpc-status-sized entries fit).
        e.set_max_table_size(100);
        let block = encode(&mut e, &grpc_trailers(""));
        assert_eq!(&block[..2], &[0x3f, 100 - 31]);
        check(&mut d, &e, &block, &grpc_trailers(""));
        assert_eq!(e.table().len(), 1);

        // Lowered below use then raised before the next block: both the
        // minimum and the final size are signalled.
        e.set_max_table_size(40);
        e.set_max_table_size(8192);
        let block = encode(&mut e, &grpc_trailers(""));
        assert_eq!(&block[..4], &[0x3f, 40 - 31, 0x3f, 0xe1]);
        check(&mut d, &e, &block, &grpc_trailers(""));
        // Capped at 4096 even though the peer allows 8192.
        assert_eq!(e.table().max_size(), 4096);

        // Raising above what we use needs no update.
        e.set_max_table_size(65536);
        let block = encode(&mut e, &grpc_trailers(""));
        assert_eq!(block[0], 0xbe);
        check(&mut d, &e, &block, &grpc_trailers(""));
    }

    #[test]
    fn entries_larger_than_the_table_are_not_inserted() {
        let mut e = Encoder::new();
        e.set_max_table_size(64);
        let mut d = Decoder::new(64);
        let big = [f("x-big", "0123456789012345678901234567890123456789", true)];
        let block = encode(&mut e, &big);
        // Size update, then "literal without indexing, new name".
        assert_eq!(&block[..3], &[0x3f, 64 - 31, 0x00]);
        check(&mut d, &e, &block, &big);
        assert_eq!(e.table().len(), 0);
    }

    #[test]
    fn huffman_only_when_shorter() {
        let mut e = Encoder::new();
        e.set_huffman(true);
        let mut d = Decoder::new(4096);
        // Bytes with long codes would grow: sent plain.
        let fields = [
            f("x-bin", "\u{1}\u{2}\u{3}", false),
            f("x-text", "hello", false),
        ];
        let block = encode(&mut e, &fields);
        check(&mut d, &e, &block, &fields);
        // Literal without indexing, new name; "x-bin" shrinks (5 -> 4
        // octets) so the name is Huffman-coded, the value is not.
        assert_eq!(block[0], 0x00);
        assert_eq!(block[1], 0x84);
        assert_eq!(block[6], 0x03); // plain value of 3 bytes
    }

    #[test]
    fn random_round_trips_keep_the_mirror_in_sync() {
        let names = [
            ":status",
            "content-type",
            "grpc-status",
            "grpc-message",
            "x-custom",
            "cache-control",
            "date",
            "set-cookie",
            ":authority",
        ];
        let values = [
            "",
            "0",
            "200",
            "404",
            "application/grpc",
            "private",
            "a longer value with some text in it",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for huffman in [false, true] {
            let mut e = Encoder::new();
            e.set_huffman(huffman);
            let mut d = Decoder::new(4096);
            for _ in 0..2000 {
                if next() % 17 == 0 {
                    e.set_max_table_size([0, 50, 100, 256, 4096, 10000][(next() % 6) as usize]);
                }
                let fields: Vec<HeaderField<'_>> = (0..next() % 8)
                    .map(|_| HeaderField {
                        name: names[(next() % names.len() as u64) as usize].as_bytes(),
                        value: values[(next() % values.len() as u64) as usize].as_bytes(),
                        index: next() % 3 != 0,
                    })
                    .collect();
                let block = encode(&mut e, &fields);
                check(&mut d, &e, &block, &fields);
            }
        }
    }

    #[test]
    fn encoded_blocks_respect_header_list_limit_contract() {
        // A block decoded with a tight limit still leaves the tables equal.
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let block = encode(&mut e, &grpc_response());
        let mut list = HeaderList::new();
        assert_eq!(
            d.decode(&block, 50, &mut list),
            Err(HpackError::HeaderListTooLarge)
        );
        assert_mirror(&d, &e);
    }
}
