//! Models and their immutable versions: creation, lookup, listing. Alias
//! moves live in `aliases.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel_core::CancellationToken;
use keel_store::Store;
use keel_types::model_ref::validate_alias;
use keel_types::{validate, FieldError, ModelRef, Selector};
use tokio::sync::Mutex;

use crate::alias_feed::AliasFeed;
use crate::error::Error;
use crate::lineage::Lineage;
use crate::metrics::Metrics;
use crate::spec::{validate_chain, validate_prompt, ModelKind, VersionSpec};
use crate::{pagination, store};

pub const MAX_DESCRIPTION_BYTES: usize = 4096;
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_KEY_CHARS: usize = 64;
pub const MAX_TAG_VALUE_BYTES: usize = 1024;

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub tags: Tags,
    pub created_at_ms: i64,
    /// 0 while the model has no version.
    pub latest_version: u32,
    /// alias -> version
    pub aliases: BTreeMap<String, u32>,
}

#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: String,
    pub kind: ModelKind,
    pub description: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub model: String,
    pub version: u32,
    pub kind: ModelKind,
    pub spec: VersionSpec,
    pub description: String,
    pub tags: Tags,
    pub created_at_ms: i64,
    /// Aliases pointing at this version now, by name.
    pub aliases: Vec<String>,
    pub lineage: Lineage,
}

#[derive(Debug, Clone)]
pub struct NewVersion {
    pub model: String,
    /// None when the request carried no spec (rejected on `spec`).
    pub spec: Option<VersionSpec>,
    pub description: String,
    pub tags: Tags,
    pub lineage: Lineage,
}

/// A page of a listing; `next_page_token` is empty on the last page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// The registry: the store, plus the feed alias moves are published on
/// after they commit.
pub struct Registry {
    pub(crate) store: Store,
    pub(crate) feed: AliasFeed,
    /// Serialises alias moves in this process from transaction start to
    /// publication. (Across replicas the counter row lock in
    /// `store::next_event_sequence` orders the commits.)
    pub(crate) alias_moves: Mutex<()>,
    /// Ends watch streams on shutdown so the server can drain.
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
}

impl Registry {
    /// A registry on `store` whose watchers see the moves committed from
    /// now on (by this replica; run [`Registry::follow_alias_moves`] for the
    /// others').
    pub async fn open(
        store: Store,
        watch_buffer: usize,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Registry, Error> {
        let feed = AliasFeed::open(&store, watch_buffer).await?;
        Ok(Registry {
            store,
            feed,
            alias_moves: Mutex::new(()),
            shutdown,
            metrics: Arc::new(metrics),
        })
    }

    /// Publishes the moves other replicas commit to the watchers here,
    /// until shutdown.
    pub async fn follow_alias_moves(&self, database_url: &str) {
        self.feed
            .follow(&self.store, database_url, self.shutdown.clone())
            .await;
    }

    pub async fn create_model(&self, new_model: NewModel) -> Result<Model, Error> {
        validate::name("name", &new_model.name)?;
        validate::max_len("description", &new_model.description, MAX_DESCRIPTION_BYTES)?;
        validate_tags(&new_model.tags)?;
        let created_at_ms = keel_core::time::now_ms();
        let row: store::ModelRow = (
            new_model.name.clone(),
            new_model.kind.code(),
            new_model.description.clone(),
            tags_to_json(&new_model.tags)?,
            created_at_ms,
            0,
        );
        let mut tx = self.store.begin_write().await?;
        let inserted = store::insert_model(tx.conn(), &row).await?;
        if !inserted {
            return Err(Error::AlreadyExists(format!(
                "model `{}` already exists",
                new_model.name
            )));
        }
        tx.commit().await?;
        self.metrics.models_created.inc();
        tracing::info!(model = %new_model.name, kind = new_model.kind.label(), "model created");
        Ok(Model {
            name: new_model.name,
            kind: new_model.kind,
            description: new_model.description,
            tags: new_model.tags,
            created_at_ms,
            latest_version: 0,
            aliases: BTreeMap::new(),
        })
    }

    pub async fn get_model(&self, name: &str) -> Result<Model, Error> {
        validate::name("name", name)?;
        let mut conn = self.store.pool().acquire().await?;
        let row = store::get_model(&mut conn, name)
            .await?
            .ok_or_else(|| model_not_found(name))?;
        let alias_rows = store::list_aliases(&mut conn, name).await?;
        model_from_row(row, &alias_rows)
    }

    pub async fn list_models(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Model>, Error> {
        let limit = validate::page_size("page_size", page_size)?;
        let after = pagination::decode("page_token", page_token)?.unwrap_or_default();
        let mut conn = self.store.pool().acquire().await?;
        let rows = store::list_models(&mut conn, &after, i64::from(limit)).await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: String::new(),
            });
        };
        let alias_rows = store::aliases_in_range(&mut conn, &first.0, &last.0).await?;
        let next_page_token = if rows.len() == limit as usize {
            pagination::encode(&last.0)
        } else {
            String::new()
        };
        let mut models = Vec::with_capacity(rows.len());
        for row in rows {
            models.push(model_from_row(row, &alias_rows)?);
        }
        Ok(Page {
            items: models,
            next_page_token,
        })
    }

    pub async fn create_version(&self, new_version: NewVersion) -> Result<ModelVersion, Error> {
        validate::name("model", &new_version.model)?;
        validate::max_len(
            "description",
            &new_version.description,
            MAX_DESCRIPTION_BYTES,
        )?;
        validate_tags(&new_version.tags)?;
        new_version.lineage.validate()?;
        let Some(spec) = new_version.spec else {
            return Err(FieldError::new("spec", "must be set to a prompt or a chain").into());
        };
        let model_kind = self.model_kind(&new_version.model).await?;
        if spec.kind() != model_kind {
            return Err(Error::FailedPrecondition(format!(
                "field `spec`: model `{}` is a {} model, got a {} spec",
                new_version.model,
                model_kind.label(),
                spec.kind().label()
            )));
        }
        let spec = match spec {
            VersionSpec::Prompt(prompt) => {
                // Parsing a 64 KiB template can take milliseconds.
                let prompt =
                    tokio::task::spawn_blocking(move || validate_prompt(&prompt).map(|()| prompt))
                        .await??;
                VersionSpec::Prompt(prompt)
            }
            VersionSpec::Chain(chain) => {
                let prompt_reference = validate_chain(&chain)?;
                self.check_prompt_reference(&prompt_reference).await?;
                VersionSpec::Chain(chain)
            }
        };
        let spec_json = serde_json::to_string(&spec)
            .map_err(|error| Error::Corrupt(format!("cannot encode spec: {error}")))?;
        let tags_json = tags_to_json(&new_version.tags)?;
        let lineage_json = serde_json::to_string(&new_version.lineage)
            .map_err(|error| Error::Corrupt(format!("cannot encode lineage: {error}")))?;
        let created_at_ms = keel_core::time::now_ms();

        let mut tx = self.store.begin_write().await?;
        let Some(number) = store::next_version(tx.conn(), &new_version.model).await? else {
            return Err(model_not_found(&new_version.model));
        };
        let version = u32::try_from(number).map_err(|_| {
            Error::FailedPrecondition(format!(
                "model `{}` has reached the maximum number of versions",
                new_version.model
            ))
        })?;
        check_lineage(tx.conn(), &new_version.model, &new_version.lineage).await?;
        let row: store::VersionRow = (
            new_version.model.clone(),
            number,
            spec_json,
            new_version.description.clone(),
            tags_json,
            created_at_ms,
            lineage_json,
        );
        store::insert_version(tx.conn(), &row).await?;
        tx.commit().await?;
        self.metrics.versions_created.inc();
        tracing::info!(model = %new_version.model, version, "version created");
        Ok(ModelVersion {
            model: new_version.model,
            version,
            kind: model_kind,
            spec,
            description: new_version.description,
            tags: new_version.tags,
            created_at_ms,
            aliases: Vec::new(),
            lineage: new_version.lineage,
        })
    }

    /// A version by number or by alias.
    pub async fn get_version(
        &self,
        model: &str,
        selector: &Selector,
    ) -> Result<ModelVersion, Error> {
        validate::name("model", model)?;
        match selector {
            Selector::Version(0) => {
                return Err(FieldError::new("version", "must be at least 1, got 0").into());
            }
            Selector::Version(_) => {}
            Selector::Alias(alias) => validate_alias("alias", alias)?,
        }
        self.find_version(model, selector).await
    }

    /// Resolves "model@alias" or "model/version".
    pub async fn resolve_reference(&self, reference: &str) -> Result<ModelVersion, Error> {
        let parsed = ModelRef::parse("reference", reference)?;
        self.find_version(&parsed.model, &parsed.selector).await
    }

    pub async fn list_versions(
        &self,
        model: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ModelVersion>, Error> {
        validate::name("model", model)?;
        let limit = validate::page_size("page_size", page_size)?;
        let after = pagination::decode_number("page_token", page_token)?;
        let mut conn = self.store.pool().acquire().await?;
        let model_row = store::get_model(&mut conn, model)
            .await?
            .ok_or_else(|| model_not_found(model))?;
        let kind = kind_from_code(model_row.1)?;
        let rows = store::list_versions(&mut conn, model, after, i64::from(limit)).await?;
        let alias_rows = store::list_aliases(&mut conn, model).await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => pagination::encode(&last.1.to_string()),
            _ => String::new(),
        };
        let mut versions = Vec::with_capacity(rows.len());
        for row in rows {
            versions.push(version_from_row(row, kind, &alias_rows)?);
        }
        Ok(Page {
            items: versions,
            next_page_token,
        })
    }

    async fn find_version(&self, model: &str, selector: &Selector) -> Result<ModelVersion, Error> {
        let mut conn = self.store.pool().acquire().await?;
        let model_row = store::get_model(&mut conn, model)
            .await?
            .ok_or_else(|| model_not_found(model))?;
        let kind = kind_from_code(model_row.1)?;
        let number = match selector {
            Selector::Version(version) => i64::from(*version),
            Selector::Alias(alias) => store::get_alias(&mut conn, model, alias)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("alias `{alias}` of model `{model}` not found"))
                })?,
        };
        let row = store::get_version(&mut conn, model, number)
            .await?
            .ok_or_else(|| version_not_found(model, number))?;
        let alias_rows = store::list_aliases(&mut conn, model).await?;
        version_from_row(row, kind, &alias_rows)
    }

    async fn model_kind(&self, model: &str) -> Result<ModelKind, Error> {
        let mut conn = self.store.pool().acquire().await?;
        let row = store::get_model(&mut conn, model)
            .await?
            .ok_or_else(|| model_not_found(model))?;
        kind_from_code(row.1)
    }

    /// A chain's prompt must name an existing PROMPT model; a `/version`
    /// must exist, an `@alias` may be set later.
    async fn check_prompt_reference(&self, reference: &ModelRef) -> Result<(), Error> {
        let field = "chain.prompt";
        let mut conn = self.store.pool().acquire().await?;
        let Some(row) = store::get_model(&mut conn, &reference.model).await? else {
            return Err(Error::FailedPrecondition(format!(
                "field `{field}`: model `{}` does not exist",
                reference.model
            )));
        };
        let kind = kind_from_code(row.1)?;
        if kind != ModelKind::Prompt {
            return Err(Error::FailedPrecondition(format!(
                "field `{field}`: model `{}` is a {} model, expected a PROMPT model",
                reference.model,
                kind.label()
            )));
        }
        if let Selector::Version(version) = reference.selector {
            let exists = store::get_version(&mut conn, &reference.model, i64::from(version))
                .await?
                .is_some();
            if !exists {
                return Err(Error::FailedPrecondition(format!(
                    "field `{field}`: version {version} of model `{}` does not exist",
                    reference.model
                )));
            }
        }
        Ok(())
    }
}

/// The parent is an earlier version of the same model and the runs exist;
/// checked inside the version's transaction (the parent has a lower number
/// than the version being created, so it exists or never will).
async fn check_lineage(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    lineage: &Lineage,
) -> Result<(), Error> {
    if lineage.parent_version != 0 {
        let parent = i64::from(lineage.parent_version);
        if store::get_version(conn, model, parent).await?.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "field `lineage.parent_version`: version {parent} of model `{model}` does not exist"
            )));
        }
    }
    let found = crate::evaluation_store::existing_run_ids(conn, &lineage.evaluation_runs).await?;
    if let Some(missing) = lineage
        .evaluation_runs
        .iter()
        .find(|run| !found.contains(run))
    {
        return Err(Error::FailedPrecondition(format!(
            "field `lineage.evaluation_runs`: evaluation run `{missing}` does not exist"
        )));
    }
    Ok(())
}

pub(crate) fn validate_tags(tags: &Tags) -> Result<(), FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!("must hold at most {MAX_TAGS} tags, got {}", tags.len()),
        ));
    }
    for (key, value) in tags {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_TAG_KEY_CHARS {
            return Err(FieldError::new(
                "tags",
                format!(
                    "keys must be 1..={MAX_TAG_KEY_CHARS} characters, got {key_chars} in {key:?}"
                ),
            ));
        }
        if value.len() > MAX_TAG_VALUE_BYTES {
            return Err(FieldError::new(
                "tags",
                format!(
                    "values must be at most {MAX_TAG_VALUE_BYTES} bytes, got {} for key {key:?}",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn model_not_found(model: &str) -> Error {
    Error::NotFound(format!("model `{model}` not found"))
}

pub(crate) fn version_not_found(model: &str, version: i64) -> Error {
    Error::NotFound(format!("version {version} of model `{model}` not found"))
}

fn tags_to_json(tags: &Tags) -> Result<String, Error> {
    serde_json::to_string(tags)
        .map_err(|error| Error::Corrupt(format!("cannot encode tags: {error}")))
}

fn tags_from_json(json: &str) -> Result<Tags, Error> {
    serde_json::from_str(json).map_err(|error| Error::Corrupt(format!("stored tags: {error}")))
}

fn kind_from_code(code: i64) -> Result<ModelKind, Error> {
    ModelKind::from_code(code).ok_or_else(|| Error::Corrupt(format!("stored model kind {code}")))
}

pub(crate) fn stored_u32(what: &str, value: i64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::Corrupt(format!("stored {what} {value}")))
}

/// `alias_rows` may hold aliases of other models too; only this model's count.
fn model_from_row(row: store::ModelRow, alias_rows: &[store::AliasRow]) -> Result<Model, Error> {
    let (name, kind_code, description, tags_json, created_at_ms, latest_version) = row;
    let mut aliases = BTreeMap::new();
    for (model, alias, version) in alias_rows {
        if *model == name {
            aliases.insert(alias.clone(), stored_u32("alias version", *version)?);
        }
    }
    Ok(Model {
        kind: kind_from_code(kind_code)?,
        description,
        tags: tags_from_json(&tags_json)?,
        created_at_ms,
        latest_version: stored_u32("latest version", latest_version)?,
        aliases,
        name,
    })
}

/// `alias_rows` are the aliases of the version's model.
fn version_from_row(
    row: store::VersionRow,
    kind: ModelKind,
    alias_rows: &[store::AliasRow],
) -> Result<ModelVersion, Error> {
    let (model, number, spec_json, description, tags_json, created_at_ms, lineage_json) = row;
    let lineage: Lineage = serde_json::from_str(&lineage_json).map_err(|error| {
        Error::Corrupt(format!("stored lineage of `{model}/{number}`: {error}"))
    })?;
    let spec: VersionSpec = serde_json::from_str(&spec_json)
        .map_err(|error| Error::Corrupt(format!("stored spec of `{model}/{number}`: {error}")))?;
    let aliases = alias_rows
        .iter()
        .filter(|(alias_model, _, version)| *alias_model == model && *version == number)
        .map(|(_, alias, _)| alias.clone())
        .collect();
    Ok(ModelVersion {
        version: stored_u32("version", number)?,
        kind,
        spec,
        description,
        tags: tags_from_json(&tags_json)?,
        created_at_ms,
        aliases,
        lineage,
        model,
    })
}
