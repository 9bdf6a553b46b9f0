//! The HPACK Huffman code (RFC 7541 Appendix B, §5.2): decoding for
//! request strings, encoding for the encoder's optional Huffman literals.
//!
//! The code is canonical (codes of one length are consecutive, in symbol
//! order, and each length continues from the previous one), so only the
//! 257 code lengths are written down; codes, the code tree and the decoding
//! state machine are all computed at compile time by `const fn`s. A wrong
//! table would fail the build (the tree would not come out complete).
//!
//! Decoding walks a nibble-at-a-time state machine: states are the 256
//! internal nodes of the code tree; for each (state, nibble) a table gives
//! the next state, at most one decoded byte (the shortest code is 5 bits),
//! and whether the input may end there. Two table loads per input byte,
//! no bit loops, no allocation beyond the output.

use super::HpackError;

/// Code length in bits of each symbol; 256 is EOS.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32 ' '
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48 '0'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64 '@'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80 'P'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96 '`'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112 'p'
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240
    30, // EOS
];

const EOS: usize = 256;

/// `(code, length)` per symbol, code right-aligned.
pub(crate) const CODES: [(u32, u8); 257] = canonical_codes();

const fn canonical_codes() -> [(u32, u8); 257] {
    let mut out = [(0u32, 0u8); 257];
    let mut code: u32 = 0;
    let mut prev_len: u8 = 0;
    let mut len: u8 = 1;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if LENGTHS[sym] == len {
                if prev_len != 0 {
                    code <<= len - prev_len;
                }
                prev_len = len;
                out[sym] = (code, len);
                code += 1;
            }
            sym += 1;
        }
        len += 1;
    }
    // A complete prefix code ends exactly at 2^30 after the last 30-bit code.
    assert!(
        code == 1 << 30,
        "Huffman lengths do not form a complete code"
    );
    out
}

/// Child marker for a leaf: the low bits are the symbol.
const LEAF: u16 = 0x8000;

/// The code tree: `TREE[node][bit]` is an internal node id or `LEAF | sym`.
/// 257 leaves make exactly 256 internal nodes, so a node id fits a `u8`.
const TREE: [[u16; 2]; 256] = build_tree();

const fn build_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let mut next: u16 = 1; // node 0 is the root, never a child, so 0 means "unset"
    let mut sym = 0;
    while sym < 257 {
        let (code, len) = CODES[sym];
        let mut node = 0usize;
        let mut i = len;
        while i > 1 {
            i -= 1;
            let bit = ((code >> i) & 1) as usize;
            let child = tree[node][bit];
            assert!(child & LEAF == 0, "Huffman code is not prefix-free");
            if child == 0 {
                tree[node][bit] = next;
                node = next as usize;
                next += 1;
            } else {
                node = child as usize;
            }
        }
        let bit = (code & 1) as usize;
        assert!(tree[node][bit] == 0, "Huffman code is not prefix-free");
        tree[node][bit] = LEAF | sym as u16;
        sym += 1;
    }
    assert!(next == 256);
    tree
}

/// The decoding state machine, one `u32` per (state, nibble) at index
/// `state * 16 + nibble`. Packing keeps the loop's critical path to a
/// load, a mask and an `or`: bits 4..12 hold the next state already
/// multiplied by 16 (so `(entry & ROW) | nibble` is the next index and
/// provably in bounds), bits 16..24 the flags, bits 24..32 the symbol.
static DECODE: [u32; 4096] = build_decode_table();

const ROW: u32 = 0xff0;
/// A symbol was completed during this nibble.
const EMIT: u32 = 1 << 16;
/// The nibble reached EOS: invalid input.
const FAIL: u32 = 2 << 16;
/// Input may end here: the bits since the last symbol are all ones and
/// fewer than 8 (§5.2 padding).
const ACCEPT: u32 = 4 << 16;

const fn build_decode_table() -> [u32; 4096] {
    // Accepting states: the root and the all-ones path up to depth 7.
    let mut accept = [false; 256];
    accept[0] = true;
    let mut node = 0usize;
    let mut depth = 0;
    while depth < 7 {
        node = TREE[node][1] as usize;
        assert!(node < 256);
        accept[node] = true;
        depth += 1;
    }

    let mut table = [0u32; 4096];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut entry = 0u32;
            let mut i = 4;
            while i > 0 {
                i -= 1;
                let child = TREE[node][(nibble >> i) & 1];
                if child & LEAF != 0 {
                    let sym = (child & !LEAF) as u32;
                    if sym == EOS as u32 {
                        entry = FAIL;
                        node = 0;
                        break;
                    }
                    // Codes are at least 5 bits: one symbol per nibble at most.
                    assert!(entry & EMIT == 0);
                    entry |= EMIT | (sym << 24);
                    node = 0;
                } else {
                    node = child as usize;
                }
            }
            if entry & FAIL == 0 && accept[node] {
                entry |= ACCEPT;
            }
            table[state * 16 + nibble] = entry | ((node as u32) << 4);
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// Appends the decoding of `src` to `dst`. Rejects EOS, and padding that
/// is longer than 7 bits or not all ones.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    // At most 8/5 output bytes per input byte: reserve once, push freely.
    dst.reserve(src.len() + src.len() / 2 + src.len() / 8 + 1);
    let mut entry = ACCEPT; // state 0, nothing pending
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            entry = DECODE[((entry & ROW) | nibble as u32) as usize];
            if entry & (EMIT | FAIL) != 0 {
                if entry & FAIL != 0 {
                    return Err(HpackError::InvalidHuffman);
                }
                dst.push((entry >> 24) as u8);
            }
        }
    }
    if entry & ACCEPT != 0 {
        Ok(())
    } else {
        Err(HpackError::InvalidHuffman)
    }
}

/// Length in octets of the Huffman encoding of `src`.
pub(crate) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| CODES[b as usize].1 as usize).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `src`, padded with ones (the EOS
/// prefix) to an octet boundary.
pub(crate) fn encode(src: &[u8], dst: &mut impl bytes::BufMut) {
    // Pending bits are the low `nbits` of `acc`; at most 7 + 30 of them.
    let mut acc: u64 = 0;
    let mut nbits: u32 = 0;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | code as u64;
        nbits += len as u32;
        while nbits >= 8 {
            nbits -= 8;
            dst.put_u8((acc >> nbits) as u8);
        }
    }
    if nbits > 0 {
        let pad = 8 - nbits;
        dst.put_u8(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(src: &[u8]) -> Result<Vec<u8>, HpackError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    fn enc(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(src, &mut out);
        assert_eq!(out.len(), encoded_len(src));
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn spot_check_codes_against_appendix_b() {
        assert_eq!(CODES[0], (0x1ff8, 13));
        assert_eq!(CODES[b'0' as usize], (0x0, 5));
        assert_eq!(CODES[b' ' as usize], (0x14, 6));
        assert_eq!(CODES[b'a' as usize], (0x3, 5));
        assert_eq!(CODES[b'X' as usize], (0xfc, 8));
        assert_eq!(CODES[b'\\' as usize], (0x7fff0, 19));
        assert_eq!(CODES[128], (0xfffe6, 20));
        assert_eq!(CODES[255], (0x3ffffee, 26));
        assert_eq!(CODES[EOS], (0x3fffffff, 30));
    }

    #[test]
    fn rfc_strings() {
        // Strings from RFC 7541 C.4 and C.6.
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
            ("640e ff", "307"),
            ("9bd9 ab", "gzip"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (coded, plain) in cases {
            assert_eq!(dec(&hex(coded)).unwrap(), plain.as_bytes(), "{plain}");
            assert_eq!(enc(plain.as_bytes()), hex(coded), "{plain}");
        }
    }

    #[test]
    fn round_trip_all_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(dec(&enc(&all)).unwrap(), all);
        let mut rev = all.clone();
        rev.reverse();
        assert_eq!(dec(&enc(&rev)).unwrap(), rev);
        for b in 0..=255u8 {
            for n in 1..=9 {
                let s = vec![b; n];
                assert_eq!(dec(&enc(&s)).unwrap(), s, "byte {b} x{n}");
            }
        }
        assert_eq!(dec(&[]).unwrap(), b"");
        assert_eq!(enc(b""), b"");
    }

    #[test]
    fn invalid_padding() {
        // 'a' is 00011: padding with zeros instead of ones.
        assert_eq!(dec(&[0b0001_1000]), Err(HpackError::InvalidHuffman));
        assert_eq!(dec(&[0b0001_1111]).unwrap(), b"a");
        // Padding that is mostly ones but ends in a zero.
        assert_eq!(dec(&[0b0001_1110]), Err(HpackError::InvalidHuffman));
        // Ending in the middle of a code that is not all ones.
        assert_eq!(dec(&[0b0000_0000]), Err(HpackError::InvalidHuffman));
    }

    #[test]
    fn padding_longer_than_seven_bits() {
        // "0" is 00000 + 3 bits of padding, then a whole byte of ones.
        assert_eq!(dec(&[0b0000_0111]).unwrap(), b"0");
        assert_eq!(dec(&[0b0000_0111, 0xff]), Err(HpackError::InvalidHuffman));
        assert_eq!(dec(&[0xff]), Err(HpackError::InvalidHuffman));
        assert_eq!(dec(&[0xff, 0xff]), Err(HpackError::InvalidHuffman));
    }

    #[test]
    fn eos_in_string() {
        // EOS is 30 ones: 0xffffffff holds it plus two bits.
        assert_eq!(dec(&[0xff; 4]), Err(HpackError::InvalidHuffman));
        // EOS after a symbol: 'a' (00011) + EOS + padding to 40 bits.
        let bits: u64 = (0b00011 << 35) | (0x3fff_ffff << 5) | 0b11111;
        let bytes: Vec<u8> = (0..5).rev().map(|i| (bits >> (8 * i)) as u8).collect();
        assert_eq!(dec(&bytes), Err(HpackError::InvalidHuffman));
    }
}
