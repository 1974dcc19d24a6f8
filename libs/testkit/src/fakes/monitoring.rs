//! A monitoring that stores the inference records it is sent, in memory,
//! so a test can read back what a service delivered and in which batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_server::{MonitoringService, MonitoringServiceServer};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::TestServer;

#[derive(Clone, Default)]
struct MonitoringState {
    records: Arc<Mutex<Vec<pb::InferenceRecord>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    /// While set, RecordInferences answers UNAVAILABLE and stores nothing.
    refusing: Arc<AtomicBool>,
}

/// The fake monitoring, serving until dropped.
pub struct FakeMonitoring {
    state: MonitoringState,
    server: TestServer,
}

impl FakeMonitoring {
    /// Starts an empty monitoring on port 0.
    pub async fn start() -> FakeMonitoring {
        let state = MonitoringState::default();
        let routes = tonic::service::Routes::new(MonitoringServiceServer::new(state.clone()));
        let server = TestServer::grpc("fake-monitoring", routes).await;
        FakeMonitoring { state, server }
    }

    /// Its gRPC URL, for a service's `monitoring_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A lazy channel to it, for code that takes a channel.
    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    /// Every record received, in arrival order.
    pub fn records(&self) -> Vec<pb::InferenceRecord> {
        self.state.records.lock().unwrap().clone()
    }

    /// The size of each RecordInferences call, in arrival order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.state.batch_sizes.lock().unwrap().clone()
    }

    /// Answers UNAVAILABLE to every RecordInferences while `refusing`: an
    /// outage as a client meets it.
    pub fn set_refusing(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The record of one request, once it arrived.
    pub fn record(&self, request_id: &str) -> Option<pb::InferenceRecord> {
        self.records()
            .into_iter()
            .find(|record| record.request_id == request_id)
    }
}

#[tonic::async_trait]
impl MonitoringService for MonitoringState {
    async fn record_inferences(
        &self,
        request: Request<pb::RecordInferencesRequest>,
    ) -> Result<Response<pb::RecordInferencesResponse>, Status> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(Status::unavailable("fake monitoring is refusing records"));
        }
        let records = request.into_inner().records;
        let stored = records.len() as u64;
        self.batch_sizes.lock().unwrap().push(records.len());
        self.records.lock().unwrap().extend(records);
        Ok(Response::new(pb::RecordInferencesResponse { stored }))
    }

    async fn get_inference(
        &self,
        _: Request<pb::GetInferenceRequest>,
    ) -> Result<Response<pb::InferenceRecord>, Status> {
        unimplemented()
    }

    async fn batch_get_inferences(
        &self,
        _: Request<pb::BatchGetInferencesRequest>,
    ) -> Result<Response<pb::BatchGetInferencesResponse>, Status> {
        unimplemented()
    }

    async fn list_inferences(
        &self,
        _: Request<pb::ListInferencesRequest>,
    ) -> Result<Response<pb::ListInferencesResponse>, Status> {
        unimplemented()
    }

    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        unimplemented()
    }

    async fn get_trace(
        &self,
        _: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        unimplemented()
    }

    async fn search_traces(
        &self,
        _: Request<pb::SearchTracesRequest>,
    ) -> Result<Response<pb::SearchTracesResponse>, Status> {
        unimplemented()
    }
}
