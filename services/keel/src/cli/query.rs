//! `keel query ENDPOINT "question"`: one question through serving, answered
//! whole or, with `--stream`, piece by piece as the model writes it.

use keel_proto::v1::query_stream_event::Event;
use keel_proto::v1::{Citation, QueryRequest, QueryResponse};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    pub endpoint: String,
    pub question: String,
    /// Requests of the same user stick to the same route
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Print the answer as it is generated (serving's QueryStream)
    #[arg(long)]
    pub stream: bool,
}

pub async fn run(urls: &ServiceUrls, args: QueryArgs) -> Result<(), CliError> {
    if args.stream {
        return stream(urls, &args).await;
    }
    let response = query(urls, &args).await?;
    output::query_response(&response);
    Ok(())
}

fn request(args: &QueryArgs) -> QueryRequest {
    QueryRequest {
        endpoint: args.endpoint.clone(),
        question: args.question.clone(),
        messages: Vec::new(),
        user_id: args.user.clone().unwrap_or_default(),
        session_id: String::new(),
        ..Default::default()
    }
}

pub async fn query(urls: &ServiceUrls, args: &QueryArgs) -> Result<QueryResponse, CliError> {
    let response = urls
        .serving()
        .await?
        .query(request(args))
        .await
        .map_err(rpc("serving Query"))?;
    Ok(response.into_inner())
}

async fn stream(urls: &ServiceUrls, args: &QueryArgs) -> Result<(), CliError> {
    let mut events = urls
        .serving()
        .await?
        .query_stream(request(args))
        .await
        .map_err(rpc("serving QueryStream"))?
        .into_inner();
    let mut citations: Vec<Citation> = Vec::new();
    while let Some(event) = events.message().await.map_err(rpc("serving QueryStream"))? {
        match event.event {
            Some(Event::Citations(first)) => citations = first.citations,
            Some(Event::Delta(delta)) => output::answer_delta(&delta.text),
            Some(Event::Done(done)) => {
                output::streamed_query_done(&citations, &done);
                return Ok(());
            }
            None => {}
        }
    }
    Err(CliError::Invalid(
        "serving ended the answer stream without its final message".to_string(),
    ))
}
