//! The standard gRPC health service, called with a stock tonic client
//! generated from proto/grpc/health/v1/health.proto: SERVING for the node
//! and for cache.Cache, NOT_FOUND for unknown services.

mod common;

use common::{block_on, Node};

pub mod health {
    include!(concat!(env!("OUT_DIR"), "/client/grpc.health.v1.rs"));
}

use health::health_check_response::ServingStatus;
use health::health_client::HealthClient;
use health::HealthCheckRequest;

#[test]
fn health_check_reports_serving_and_unknown_services() {
    let node = Node::builder().shards(2).start();
    block_on(async {
        let mut c = HealthClient::new(node.channel().await);
        for service in ["", "cache.Cache"] {
            let r = c
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .unwrap_or_else(|e| panic!("Check({service:?}) failed: {e}"))
                .into_inner();
            assert_eq!(
                r.status,
                ServingStatus::Serving as i32,
                "service {service:?}"
            );
        }
        let err = c
            .check(HealthCheckRequest {
                service: "nope.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.message().contains("nope.Service"), "{}", err.message());
        // The cache keeps working on the same connection.
        node.assert_healthy().await;
    });
}
