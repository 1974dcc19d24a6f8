//! How each served version fares with users: the requests whose latest
//! thumbs or rating liked, disliked or was neutral about the answer, and
//! those flagged, per (model, version). Read through the same joined pages
//! as the dataset exports, so a request counts once, by its latest verdict.

use std::collections::BTreeMap;

use keel_store::Store;

use crate::dataset_export::{export_query, JoinedPages};
use crate::error::Error;
use crate::export::Judgement;
use crate::feedback::ExportFilter;
use crate::monitoring_client::MonitoringClient;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionFeedback {
    pub served_model: String,
    pub served_version: u32,
    pub requests: u64,
    pub liked: u64,
    pub disliked: u64,
    pub neutral: u64,
    pub flagged: u64,
}

/// The versions the matching feedback judged, by model then version.
pub async fn summarise(
    store: &Store,
    monitoring: &MonitoringClient,
    filter: &ExportFilter,
) -> Result<Vec<VersionFeedback>, Error> {
    let mut by_version: BTreeMap<(String, u32), VersionFeedback> = BTreeMap::new();
    let mut pages = JoinedPages::start(store, monitoring, &export_query(filter), None);
    while let Some(page) = pages.next().await? {
        for request in page.joined {
            let inference = request.inference;
            let key = (inference.served_model.clone(), inference.served_version);
            let counts = by_version.entry(key).or_insert_with(|| VersionFeedback {
                served_model: inference.served_model,
                served_version: inference.served_version,
                ..VersionFeedback::default()
            });
            counts.requests += 1;
            match request.verdict.judgement() {
                Some(Judgement::Liked) => counts.liked += 1,
                Some(Judgement::Disliked) => counts.disliked += 1,
                Some(Judgement::Neutral) => counts.neutral += 1,
                None => {}
            }
            counts.flagged += u64::from(request.verdict.is_flagged());
        }
    }
    Ok(by_version.into_values().collect())
}
