//! The registry server on port 0 over a fresh database, and the requests
//! the registry's tests build on.

#![allow(dead_code)]

use keel_proto::v1 as pb;
use keel_registry::Config;
use keel_testkit::server::Ports;
use keel_testkit::{Backend, TestDatabase, TestServer};
use pb::registry_service_client::RegistryServiceClient;
use tonic::transport::Channel;

pub type Client = RegistryServiceClient<Channel>;

/// The registry on port 0 over a fresh database on one backend.
pub struct Registry {
    pub client: Client,
    pub server: TestServer<keel_registry::Error>,
    database: TestDatabase,
}

impl Registry {
    pub async fn start(backend: Backend) -> Registry {
        Registry::start_on(TestDatabase::fresh(backend).await).await
    }

    /// The registry over `database`, which an earlier one may have used.
    pub async fn start_on(database: TestDatabase) -> Registry {
        let config = Config {
            database_url: database.url.clone(),
            ..Config::default()
        };
        let server = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
            keel_registry::serve(config, listeners, shutdown)
        })
        .await;
        let client = RegistryServiceClient::new(server.connect().await);
        Registry {
            client,
            server,
            database,
        }
    }

    /// Shuts down and checks the server drains and returns cleanly; hands
    /// the database back for a restart.
    pub async fn stop(self) -> TestDatabase {
        self.server.stop().await.unwrap();
        self.database
    }
}

pub async fn create_model(client: &mut Client, name: &str, kind: pb::ModelKind) -> pb::Model {
    let request = pb::CreateModelRequest {
        name: name.to_string(),
        kind: kind as i32,
        description: format!("{name} for tests"),
        tags: [("team".to_string(), "search".to_string())].into(),
    };
    client.create_model(request).await.unwrap().into_inner()
}

pub fn prompt_version(model: &str, template: &str) -> pb::CreateVersionRequest {
    pb::CreateVersionRequest {
        model: model.to_string(),
        spec: Some(pb::create_version_request::Spec::Prompt(pb::PromptSpec {
            template: template.to_string(),
        })),
        description: String::new(),
        tags: Default::default(),
        lineage: None,
    }
}
