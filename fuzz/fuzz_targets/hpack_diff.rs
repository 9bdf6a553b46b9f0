//! Fuzz target: the HPACK decoder (`protocol::http2::hpack::Decoder`),
//! differential against the `hpack` crate's decoder, over a sequence of
//! header blocks sharing one dynamic table. Then our `Encoder` re-encodes
//! every decoded list and both decoders must read it back unchanged.
//!
//! Input: control byte 0 (bit 7: a small header list limit of
//! `(b & 0x7f) * 32` octets instead of none; bit 6: Huffman off in our
//! encoder), control byte 1 (our encoder's table size: `b * 32`), then
//! blocks, each a length byte (0xff: the rest of the input) and its bytes.
//!
//! Where the two decoders may differ by design (documented in
//! docs/fuzzing.md): the crate names static entry 15 `accept-` (folded
//! here); we enforce the advertised table size ceiling and the
//! "size updates first" rule (the crate does neither), and we accept an
//! integer of up to 5 continuation bytes (the crate stops at 4, and
//! panics on such a size update, which is caught here). Any other
//! disagreement, or a list that differs, fails the target.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardcache::protocol::http2::hpack::{Decoder, Encoder, HeaderField, HeaderList, HpackError};
use shardcache_fuzz::{peak_during, Control};
use std::panic::{self, AssertUnwindSafe};

/// SETTINGS_HEADER_TABLE_SIZE the server advertises by default, and the
/// crate decoder's fixed initial size.
const TABLE: usize = 4096;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The crate's Huffman decoder, built once, with its answers remembered:
/// it looks up every bit in a hash map of hash maps, the slowest part of
/// this target by far, and mutated inputs repeat the same strings.
struct Huffman {
    decoder: hpack::huffman::HuffmanDecoder,
    memo: std::collections::HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Huffman {
    fn decode(&mut self, s: &[u8]) -> Option<Vec<u8>> {
        if let Some(r) = self.memo.get(s) {
            return r.clone();
        }
        if self.memo.len() > 1 << 16 {
            self.memo.clear();
        }
        let r = self.decoder.decode(s).ok();
        self.memo.insert(s.to_vec(), r.clone());
        r
    }
}

thread_local! {
    static HUFFMAN: std::cell::RefCell<Huffman> = std::cell::RefCell::new(Huffman {
        decoder: hpack::huffman::HuffmanDecoder::new(),
        memo: Default::default(),
    });
}

fn fields(list: &HeaderList) -> Fields {
    list.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

/// The crate's static table names entry 15 `accept-` instead of
/// `accept-charset` (RFC 7541 Appendix A): compare with that name folded.
/// An entry indexed under the short name also makes the crate's dynamic
/// table 7 octets smaller than ours, so evictions may diverge after it.
const CRATE_BUG_NAME: &[u8] = b"accept-";

fn fold(f: &[(Vec<u8>, Vec<u8>)]) -> Fields {
    f.iter()
        .map(|(n, v)| {
            let n = if n == b"accept-charset" {
                CRATE_BUG_NAME
            } else {
                n
            };
            (n.to_vec(), v.clone())
        })
        .collect()
}

fn names_bug(f: &[(Vec<u8>, Vec<u8>)]) -> bool {
    f.iter()
        .any(|(n, _)| n == CRATE_BUG_NAME || n == b"accept-charset")
}

/// RFC 7541 §4.1 size of a list.
fn size(f: &[(Vec<u8>, Vec<u8>)]) -> usize {
    f.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

/// The block with every Huffman string literal replaced by its raw form,
/// decoded by the crate's own Huffman decoder: the same header block to
/// any decoder, but the crate's `Decoder` builds a new Huffman table (a
/// dozen hash maps) for every Huffman string, which made this target run
/// at 50 inputs/s; one table built once does the same work. Integers are
/// copied as they are (overlong ones too). From the first string it cannot
/// read (truncated, invalid Huffman) the rest is copied unchanged, so the
/// crate meets the same error itself.
fn raw_strings(block: &[u8], huff: &mut Huffman) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() * 2);
    let mut pos = 0;
    // An integer's bytes, at most 6 continuation bytes; None if cut short.
    fn int(block: &[u8], pos: usize, prefix: u8) -> Option<(usize, usize)> {
        let mask = (1u16 << prefix) as usize - 1;
        let mut v = usize::from(*block.get(pos)?) & mask;
        if v < mask {
            return Some((v, pos + 1));
        }
        for i in 0..7 {
            let b = *block.get(pos + 1 + i)?;
            v += usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((v, pos + 2 + i));
            }
        }
        None
    }
    fn put_int(out: &mut Vec<u8>, mut v: usize) {
        if v < 0x7f {
            out.push(v as u8);
            return;
        }
        out.push(0x7f);
        v -= 0x7f;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    // Copies one string literal at `pos`, raw; None when it cannot.
    let mut string = |out: &mut Vec<u8>, pos: usize| -> Option<usize> {
        let (len, start) = int(block, pos, 7)?;
        let bytes = block.get(start..start.checked_add(len)?)?;
        if block[pos] & 0x80 == 0 {
            out.extend_from_slice(&block[pos..start + len]);
        } else {
            let s = huff.decode(bytes)?;
            put_int(out, s.len());
            out.extend_from_slice(&s);
        }
        Some(start + len)
    };
    while pos < block.len() {
        let first = block[pos];
        let mark = out.len();
        let next = (|| {
            let (prefix, strings) = match first {
                b if b & 0x80 != 0 => (7, false),
                b if b & 0x40 != 0 => (6, true),
                b if b & 0x20 != 0 => (5, false),
                _ => (4, true),
            };
            let (index, mut p) = int(block, pos, prefix)?;
            out.extend_from_slice(&block[pos..p]);
            if strings {
                if index == 0 {
                    p = string(&mut out, p)?;
                }
                p = string(&mut out, p)?;
            }
            Some(p)
        })();
        match next {
            Some(p) => pos = p,
            None => {
                out.truncate(mark);
                out.extend_from_slice(&block[pos..]);
                break;
            }
        }
    }
    out
}

/// The crate's decoder, with a panic (its `unwrap` on a size update it
/// cannot read) turned into `None`.
fn reference(d: &mut hpack::Decoder<'static>, block: &[u8]) -> Option<Result<Fields, String>> {
    let block = HUFFMAN.with(|h| raw_strings(block, &mut h.borrow_mut()));
    let block = &block[..];
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let r = panic::catch_unwind(AssertUnwindSafe(|| d.decode(block)));
    panic::set_hook(hook);
    r.ok().map(|r| r.map_err(|e| format!("{e:?}")))
}

fuzz_target!(|data: &[u8]| {
    let (c, mut rest) = Control::split(data, 2);
    let limit = if c.byte(0) & 0x80 != 0 {
        usize::from(c.byte(0) & 0x7f) * 32
    } else {
        usize::MAX
    };
    let mut ours = Decoder::new(TABLE);
    let mut theirs = hpack::Decoder::new();

    let mut encoder = Encoder::new();
    encoder.set_huffman(c.byte(0) & 0x40 == 0);
    encoder.set_max_table_size(usize::from(c.byte(1)) * 32);
    let mut ours2 = Decoder::new(TABLE);
    let mut theirs2 = hpack::Decoder::new();
    let mut theirs2_in_sync = true;

    while let Some((&n, tail)) = rest.split_first() {
        let n = if n == 0xff {
            tail.len()
        } else {
            usize::from(n).min(tail.len())
        };
        let (block, tail) = tail.split_at(n);
        rest = tail;

        let mut list = HeaderList::new();
        let (got, peak) = peak_during(|| ours.decode(block, limit, &mut list));
        // The heap one block may cost: the decoded list, which stops
        // growing at the limit (RFC 7541 §4.1 size: each byte of it once in
        // the list's buffer, its 32 octets of overhead cover the 12-byte
        // offsets; x3 for Vec doubling) and cannot exceed what the block
        // can name (one byte can index a whole table entry); the dynamic
        // table's buffer and offsets (compacted at 2x its size, doubling:
        // 8x); Huffman scratch (at most 8/5 of the block, doubling).
        let list_max = limit.min(block.len().saturating_mul(TABLE + 32));
        let bound = 3 * list_max + 8 * TABLE + 4 * block.len() + 1024;
        assert!(
            peak <= bound,
            "decoding {} bytes (limit {limit}) held {peak} bytes, bound {bound}",
            block.len()
        );
        let got_fields = fields(&list);
        assert!(
            list.size() <= limit,
            "list of {} over the limit {limit}",
            list.size()
        );
        let Some(want) = reference(&mut theirs, block) else {
            // The crate panicked: only on a size update it cannot read
            // (truncated, or 5 continuation bytes).
            assert!(
                matches!(
                    got,
                    Ok(())
                        | Err(HpackError::InvalidTableSizeUpdate(_)
                            | HpackError::Truncated
                            | HpackError::IntegerOverflow)
                ),
                "crate panicked, we said {got:?}"
            );
            return;
        };
        let in_sync = match (&got, want) {
            (Ok(()), Ok(want)) => {
                assert_eq!(fold(&got_fields), fold(&want), "lists differ");
                !names_bug(&want)
            }
            (Err(HpackError::HeaderListTooLarge), Ok(want)) => {
                if !names_bug(&want) {
                    assert!(
                        size(&want) > limit,
                        "too large, but {} <= {limit}",
                        size(&want)
                    );
                }
                // What we kept is what fits, in order.
                assert!(got_fields.len() <= want.len(), "kept more fields than sent");
                assert_eq!(
                    fold(&got_fields),
                    fold(&want[..got_fields.len()]),
                    "kept fields differ"
                );
                !names_bug(&want)
            }
            (Ok(()) | Err(HpackError::HeaderListTooLarge), Err(e)) => {
                assert!(
                    e.contains("TooManyOctets"),
                    "we decoded it, the crate said {e}"
                );
                return; // tables may differ from here on
            }
            (Err(e), Ok(_)) => {
                assert!(
                    matches!(e, HpackError::InvalidTableSizeUpdate(_)),
                    "the crate decoded it, we said {e:?}"
                );
                return;
            }
            (Err(_), Err(_)) => return, // both reject: the connection ends
        };

        // Our encoder's output reads back the same in both decoders.
        let owned = got_fields;
        let fs: Vec<HeaderField<'_>> = owned
            .iter()
            .map(|(n, v)| HeaderField {
                name: n,
                value: v,
                index: n.len() % 2 == 0,
            })
            .collect();
        let mut out = BytesMut::new();
        encoder.encode(&fs, &mut out);
        let mut back = HeaderList::new();
        ours2
            .decode(&out, usize::MAX, &mut back)
            .expect("our decoder reads our encoder");
        assert_eq!(fields(&back), owned, "our encoder -> our decoder");
        if theirs2_in_sync {
            let back2 = reference(&mut theirs2, &out)
                .expect("the crate does not panic on our encoder")
                .expect("the crate reads our encoder");
            assert_eq!(fold(&back2), fold(&owned), "our encoder -> crate decoder");
            theirs2_in_sync = !names_bug(&owned);
        }
        if !in_sync {
            return; // the crate's table may differ from ours from here on
        }
    }
});
