//! RecordInferences with its records already encoded. The spill log holds
//! each inference record as its protobuf encoding; a request built from
//! those bytes as they are saves decoding every record only to encode it
//! again. On the wire `repeated bytes records = 1` and `repeated
//! InferenceRecord records = 1` are the same bytes, so monitoring receives
//! an ordinary RecordInferencesRequest.

use http::uri::PathAndQuery;
use keel_core::channel::ServiceChannel;
use keel_proto::v1 as pb;
use prost::bytes::Bytes;
use tonic::Status;

/// `RecordInferencesRequest`, its records left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedRecordInferencesRequest {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub records: Vec<Bytes>,
}

const RECORD_INFERENCES: &str = "/keel.v1.MonitoringService/RecordInferences";

/// Monitoring's RecordInferences, taking encoded records.
#[derive(Clone)]
pub struct RecordInferencesClient {
    grpc: tonic::client::Grpc<ServiceChannel>,
}

impl RecordInferencesClient {
    pub fn new(channel: ServiceChannel) -> RecordInferencesClient {
        RecordInferencesClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// Sends one batch; cloning `records` for a retry copies no bytes.
    pub async fn record(
        &mut self,
        records: Vec<Bytes>,
    ) -> Result<pb::RecordInferencesResponse, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|error| Status::unavailable(format!("monitoring is not ready: {error}")))?;
        let codec = tonic_prost::ProstCodec::<
            EncodedRecordInferencesRequest,
            pb::RecordInferencesResponse,
        >::default();
        let request = tonic::Request::new(EncodedRecordInferencesRequest { records });
        self.grpc
            .unary(request, PathAndQuery::from_static(RECORD_INFERENCES), codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn encoded_records_are_a_record_inferences_request_on_the_wire() {
        let records: Vec<pb::InferenceRecord> = (0..3)
            .map(|index| pb::InferenceRecord {
                request_id: format!("request-{index}"),
                endpoint: "support".to_string(),
                answer: "x".repeat(index * 200),
                served_version: index as u32,
                ..Default::default()
            })
            .collect();
        let encoded = EncodedRecordInferencesRequest {
            records: records
                .iter()
                .map(|record| Bytes::from(record.encode_to_vec()))
                .collect(),
        };
        let original = pb::RecordInferencesRequest { records };
        assert_eq!(encoded.encode_to_vec(), original.encode_to_vec());
        assert_eq!(
            pb::RecordInferencesRequest::decode(encoded.encode_to_vec().as_slice()).unwrap(),
            original
        );
    }
}
