//! `keel collection create|list|drop|export`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use keel_proto::v1::{
    Collection, CreateCollectionRequest, DropCollectionRequest, ListCollectionsRequest, Metric,
};

use crate::cli::error::rpc;
use crate::cli::scroll::{for_each_point, payload_json};
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Create a collection whose points are embedded by EMBEDDER
    Create(CreateCollectionArgs),
    /// List the collections
    List,
    /// Drop a collection and its points
    Drop { name: String },
    /// Write every point (id, text, payload) as JSON lines
    Export {
        name: String,
        /// The JSONL file to write
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateCollectionArgs {
    pub name: String,
    /// The embedder that embeds point texts and query texts: `minilm`
    /// (all-MiniLM-L6-v2 in process) or the built-in `hashing`
    #[arg(long, default_value = "minilm")]
    pub embedder: String,
    /// The vector dimension; 0 takes the embedder's
    #[arg(long, default_value_t = 0)]
    pub dimension: u32,
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// A payload key to index, so that filters on it need no scan
    /// (repeatable)
    #[arg(long = "index-key", value_name = "KEY")]
    pub indexed_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    Cosine,
    Dot,
    L2,
}

impl MetricArg {
    fn to_proto(self) -> Metric {
        match self {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::Dot => Metric::Dot,
            MetricArg::L2 => Metric::L2,
        }
    }
}

pub async fn run(urls: &ServiceUrls, command: CollectionCommand) -> Result<(), CliError> {
    match command {
        CollectionCommand::Create(args) => {
            let collection = create(urls, &args).await?;
            output::collection(&collection);
        }
        CollectionCommand::List => {
            let collections = list(urls).await?;
            output::collections(&collections);
        }
        CollectionCommand::Drop { name } => {
            drop_collection(urls, &name).await?;
            output::collection_dropped(&name);
        }
        CollectionCommand::Export { name, out } => {
            let points = export(urls, &name, &out).await?;
            output::collection_exported(&name, points, &out);
        }
    }
    Ok(())
}

pub async fn create(
    urls: &ServiceUrls,
    args: &CreateCollectionArgs,
) -> Result<Collection, CliError> {
    let request = CreateCollectionRequest {
        name: args.name.clone(),
        dimension: args.dimension,
        metric: args.metric.to_proto() as i32,
        embedder: args.embedder.clone(),
        hnsw: None,
        indexed_payload_keys: args.indexed_keys.clone(),
    };
    let response = urls
        .vector_index()
        .await?
        .create_collection(request)
        .await
        .map_err(rpc("vector-index CreateCollection"))?;
    Ok(response.into_inner())
}

pub async fn list(urls: &ServiceUrls) -> Result<Vec<Collection>, CliError> {
    let response = urls
        .vector_index()
        .await?
        .list_collections(ListCollectionsRequest {})
        .await
        .map_err(rpc("vector-index ListCollections"))?;
    Ok(response.into_inner().collections)
}

pub async fn drop_collection(urls: &ServiceUrls, name: &str) -> Result<(), CliError> {
    urls.vector_index()
        .await?
        .drop_collection(DropCollectionRequest {
            name: name.to_string(),
        })
        .await
        .map_err(rpc("vector-index DropCollection"))?;
    Ok(())
}

/// Writes every point of `collection` to `out`, one JSON object per line
/// (`id`, `text`, `payload`), by id; returns how many.
pub async fn export(urls: &ServiceUrls, collection: &str, out: &Path) -> Result<u64, CliError> {
    let mut client = urls.vector_index().await?;
    let file = std::fs::File::create(out).map_err(CliError::io(out))?;
    let mut writer = std::io::BufWriter::new(file);
    let progress = output::spinner("points");
    let mut written = 0;
    for_each_point(&mut client, collection, None, true, |point| {
        let payload = payload_json(&point)?;
        let line = serde_json::json!({"id": point.id, "text": point.text, "payload": payload});
        writeln!(writer, "{line}").map_err(CliError::io(out))?;
        written += 1;
        progress.inc(1);
        Ok(())
    })
    .await?;
    writer.flush().map_err(CliError::io(out))?;
    progress.finish_and_clear();
    Ok(written)
}
