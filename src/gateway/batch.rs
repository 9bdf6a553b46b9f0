//! The gateway's batch calls: `POST /v1/getMany`, `/v1/setMany` and
//! `/v1/deleteMany` with a JSON body, the same calls as gRPC's GetMany,
//! SetMany and DeleteMany. Pure: the JSON body → cache operations, and the
//! per-item results → the JSON response.
//!
//! ```text
//! request:  {"items": [{"group": "g", "key": "k", "value": "text", "ttl_ms": 0}, ...]}
//! response: {"results": [{"found": true, "value": "text"}, {"found": false},
//!                        {"stored": true}, {"deleted": false},
//!                        {"error": {"code": "INVALID_ARGUMENT", "status": 400,
//!                                   "message": "key is empty: ..."}}, ...]}
//! ```
//!
//! `group` may be left out (the default group); `value` (UTF-8 text) or
//! `value_base64` (standard alphabet, padded) gives a SetMany value, and
//! `ttl_ms` its expiry. A hit's value comes back as `value` when it is
//! UTF-8 and as `value_base64` otherwise. An item with an unknown field,
//! a field of the wrong type or a bad key fails alone; the call answers
//! 200 with one result per item, in order. A body that is not such a JSON
//! object is a 400, more than `--max-batch` items a 413.

use crate::protocol::grpc::batch::ItemResult;
use crate::protocol::grpc::{Code, Method, Status};
use crate::protocol::{http1, CacheOp, Invalid};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};

use super::{http_status, Response};

/// The batch call a path names, if any.
pub fn method_of(path: &str) -> Option<Method> {
    match path {
        "/v1/getMany" => Some(Method::GetMany),
        "/v1/setMany" => Some(Method::SetMany),
        "/v1/deleteMany" => Some(Method::DeleteMany),
        _ => None,
    }
}

/// Why an item of a batch is refused before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    /// The item breaks the shared key/group/value rules.
    Invalid(Invalid),
    /// The item is not a JSON object of the documented fields.
    Malformed(String),
}

/// The items of a batch request body, each an operation or why it alone
/// is refused; the error response when the body as a whole is refused.
pub fn parse(
    method: Method,
    body: &[u8],
    max_batch: usize,
    max_value: u64,
) -> Result<Vec<Result<CacheOp, ItemError>>, Response> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| Response::new(400, format!("request body is not valid JSON: {e}")))?;
    let Some(items) = json.get("items").and_then(Value::as_array) else {
        return Err(Response::new(
            400,
            r#"request body must be a JSON object {"items": [...]}"#,
        ));
    };
    if let Some(other) = json
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "items"))
    {
        return Err(Response::new(
            400,
            format!("unknown field '{other}' in the request body: only \"items\" is accepted"),
        ));
    }
    if items.len() > max_batch {
        return Err(Response::new(
            413,
            format!(
                "{} items in one {} call: the limit is {max_batch} (--max-batch); split the batch",
                items.len(),
                method.name()
            ),
        ));
    }
    Ok(items
        .iter()
        .map(|item| {
            let op = item_op(method, item).map_err(ItemError::Malformed)?;
            op.validate(max_value).map_err(ItemError::Invalid)?;
            Ok(op)
        })
        .collect())
}

fn item_op(method: Method, item: &Value) -> Result<CacheOp, String> {
    let Some(fields) = item.as_object() else {
        return Err("an item must be a JSON object with a \"key\"".into());
    };
    let allowed: &[&str] = match method {
        Method::SetMany => &["group", "key", "value", "value_base64", "ttl_ms"],
        _ => &["group", "key"],
    };
    if let Some(other) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown field '{other}': a {} item has {}",
            method.name(),
            allowed.join(", ")
        ));
    }
    let group = text(fields, "group")?.unwrap_or_default();
    let key = text(fields, "key")?.ok_or("the item has no \"key\"")?;
    Ok(match method {
        Method::SetMany => {
            let value = match (text(fields, "value")?, text(fields, "value_base64")?) {
                (Some(v), None) => v.into_bytes(),
                (None, Some(b)) => BASE64
                    .decode(b)
                    .map_err(|e| format!("value_base64 is not base64: {e}"))?,
                (None, None) => Vec::new(),
                (Some(_), Some(_)) => return Err("give value or value_base64, not both".into()),
            };
            let ttl_ms = match fields.get("ttl_ms") {
                None => 0,
                Some(t) => t
                    .as_u64()
                    .ok_or("ttl_ms must be a whole number of milliseconds, 0 or more")?,
            };
            CacheOp::Set {
                group,
                key,
                value: value.into(),
                ttl_ms,
            }
        }
        Method::DeleteMany => CacheOp::Delete { group, key },
        _ => CacheOp::Get { group, key },
    })
}

fn text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name} must be a JSON string")),
    }
}

/// The status of an item refused before it is served.
pub fn item_status(e: &ItemError) -> Status {
    match e {
        ItemError::Invalid(i @ Invalid::Name(_)) => {
            Status::new(Code::InvalidArgument, i.to_string())
        }
        ItemError::Invalid(i @ Invalid::ValueTooLarge { .. }) => {
            Status::new(Code::ResourceExhausted, i.to_string())
        }
        ItemError::Malformed(why) => Status::new(Code::InvalidArgument, why.clone()),
    }
}

/// Appends the 200 response of a batch call with one result per item.
pub fn respond<'a>(
    out: &mut Vec<u8>,
    results: impl Iterator<Item = ItemResult<'a>>,
    keep_alive: bool,
) -> u16 {
    let results: Vec<Value> = results.map(result_json).collect();
    let mut body = Map::new();
    body.insert("results".into(), Value::Array(results));
    let body = Value::Object(body).to_string();
    let headers = [("Content-Type", "application/json")];
    http1::encode_response(out, 200, &headers, body.as_bytes(), keep_alive);
    200
}

fn result_json(r: ItemResult<'_>) -> Value {
    let mut m = Map::new();
    match r {
        ItemResult::Value(Some(v)) => {
            m.insert("found".into(), true.into());
            match std::str::from_utf8(v) {
                Ok(s) => m.insert("value".into(), s.into()),
                Err(_) => m.insert("value_base64".into(), BASE64.encode(v).into()),
            };
        }
        ItemResult::Value(None) => {
            m.insert("found".into(), false.into());
        }
        ItemResult::Stored => {
            m.insert("stored".into(), true.into());
        }
        ItemResult::Deleted(d) => {
            m.insert("deleted".into(), d.into());
        }
        ItemResult::Failed(st) => {
            let mut e = Map::new();
            e.insert("code".into(), st.code.name().into());
            e.insert("status".into(), http_status(st.code).into());
            e.insert("message".into(), st.message.clone().into());
            m.insert("error".into(), Value::Object(e));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(method: Method, body: &str) -> Vec<Result<CacheOp, ItemError>> {
        parse(method, body.as_bytes(), 10, 8).unwrap()
    }

    #[test]
    fn items_parse_one_by_one() {
        let got = items(
            Method::SetMany,
            r#"{"items": [
                {"group": "g", "key": "a", "value": "text", "ttl_ms": 5},
                {"key": "b", "value_base64": "AAH/"},
                {"key": ""},
                {"key": "c", "value": "123456789"},
                {"key": "d", "colour": "blue"},
                {"key": 7},
                "e",
                {"key": "f", "value": "x", "value_base64": "eA=="},
                {"key": "g", "ttl_ms": -1}
            ]}"#,
        );
        assert_eq!(
            got[0],
            Ok(CacheOp::Set {
                group: "g".into(),
                key: "a".into(),
                value: "text".into(),
                ttl_ms: 5
            })
        );
        assert!(matches!(&got[1], Ok(CacheOp::Set { value, group, .. })
            if value[..] == [0, 1, 255] && group.is_empty()));
        assert!(matches!(&got[2], Err(ItemError::Invalid(Invalid::Name(_)))));
        assert!(matches!(
            &got[3],
            Err(ItemError::Invalid(Invalid::ValueTooLarge {
                len: 9,
                max: 8
            }))
        ));
        let why = |i: usize| match &got[i] {
            Err(ItemError::Malformed(w)) => w.clone(),
            other => panic!("item {i}: {other:?}"),
        };
        assert!(why(4).contains("unknown field 'colour'"), "{}", why(4));
        assert!(why(5).contains("key must be a JSON string"));
        assert!(why(6).contains("must be a JSON object"));
        assert!(why(7).contains("not both"));
        assert!(why(8).contains("ttl_ms"));
        // Get and Delete items take no value.
        let got = items(
            Method::GetMany,
            r#"{"items": [{"key": "a", "value": "v"}]}"#,
        );
        assert!(matches!(&got[0], Err(ItemError::Malformed(w)) if w.contains("'value'")));
        let got = items(Method::DeleteMany, r#"{"items": [{"key": "a"}]}"#);
        assert_eq!(
            got[0],
            Ok(CacheOp::Delete {
                group: String::new(),
                key: "a".into()
            })
        );
    }

    #[test]
    fn whole_body_errors() {
        let err = |body: &str| parse(Method::GetMany, body.as_bytes(), 2, 8).unwrap_err();
        assert_eq!(err("not json").status, 400);
        assert!(err("[1]").message.contains(r#"{"items": [...]}"#));
        assert!(err(r#"{"items": [], "x": 1}"#)
            .message
            .contains("unknown field 'x'"));
        let e = err(r#"{"items": [{"key":"a"},{"key":"b"},{"key":"c"}]}"#);
        assert_eq!(e.status, 413);
        assert!(e.message.contains("--max-batch"));
        assert_eq!(
            parse(Method::GetMany, br#"{"items": []}"#, 2, 8),
            Ok(vec![])
        );
    }

    #[test]
    fn results_as_json() {
        let failed = Status::new(Code::Unavailable, "peer down");
        let mut out = Vec::new();
        let results = [
            ItemResult::Value(Some(b"text")),
            ItemResult::Value(Some(&[0, 255])),
            ItemResult::Value(None),
            ItemResult::Stored,
            ItemResult::Deleted(false),
            ItemResult::Failed(&failed),
        ];
        assert_eq!(respond(&mut out, results.into_iter(), true), 200);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"));
        assert!(text.contains("Content-Type: application/json"));
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"results": [
                {"found": true, "value": "text"},
                {"found": true, "value_base64": "AP8="},
                {"found": false},
                {"stored": true},
                {"deleted": false},
                {"error": {"code": "UNAVAILABLE", "status": 503, "message": "peer down"}},
            ]})
        );
    }
}
