//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, whose
//! messages are byte-for-byte the same on the wire): one request message
//! in, its response out, answered from the `FileDescriptorSet` that
//! build.rs embeds ([`crate::proto::DESCRIPTORS`]), so grpcurl and grpcui
//! can list and describe our services without a proto file. Pure: the
//! stream around it lives in the server.

use super::{Code, Status};
use crate::proto::reflection::v1::{
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
    ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
};
use bytes::Bytes;
use prost::Message;
use std::sync::OnceLock;

/// Every service this server answers, fully qualified.
pub const SERVICES: &[&str] = &[
    "cache.Cache",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Decodes one request and answers it. An undecodable request is the only
/// error (the call should end with it); every question gets a response,
/// unknown names an `error_response`.
pub fn respond(request: &[u8]) -> Result<ServerReflectionResponse, Status> {
    let req = ServerReflectionRequest::decode(request).map_err(|e| {
        Status::new(
            Code::InvalidArgument,
            format!("malformed ServerReflectionRequest message: {e}"),
        )
    })?;
    Ok(answer(req))
}

/// Answers a decoded request; echoes its host and the request itself, as
/// the protocol asks.
pub fn answer(req: ServerReflectionRequest) -> ServerReflectionResponse {
    let index = index();
    let reply = match &req.message_request {
        Some(MessageRequest::ListServices(_)) => {
            MessageResponse::ListServicesResponse(ListServiceResponse {
                service: SERVICES
                    .iter()
                    .map(|s| ServiceResponse {
                        name: s.to_string(),
                    })
                    .collect(),
            })
        }
        Some(MessageRequest::FileByFilename(name)) => match index.file_named(name) {
            Some(i) => index.with_dependencies(i),
            None => not_found(format!("file not found: {name}")),
        },
        Some(MessageRequest::FileContainingSymbol(symbol)) => {
            let symbol = symbol.strip_prefix('.').unwrap_or(symbol);
            match index.file_defining(symbol) {
                Some(i) => index.with_dependencies(i),
                None => not_found(format!("symbol not found: {symbol}")),
            }
        }
        Some(MessageRequest::FileContainingExtension(e)) => not_found(format!(
            "extension not found: {} has no extension {} (this server defines no extensions)",
            e.containing_type, e.extension_number
        )),
        Some(MessageRequest::AllExtensionNumbersOfType(ty)) => {
            let ty = ty.strip_prefix('.').unwrap_or(ty);
            if index.messages.iter().any(|m| m == ty) {
                // A known message: it has no extensions (as grpc-go answers).
                MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                    base_type_name: ty.to_string(),
                    extension_number: Vec::new(),
                })
            } else {
                not_found(format!("message type not found: {ty}"))
            }
        }
        None => error(
            Code::InvalidArgument,
            "the request sets none of message_request's fields".to_string(),
        ),
    };
    ServerReflectionResponse {
        valid_host: req.host.clone(),
        original_request: Some(req),
        message_response: Some(reply),
    }
}

fn not_found(message: String) -> MessageResponse {
    error(Code::NotFound, message)
}

fn error(code: Code, message: String) -> MessageResponse {
    MessageResponse::ErrorResponse(ErrorResponse {
        error_code: code as i32,
        error_message: message,
    })
}

/// What reflection needs of the descriptor set: per file its name, its
/// serialized `FileDescriptorProto` (returned as is) and dependencies, and
/// the fully-qualified symbols it defines.
#[derive(Debug, Default)]
struct Index {
    files: Vec<File>,
    /// Fully-qualified message names of every file.
    messages: Vec<String>,
}

#[derive(Debug)]
struct File {
    name: String,
    raw: Bytes,
    dependencies: Vec<String>,
    symbols: Vec<String>,
}

impl Index {
    fn file_named(&self, name: &str) -> Option<usize> {
        self.files.iter().position(|f| f.name == name)
    }

    fn file_defining(&self, symbol: &str) -> Option<usize> {
        self.files
            .iter()
            .position(|f| f.symbols.iter().any(|s| s == symbol))
    }

    /// The file, then every file it depends on, transitively, once each
    /// (clients need the dependencies to build the descriptor).
    fn with_dependencies(&self, first: usize) -> MessageResponse {
        let mut order = vec![first];
        let mut i = 0;
        while let Some(&f) = order.get(i) {
            for dep in self.files.get(f).map_or(&[][..], |f| &f.dependencies[..]) {
                if let Some(d) = self.file_named(dep) {
                    if !order.contains(&d) {
                        order.push(d);
                    }
                }
            }
            i += 1;
        }
        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
            file_descriptor_proto: order
                .iter()
                .filter_map(|&i| self.files.get(i))
                .map(|f| f.raw.to_vec())
                .collect(),
        })
    }
}

/// Built once per process from the embedded set (a few KB; microseconds).
fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| build_index(crate::proto::DESCRIPTORS))
}

/// An empty index if the set does not decode (it was written by protoc at
/// build time, so that would be a build bug: every lookup then says NOT_FOUND).
fn build_index(set: &[u8]) -> Index {
    let mut index = Index::default();
    let Ok(set) = desc::FileSet::decode(set) else {
        return index;
    };
    for raw in set.file {
        let Ok(f) = desc::File::decode(raw.clone()) else {
            continue;
        };
        let scope = if f.package.is_empty() {
            String::new()
        } else {
            format!("{}.", f.package)
        };
        let mut symbols = Vec::new();
        for m in &f.message_type {
            add_message(&scope, m, &mut symbols, &mut index.messages);
        }
        for e in &f.enum_type {
            add_enum(&scope, e, &mut symbols);
        }
        for s in &f.service {
            let service = format!("{scope}{}", s.name);
            symbols.extend(s.method.iter().map(|m| format!("{service}.{}", m.name)));
            symbols.push(service);
        }
        symbols.extend(f.extension.iter().map(|x| format!("{scope}{}", x.name)));
        index.files.push(File {
            name: f.name,
            raw,
            dependencies: f.dependency,
            symbols,
        });
    }
    index
}

/// A message, its fields, oneofs, extensions, nested messages and enums.
fn add_message(
    scope: &str,
    m: &desc::Message,
    symbols: &mut Vec<String>,
    messages: &mut Vec<String>,
) {
    let full = format!("{scope}{}", m.name);
    for n in m.field.iter().chain(&m.oneof_decl).chain(&m.extension) {
        symbols.push(format!("{full}.{}", n.name));
    }
    let inner = format!("{full}.");
    for nested in &m.nested_type {
        add_message(&inner, nested, symbols, messages);
    }
    for e in &m.enum_type {
        add_enum(&inner, e, symbols);
    }
    symbols.push(full.clone());
    messages.push(full);
}

/// An enum and its values, which protobuf scopes beside the enum, not in it.
fn add_enum(scope: &str, e: &desc::Enum, symbols: &mut Vec<String>) {
    symbols.push(format!("{scope}{}", e.name));
    symbols.extend(e.value.iter().map(|v| format!("{scope}{}", v.name)));
}

/// The few fields of google/protobuf/descriptor.proto that reflection
/// reads (field numbers from that file); prost skips the rest. Files are
/// kept as raw bytes, so nothing is re-encoded.
mod desc {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileSet {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        pub file: Vec<Bytes>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub package: String,
        #[prost(string, repeated, tag = "3")]
        pub dependency: Vec<String>,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<Message>,
        #[prost(message, repeated, tag = "5")]
        pub enum_type: Vec<Enum>,
        #[prost(message, repeated, tag = "6")]
        pub service: Vec<Service>,
        #[prost(message, repeated, tag = "7")]
        pub extension: Vec<Named>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub field: Vec<Named>,
        #[prost(message, repeated, tag = "3")]
        pub nested_type: Vec<Message>,
        #[prost(message, repeated, tag = "4")]
        pub enum_type: Vec<Enum>,
        #[prost(message, repeated, tag = "6")]
        pub extension: Vec<Named>,
        #[prost(message, repeated, tag = "8")]
        pub oneof_decl: Vec<Named>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Enum {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub value: Vec<Named>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Service {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub method: Vec<Named>,
    }

    /// Any descriptor whose name is field 1 (field, method, enum value, oneof).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Named {
        #[prost(string, tag = "1")]
        pub name: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reflection::v1::ExtensionRequest;

    fn ask(r: MessageRequest) -> MessageResponse {
        let req = ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(r),
        };
        let bytes = req.encode_to_vec();
        let resp = respond(&bytes).unwrap();
        assert_eq!(resp.valid_host, "h");
        assert_eq!(resp.original_request.as_ref(), Some(&req));
        resp.message_response.unwrap()
    }

    fn files(r: MessageResponse) -> Vec<desc::File> {
        match r {
            MessageResponse::FileDescriptorResponse(f) => f
                .file_descriptor_proto
                .iter()
                .map(|b| desc::File::decode(&b[..]).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn error_of(r: MessageResponse) -> ErrorResponse {
        match r {
            MessageResponse::ErrorResponse(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_services() {
        match ask(MessageRequest::ListServices(String::new())) {
            MessageResponse::ListServicesResponse(l) => {
                let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(names, SERVICES);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_containing_symbol_for_services_methods_messages_and_enums() {
        for (symbol, file) in [
            ("cache.Cache", "cache.proto"),
            ("cache.Cache.Get", "cache.proto"),
            ("cache.StatsResponse", "cache.proto"),
            (".cache.Request", "cache.proto"),
            ("cache.Request.ttl_ms", "cache.proto"),
            ("grpc.health.v1.Health.Watch", "grpc/health/v1/health.proto"),
            (
                "grpc.health.v1.HealthCheckResponse.ServingStatus",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.health.v1.HealthCheckResponse.SERVING",
                "grpc/health/v1/health.proto",
            ),
            (
                "grpc.reflection.v1.ServerReflection",
                "grpc/reflection/v1/reflection.proto",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflectionRequest",
                "grpc/reflection/v1alpha/reflection.proto",
            ),
        ] {
            let f = files(ask(MessageRequest::FileContainingSymbol(symbol.into())));
            assert_eq!(f.len(), 1, "{symbol}: our protos import nothing");
            assert_eq!(f[0].name, file, "{symbol}");
        }
        let f = files(ask(MessageRequest::FileContainingSymbol(
            "cache.Cache".into(),
        )));
        let methods: Vec<&str> = f[0].service[0]
            .method
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            methods,
            [
                "Get",
                "Set",
                "Delete",
                "Stats",
                "GetMany",
                "SetMany",
                "DeleteMany",
                "Topology",
                "WatchTopology"
            ]
        );
    }

    #[test]
    fn unknown_symbol_is_not_found_and_named() {
        let e = error_of(ask(MessageRequest::FileContainingSymbol(
            "nope.Nope".into(),
        )));
        assert_eq!(e.error_code, Code::NotFound as i32);
        assert!(e.error_message.contains("nope.Nope"), "{}", e.error_message);
        // A prefix of a real name is not a symbol.
        let e = error_of(ask(MessageRequest::FileContainingSymbol("cache".into())));
        assert_eq!(e.error_code, Code::NotFound as i32);
    }

    #[test]
    fn file_by_filename() {
        let f = files(ask(MessageRequest::FileByFilename(
            "grpc/health/v1/health.proto".into(),
        )));
        assert_eq!(f[0].package, "grpc.health.v1");
        let e = error_of(ask(MessageRequest::FileByFilename("missing.proto".into())));
        assert_eq!(e.error_code, Code::NotFound as i32);
        assert!(e.error_message.contains("missing.proto"));
    }

    #[test]
    fn extensions() {
        let e = error_of(ask(MessageRequest::FileContainingExtension(
            ExtensionRequest {
                containing_type: "cache.Request".into(),
                extension_number: 100,
            },
        )));
        assert_eq!(e.error_code, Code::NotFound as i32);
        match ask(MessageRequest::AllExtensionNumbersOfType(
            "cache.Request".into(),
        )) {
            MessageResponse::AllExtensionNumbersResponse(r) => {
                assert_eq!(r.base_type_name, "cache.Request");
                assert!(r.extension_number.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let e = error_of(ask(MessageRequest::AllExtensionNumbersOfType("x.Y".into())));
        assert_eq!(e.error_code, Code::NotFound as i32);
    }

    #[test]
    fn dependencies_follow_the_file_once_each() {
        // Synthetic set: a.proto imports b.proto and c.proto, b imports c.
        let file = |name: &str, deps: &[&str], msg: &str| desc::File {
            name: name.into(),
            package: "p".into(),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            message_type: vec![desc::Message {
                name: msg.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = desc::FileSet {
            file: vec![
                file("a.proto", &["b.proto", "c.proto"], "A")
                    .encode_to_vec()
                    .into(),
                file("b.proto", &["c.proto"], "B").encode_to_vec().into(),
                file("c.proto", &[], "C").encode_to_vec().into(),
            ],
        };
        let index = build_index(&set.encode_to_vec());
        let i = index.file_defining("p.A").unwrap();
        let names: Vec<String> = files(index.with_dependencies(i))
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a.proto", "b.proto", "c.proto"]);
        assert!(
            build_index(b"\xff\xff").files.is_empty(),
            "garbage: empty, no panic"
        );
    }

    #[test]
    fn v1alpha_messages_get_the_same_answers() {
        use crate::proto::reflection::v1alpha as alpha;
        let req = alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                alpha::server_reflection_request::MessageRequest::ListServices("*".into()),
            ),
        };
        let resp = respond(&req.encode_to_vec()).unwrap();
        let resp = alpha::ServerReflectionResponse::decode(&resp.encode_to_vec()[..]).unwrap();
        match resp.message_response {
            Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                assert_eq!(l.service.len(), SERVICES.len())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_and_empty_requests() {
        assert_eq!(respond(b"\xff").unwrap_err().code, Code::InvalidArgument);
        let e = error_of(respond(b"").unwrap().message_response.unwrap());
        assert_eq!(e.error_code, Code::InvalidArgument as i32);
    }
}
