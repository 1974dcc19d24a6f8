//! The client of the monitoring service: fetches the inference records that
//! feedback refers to.

use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_core::tls::ClientTls;
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_types::{InferenceRecord, RequestId};
use tonic::Code;

use crate::error::Error;

/// Monitoring's BatchGetInferences limit.
pub const BATCH_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct MonitoringClient {
    client: MonitoringServiceClient<ServiceChannel>,
}

impl MonitoringClient {
    /// A client that connects on first use, so the feedback service starts
    /// while monitoring is down; every call has `timeout` as its deadline
    /// and presents `key`, over TLS for an `https://` url.
    pub fn connect_lazy(
        url: &str,
        timeout: Duration,
        key: Option<&str>,
        tls: &ClientTls,
    ) -> Result<MonitoringClient, Error> {
        let endpoint = tls
            .endpoint(url)
            .map_err(|error| Error::InvalidMonitoringUrl {
                url: url.to_string(),
                message: error.to_string(),
            })?;
        let channel = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        let channel =
            ServiceChannel::new(channel, key).map_err(|error| Error::InvalidMonitoringUrl {
                url: url.to_string(),
                message: error.to_string(),
            })?;
        Ok(MonitoringClient {
            client: MonitoringServiceClient::new(channel),
        })
    }

    /// The records monitoring knows among `request_ids`, fetched in chunks.
    /// With `keep_until_ms`, monitoring's retention keeps those it found at
    /// least until then: feedback refers to them.
    pub async fn batch_get_inferences(
        &self,
        request_ids: &[RequestId],
        keep_until_ms: Option<i64>,
    ) -> Result<Vec<InferenceRecord>, Error> {
        let mut inferences = Vec::with_capacity(request_ids.len());
        for chunk in request_ids.chunks(BATCH_LIMIT) {
            let request = pb::BatchGetInferencesRequest {
                request_ids: chunk.iter().map(ToString::to_string).collect(),
                keep_until_ms: keep_until_ms.unwrap_or_default(),
            };
            let response = self
                .client
                .clone()
                .batch_get_inferences(request)
                .await
                .map_err(error_from_status)?;
            for record in response.into_inner().records {
                inferences.push(record_from_proto(record)?);
            }
        }
        Ok(inferences)
    }
}

fn error_from_status(status: tonic::Status) -> Error {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // Unknown is what a failed connection or a broken stream reads as.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::ResourceExhausted => {
            tracing::warn!(error = %message, "monitoring call failed");
            Error::MonitoringUnavailable { message }
        }
        _ => Error::Monitoring { message },
    }
}

/// A record monitoring sent that breaks the record's rules is monitoring's
/// fault, not the caller's.
fn record_from_proto(record: pb::InferenceRecord) -> Result<InferenceRecord, Error> {
    InferenceRecord::from_proto("record", record).map_err(|error| Error::Monitoring {
        message: format!("malformed inference record: {error}"),
    })
}
