//! The batch calls `GetMany`, `SetMany` and `DeleteMany`: a request's items
//! as cache operations (each checked by itself, so one bad key fails only
//! its own item), and the framed response built straight from per-item
//! results without a message struct per item. Pure: no sockets, no store.

use super::{Code, Method, Status};
use crate::proto;
use crate::protocol::{CacheOp, Invalid};
use bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

/// The items of a batch call, in request order: each a cache operation, or
/// why that item alone is refused. The call itself is refused (its status
/// is the error) when the message does not decode or has more than
/// `max_batch` items.
pub fn decode_many(
    method: Method,
    payload: Bytes,
    max_batch: usize,
    max_value: u64,
) -> Result<Vec<Result<CacheOp, Invalid>>, Status> {
    let req = proto::ManyRequest::decode(payload).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("malformed ManyRequest message: {e}"),
        )
    })?;
    if req.items.len() > max_batch {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!(
                "{} items in one {} call: the limit is {max_batch} (--max-batch); \
                 split the batch",
                req.items.len(),
                method.name()
            ),
        ));
    }
    Ok(req
        .items
        .into_iter()
        .map(|r| {
            let op = match method {
                Method::SetMany => CacheOp::Set {
                    group: r.group,
                    key: r.key,
                    value: r.value.into(),
                    ttl_ms: r.ttl_ms,
                },
                Method::DeleteMany => CacheOp::Delete {
                    group: r.group,
                    key: r.key,
                },
                _ => CacheOp::Get {
                    group: r.group,
                    key: r.key,
                },
            };
            op.validate(max_value).map(|()| op)
        })
        .collect())
}

/// One item's result, as the response encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemResult<'a> {
    /// GetMany: the value, or None for a miss.
    Value(Option<&'a [u8]>),
    /// SetMany: stored.
    Stored,
    /// DeleteMany: whether the key existed.
    Deleted(bool),
    /// This item failed by itself (the call succeeds).
    Failed(&'a Status),
}

/// Appends the framed response of a batch call (`GetManyResponse`,
/// `SetManyResponse` or `DeleteManyResponse`: the same shape, field 1
/// repeated) with one result per item, in order.
pub fn frame_many_response<'a>(
    method: Method,
    results: impl Iterator<Item = ItemResult<'a>>,
    dst: &mut Vec<u8>,
) {
    // GetResult numbers code 3 and message 4 (after value and found);
    // SetResult and DeleteResult 2 and 3.
    let code_field = if method == Method::GetMany { 3 } else { 2 };
    let start = dst.len();
    dst.put_u8(0);
    dst.put_u32(0); // the length, patched below
    for r in results {
        encode_key(1, WireType::LengthDelimited, dst);
        encode_varint(item_len(&r) as u64, dst);
        encode_item(&r, code_field, dst);
    }
    let len = (dst.len() - start - 5) as u32;
    dst[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// The encoded length of one result message (proto3: fields at their
/// default are omitted).
fn item_len(r: &ItemResult<'_>) -> usize {
    let bytes_field = |n: usize| 1 + encoded_len_varint(n as u64) + n;
    match r {
        ItemResult::Value(v) => super::found_value_len(*v),
        ItemResult::Deleted(false) => 0,
        ItemResult::Stored | ItemResult::Deleted(true) => 2,
        ItemResult::Failed(st) => {
            let msg = if st.message.is_empty() {
                0
            } else {
                bytes_field(st.message.len())
            };
            1 + encoded_len_varint(st.code as u64) + msg
        }
    }
}

fn encode_item(r: &ItemResult<'_>, code_field: u32, dst: &mut Vec<u8>) {
    match r {
        ItemResult::Value(v) => super::encode_found_value(*v, dst),
        ItemResult::Deleted(false) => {}
        ItemResult::Stored | ItemResult::Deleted(true) => {
            encode_key(1, WireType::Varint, dst);
            dst.put_u8(1);
        }
        ItemResult::Failed(st) => {
            encode_key(code_field, WireType::Varint, dst);
            encode_varint(st.code as u64, dst);
            if !st.message.is_empty() {
                encode_key(code_field + 1, WireType::LengthDelimited, dst);
                encode_varint(st.message.len() as u64, dst);
                dst.extend_from_slice(st.message.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(items: &[(&str, &str, &[u8])]) -> Bytes {
        let msg = proto::ManyRequest {
            items: items
                .iter()
                .map(|(g, k, v)| proto::Request {
                    group: g.to_string(),
                    key: k.to_string(),
                    value: v.to_vec(),
                    ttl_ms: 7,
                })
                .collect(),
        };
        msg.encode_to_vec().into()
    }

    #[test]
    fn items_are_checked_one_by_one() {
        let items = decode_many(
            Method::SetMany,
            request(&[("g", "a", b"1"), ("g", "", b"2"), ("g", "c", b"three")]),
            10,
            4,
        )
        .unwrap();
        assert_eq!(
            items[0],
            Ok(CacheOp::Set {
                group: "g".into(),
                key: "a".into(),
                value: Bytes::from_static(b"1"),
                ttl_ms: 7
            })
        );
        assert!(matches!(&items[1], Err(Invalid::Name(w)) if w.contains("key is empty")));
        assert_eq!(items[2], Err(Invalid::ValueTooLarge { len: 5, max: 4 }));
        let gets = decode_many(Method::GetMany, request(&[("", "k", b"")]), 1, 4).unwrap();
        assert_eq!(
            gets,
            [Ok(CacheOp::Get {
                group: "".into(),
                key: "k".into()
            })]
        );
    }

    #[test]
    fn too_many_items_or_garbage_refuse_the_call() {
        let e = decode_many(Method::GetMany, request(&[("", "a", &[][..]); 3]), 2, 4).unwrap_err();
        assert_eq!(e.code, Code::ResourceExhausted);
        assert!(e.message.contains("3 items") && e.message.contains("--max-batch"));
        let e = decode_many(Method::GetMany, Bytes::from_static(b"\x0a\xff"), 2, 4).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.message.contains("malformed ManyRequest"));
        assert_eq!(
            decode_many(Method::DeleteMany, Bytes::new(), 2, 4),
            Ok(vec![])
        );
    }

    fn unframe(buf: &[u8]) -> &[u8] {
        assert_eq!(buf[0], 0);
        let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(buf.len(), 5 + len);
        &buf[5..]
    }

    #[test]
    fn responses_decode_with_prost() {
        let failed = Status::new(Code::ResourceExhausted, "too big");
        let mut buf = vec![9]; // appended after what is there
        frame_many_response(
            Method::GetMany,
            [
                ItemResult::Value(Some(b"v1")),
                ItemResult::Value(None),
                ItemResult::Value(Some(b"")),
                ItemResult::Failed(&failed),
            ]
            .into_iter(),
            &mut buf,
        );
        assert_eq!(buf[0], 9);
        let resp = proto::GetManyResponse::decode(unframe(&buf[1..])).unwrap();
        let got: Vec<_> = resp
            .results
            .iter()
            .map(|r| (r.value.as_slice(), r.found, r.code, r.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (&b"v1"[..], true, 0, ""),
                (&b""[..], false, 0, ""),
                (&b""[..], true, 0, ""),
                (&b""[..], false, 8, "too big"),
            ]
        );

        let bad = Status::new(Code::InvalidArgument, "");
        let mut buf = Vec::new();
        let items = [ItemResult::Stored, ItemResult::Failed(&bad)];
        frame_many_response(Method::SetMany, items.into_iter(), &mut buf);
        let resp = proto::SetManyResponse::decode(unframe(&buf)).unwrap();
        assert_eq!(resp.results.len(), 2);
        assert!(resp.results[0].stored && resp.results[0].code == 0);
        assert!(!resp.results[1].stored && resp.results[1].code == 3);

        let mut buf = Vec::new();
        let items = [ItemResult::Deleted(false), ItemResult::Deleted(true)];
        frame_many_response(Method::DeleteMany, items.into_iter(), &mut buf);
        let resp = proto::DeleteManyResponse::decode(unframe(&buf)).unwrap();
        let deleted: Vec<bool> = resp.results.iter().map(|r| r.deleted).collect();
        assert_eq!(deleted, [false, true]);

        let mut buf = Vec::new();
        frame_many_response(Method::GetMany, std::iter::empty(), &mut buf);
        assert_eq!(buf, [0, 0, 0, 0, 0]);
    }
}
