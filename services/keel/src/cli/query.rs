//! `keel query ENDPOINT "question"`: one question through serving.

use keel_proto::v1::{QueryRequest, QueryResponse};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    pub endpoint: String,
    pub question: String,
    /// Requests of the same user stick to the same route
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

pub async fn run(urls: &ServiceUrls, args: QueryArgs) -> Result<(), CliError> {
    let response = query(urls, &args).await?;
    output::query_response(&response);
    Ok(())
}

pub async fn query(urls: &ServiceUrls, args: &QueryArgs) -> Result<QueryResponse, CliError> {
    let request = QueryRequest {
        endpoint: args.endpoint.clone(),
        question: args.question.clone(),
        messages: Vec::new(),
        user_id: args.user.clone().unwrap_or_default(),
        session_id: String::new(),
    };
    let response = urls
        .serving()
        .await?
        .query(request)
        .await
        .map_err(rpc("serving Query"))?;
    Ok(response.into_inner())
}
