//! `keel_proto::OTLP_FILE_DESCRIPTOR_SET` registered beside Keel's own set,
//! as the shared gRPC bootstrap should register it for the monitoring
//! port: reflection then describes the OTLP TraceService and still
//! describes Keel's services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::Message;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    answers
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

#[tokio::test]
async fn reflection_describes_the_otlp_trace_service() {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(keel_proto::OTLP_FILE_DESCRIPTOR_SET)
        .build_v1()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.clone().cancelled_owned(),
            ),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);

    let MessageResponse::ListServicesResponse(listed) =
        ask(&mut client, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&keel_monitoring::OTLP_TRACE_SERVICE.to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"keel.v1.MonitoringService".to_string()));

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &mut client,
        MessageRequest::FileContainingSymbol(keel_monitoring::OTLP_TRACE_SERVICE.to_string()),
    )
    .await
    else {
        panic!("expected the file of the TraceService");
    };
    let descriptors: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let service_file = descriptors
        .iter()
        .find(|file| file.name() == "opentelemetry/proto/collector/trace/v1/trace_service.proto")
        .unwrap();
    let service = &service_file.service[0];
    assert_eq!(service.name(), "TraceService");
    assert_eq!(service.method[0].name(), "Export");
    assert_eq!(
        service.method[0].input_type(),
        ".opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"
    );

    // The messages it uses resolve too (a client needs them to call it).
    let MessageResponse::FileDescriptorResponse(span_file) = ask(
        &mut client,
        MessageRequest::FileContainingSymbol("opentelemetry.proto.trace.v1.Span".to_string()),
    )
    .await
    else {
        panic!("expected the file of Span");
    };
    assert!(!span_file.file_descriptor_proto.is_empty());

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
