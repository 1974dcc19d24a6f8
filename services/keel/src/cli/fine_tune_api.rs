//! A client of an OpenAI-compatible fine-tuning API: upload a training
//! file (`POST /files`, purpose `fine-tune`), create a job (`POST
//! /fine_tuning/jobs`) and read it back (`GET /fine_tuning/jobs/{id}`) until
//! it has finished. Blocking (ureq), like Keel's OpenAI generator: call it
//! from `spawn_blocking`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use ureq::unversioned::multipart::{Form, Part};

use crate::cli::CliError;

pub struct FineTuneApi {
    /// Ends in `/v1` for OpenAI itself, e.g. `https://api.openai.com/v1`.
    base_url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FineTuneJob {
    pub id: String,
    /// `validating_files`, `queued`, `running`, `succeeded`, `failed` or
    /// `cancelled`.
    pub status: String,
    /// Set once the job succeeded: the model to ask for.
    #[serde(default)]
    pub fine_tuned_model: Option<String>,
    #[serde(default)]
    pub error: Option<JobError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobError {
    #[serde(default)]
    pub message: String,
}

impl FineTuneJob {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

#[derive(Deserialize)]
struct UploadedFile {
    id: String,
}

impl FineTuneApi {
    pub fn new(base_url: &str, api_key: Option<String>) -> FineTuneApi {
        let config = ureq::Agent::config_builder()
            // The server's explanation is in the body of an error status.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build();
        FineTuneApi {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Uploads the JSONL training file; returns its id.
    pub fn upload(&self, path: &Path) -> Result<String, CliError> {
        let bytes = std::fs::read(path).map_err(CliError::io(path))?;
        let file_name = path
            .file_name()
            .map_or_else(|| "train.jsonl".into(), |name| name.to_string_lossy());
        let part = Part::bytes(&bytes)
            .file_name(&file_name)
            .mime_str("application/jsonl")
            .map_err(|error| CliError::Invalid(format!("fine-tuning upload: {error}")))?;
        let form = Form::new().text("purpose", "fine-tune").part("file", part);
        let url = format!("{}/files", self.base_url);
        let response = self.authorised(self.agent.post(&url)).send(form);
        let uploaded: UploadedFile = read_json("POST /files", response)?;
        Ok(uploaded.id)
    }

    /// Starts fine-tuning `model` on the uploaded `training_file`.
    pub fn create_job(
        &self,
        training_file: &str,
        model: &str,
        suffix: &str,
    ) -> Result<FineTuneJob, CliError> {
        let url = format!("{}/fine_tuning/jobs", self.base_url);
        let body = serde_json::json!({
            "training_file": training_file,
            "model": model,
            "suffix": suffix,
        });
        let response = self.authorised(self.agent.post(&url)).send_json(body);
        read_json("POST /fine_tuning/jobs", response)
    }

    pub fn job(&self, id: &str) -> Result<FineTuneJob, CliError> {
        let url = format!("{}/fine_tuning/jobs/{id}", self.base_url);
        let response = self.authorised(self.agent.get(&url)).call();
        read_json("GET /fine_tuning/jobs", response)
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.api_key {
            Some(key) => request.header("authorization", format!("Bearer {key}")),
            None => request,
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    call: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<T, CliError> {
    let failed = |detail: String| CliError::Remote(format!("fine-tuning API {call}: {detail}"));
    let mut response = response.map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|error| failed(error.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}: {body}")));
    }
    serde_json::from_str(&body).map_err(|error| failed(format!("{error} in {body}")))
}
