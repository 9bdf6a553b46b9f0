//! gRPC server reflection and health Watch against the real binary, with
//! stock tonic clients generated from proto/grpc/reflection/*/reflection.proto
//! and proto/grpc/health/v1/health.proto: list services and describe
//! cache.Cache on one bidirectional stream (v1 and v1alpha), NOT_FOUND for
//! unknown symbols, and a Watch that sees SERVING, then NOT_SERVING and
//! UNAVAILABLE when the node is told to stop, which it still does.

mod common;

use common::{block_on, Node};
use prost::Message;
use std::time::Duration;

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/client/grpc.reflection.v1.rs"));
}
pub mod v1alpha {
    include!(concat!(
        env!("OUT_DIR"),
        "/client/grpc.reflection.v1alpha.rs"
    ));
}
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/client/grpc.health.v1.rs"));
}

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

const STEP: Duration = Duration::from_secs(10);

/// A request stream fed from a channel, so requests can follow responses.
fn outbound<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_lite::Stream<Item = T> + Send + 'static {
    futures_lite::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

fn v1_request(r: MessageRequest) -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    }
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(STEP, s.message())
        .await
        .expect("no response within 10 s")
        .expect("stream failed")
        .expect("stream ended early")
}

#[test]
fn reflection_lists_and_describes_on_one_stream() {
    let node = Node::start();
    block_on(async {
        let mut c = v1::server_reflection_client::ServerReflectionClient::new(node.channel().await);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Our server answers (and sends its headers) once the first request arrives.
        tx.send(v1_request(MessageRequest::ListServices(String::new())))
            .await
            .unwrap();
        let mut inbound = c
            .server_reflection_info(outbound(rx))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();

        let r = next(&mut inbound).await;
        let Some(MessageResponse::ListServicesResponse(l)) = r.message_response else {
            panic!("{r:?}")
        };
        let names: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cache.Cache",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"
            ]
        );

        // Second exchange on the same stream.
        tx.send(v1_request(MessageRequest::FileContainingSymbol(
            "cache.Cache".into(),
        )))
        .await
        .unwrap();
        let r = next(&mut inbound).await;
        assert_eq!(
            r.original_request
                .as_ref()
                .and_then(|o| o.message_request.clone()),
            Some(MessageRequest::FileContainingSymbol("cache.Cache".into()))
        );
        let Some(MessageResponse::FileDescriptorResponse(f)) = r.message_response else {
            panic!("{r:?}")
        };
        let file = prost_types::FileDescriptorProto::decode(&f.file_descriptor_proto[0][..])
            .expect("a FileDescriptorProto");
        assert_eq!(file.name(), "cache.proto");
        assert_eq!(file.package(), "cache");
        let service = &file.service[0];
        assert_eq!(service.name(), "Cache");
        let methods: Vec<(&str, &str, &str)> = service
            .method
            .iter()
            .map(|m| (m.name(), m.input_type(), m.output_type()))
            .collect();
        assert_eq!(
            methods,
            [
                ("Get", ".cache.Request", ".cache.GetResponse"),
                ("Set", ".cache.Request", ".cache.SetResponse"),
                ("Delete", ".cache.Request", ".cache.DeleteResponse"),
                ("Stats", ".cache.StatsRequest", ".cache.StatsResponse"),
                ("GetMany", ".cache.ManyRequest", ".cache.GetManyResponse"),
                ("SetMany", ".cache.ManyRequest", ".cache.SetManyResponse"),
                (
                    "DeleteMany",
                    ".cache.ManyRequest",
                    ".cache.DeleteManyResponse"
                ),
                (
                    "Topology",
                    ".cache.TopologyRequest",
                    ".cache.TopologyResponse"
                ),
                (
                    "WatchTopology",
                    ".cache.TopologyRequest",
                    ".cache.TopologyResponse"
                ),
            ]
        );

        // A method and a message resolve too; an unknown symbol does not.
        for symbol in ["grpc.health.v1.Health.Watch", "cache.Request"] {
            tx.send(v1_request(MessageRequest::FileContainingSymbol(
                symbol.into(),
            )))
            .await
            .unwrap();
            let r = next(&mut inbound).await;
            assert!(
                matches!(
                    r.message_response,
                    Some(MessageResponse::FileDescriptorResponse(_))
                ),
                "{symbol}: {r:?}"
            );
        }
        tx.send(v1_request(MessageRequest::FileContainingSymbol(
            "nope.Missing".into(),
        )))
        .await
        .unwrap();
        let r = next(&mut inbound).await;
        let Some(MessageResponse::ErrorResponse(e)) = r.message_response else {
            panic!("{r:?}")
        };
        assert_eq!(e.error_code, tonic::Code::NotFound as i32);
        assert!(
            e.error_message.contains("nope.Missing"),
            "{}",
            e.error_message
        );

        // Half-close: the server ends the stream with OK.
        drop(tx);
        let end = tokio::time::timeout(STEP, inbound.message())
            .await
            .expect("stream did not end");
        assert!(matches!(end, Ok(None)), "{end:?}");
        node.assert_healthy().await;
    });
}

#[test]
fn reflection_v1alpha_lists_services() {
    use v1alpha::server_reflection_request::MessageRequest as Req;
    use v1alpha::server_reflection_response::MessageResponse as Resp;
    let node = Node::start();
    block_on(async {
        let mut c =
            v1alpha::server_reflection_client::ServerReflectionClient::new(node.channel().await);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(v1alpha::ServerReflectionRequest {
            host: "localhost".into(),
            message_request: Some(Req::ListServices("*".into())),
        })
        .await
        .unwrap();
        let mut inbound = c
            .server_reflection_info(outbound(rx))
            .await
            .expect("v1alpha ServerReflectionInfo")
            .into_inner();
        let r = next(&mut inbound).await;
        assert_eq!(r.valid_host, "localhost");
        let Some(Resp::ListServicesResponse(l)) = r.message_response else {
            panic!("{r:?}")
        };
        assert!(l.service.iter().any(|s| s.name == "cache.Cache"), "{l:?}");
        assert_eq!(l.service.len(), 4);
        tx.send(v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(Req::FileByFilename("grpc/health/v1/health.proto".into())),
        })
        .await
        .unwrap();
        let r = next(&mut inbound).await;
        let Some(Resp::FileDescriptorResponse(f)) = r.message_response else {
            panic!("{r:?}")
        };
        let file = prost_types::FileDescriptorProto::decode(&f.file_descriptor_proto[0][..])
            .expect("a FileDescriptorProto");
        let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Check", "Watch"]);
        assert_eq!(file.service[0].method[1].server_streaming, Some(true));
    });
}

#[test]
fn health_watch_sees_serving_then_not_serving_and_the_node_still_exits() {
    use health::health_check_response::ServingStatus;
    use health::health_client::HealthClient;
    use health::HealthCheckRequest;
    let node = Node::start();
    block_on(async {
        let mut c = HealthClient::new(node.channel().await);
        let watch = |service: &str| {
            let mut c = c.clone();
            let req = HealthCheckRequest {
                service: service.into(),
            };
            async move { c.watch(req).await.expect("Watch").into_inner() }
        };
        let mut node_watch = watch("").await;
        let mut unknown = watch("nope.Service").await;
        assert_eq!(
            next(&mut node_watch).await.status,
            ServingStatus::Serving as i32
        );
        assert_eq!(
            next(&mut unknown).await.status,
            ServingStatus::ServiceUnknown as i32
        );
        // Nothing changes, so nothing more is sent; the streams stay open.
        let quiet = tokio::time::timeout(Duration::from_millis(300), node_watch.message()).await;
        assert!(quiet.is_err(), "unexpected {quiet:?}");
        // Check still works beside the open watches, on the same connection.
        let r = c
            .check(HealthCheckRequest {
                service: "cache.Cache".into(),
            })
            .await
            .expect("Check")
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32);

        node.sigterm();
        assert_eq!(
            next(&mut node_watch).await.status,
            ServingStatus::NotServing as i32
        );
        for (name, s) in [("node", &mut node_watch), ("unknown", &mut unknown)] {
            let end = tokio::time::timeout(STEP, s.message())
                .await
                .unwrap_or_else(|_| panic!("{name} watch did not end"));
            match end {
                Err(st) => assert_eq!(st.code(), tonic::Code::Unavailable, "{name}: {st:?}"),
                other => panic!("{name}: expected UNAVAILABLE, got {other:?}"),
            }
        }
    });
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node did not exit after SIGTERM with watches open");
    assert!(status.success(), "exit status {status:?}");
}

/// Message framing on a streaming call, with a raw HTTP/2 client: two
/// requests whose bytes straddle DATA frames get two responses and OK; a
/// compressed message ends its call with UNIMPLEMENTED; the connection goes on.
#[test]
fn reflection_messages_across_and_within_data_frames() {
    use common::h2raw::{self, RawConn, DATA, END_STREAM};
    let node = Node::start();
    let mut c = RawConn::handshake(node.addr);
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let mut wire = h2raw::grpc_message(
        &v1_request(MessageRequest::ListServices(String::new())).encode_to_vec(),
        false,
    );
    wire.extend(h2raw::grpc_message(
        &v1_request(MessageRequest::FileByFilename("cache.proto".into())).encode_to_vec(),
        false,
    ));
    let cut = wire.len() - 4;
    c.send_headers(1, &h2raw::grpc_headers(path, &[]), false)
        .unwrap();
    c.send_frame(DATA, 0, 1, &wire[..cut]).unwrap();
    c.send_frame(DATA, END_STREAM, 1, &wire[cut..]).unwrap();
    let r = c.read_response(1, STEP);
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    let msgs = r.grpc_messages();
    assert_eq!(msgs.len(), 2, "{r:?}");
    let second = v1::ServerReflectionResponse::decode(&msgs[1].1[..]).unwrap();
    assert!(matches!(
        second.message_response,
        Some(MessageResponse::FileDescriptorResponse(_))
    ));

    c.send_headers(3, &h2raw::grpc_headers(path, &[]), false)
        .unwrap();
    c.send_frame(DATA, 0, 3, &h2raw::grpc_message(b"x", true))
        .unwrap();
    let r = c.read_response(3, STEP);
    assert_eq!(r.grpc_status(), Some(12), "{r:?}");
    node.assert_healthy_blocking();
}
