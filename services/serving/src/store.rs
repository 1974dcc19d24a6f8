//! Serving's database: the endpoints. Routes are kept as one JSON column
//! because they are always read and replaced as a whole.

use keel_store::{Migration, Store};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use keel_types::ModelRef;

use crate::endpoint::{Endpoint, Route, Shadow};
use crate::error::Error;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "endpoints",
        sqlite: "CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        routes_json TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )",
        postgres: "CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        routes_json TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )",
    },
    // An endpoint may mirror a share of its traffic to a shadow target.
    Migration {
        version: 2,
        name: "shadow",
        sqlite: "ALTER TABLE endpoints ADD COLUMN shadow_target TEXT NOT NULL DEFAULT '';
                 ALTER TABLE endpoints ADD COLUMN shadow_percent BIGINT NOT NULL DEFAULT 0",
        postgres: "ALTER TABLE endpoints ADD COLUMN shadow_target TEXT NOT NULL DEFAULT '';
                   ALTER TABLE endpoints ADD COLUMN shadow_percent BIGINT NOT NULL DEFAULT 0",
    },
    Migration {
        version: 3,
        name: "experiments",
        sqlite: crate::experiment_store::CREATE_TABLE,
        postgres: crate::experiment_store::CREATE_TABLE,
    },
];

#[derive(Serialize, Deserialize)]
struct StoredRoute {
    target: String,
    weight: u32,
}

fn routes_to_json(routes: &[Route]) -> Result<String, Error> {
    let stored: Vec<StoredRoute> = routes
        .iter()
        .map(|route| StoredRoute {
            target: route.target.to_string(),
            weight: route.weight,
        })
        .collect();
    serde_json::to_string(&stored)
        .map_err(|error| Error::Internal(format!("cannot encode routes: {error}")))
}

fn routes_from_json(name: &str, json: &str) -> Result<Vec<Route>, Error> {
    let corrupt = |detail: String| {
        Error::Internal(format!(
            "stored routes of endpoint `{name}` are corrupt: {detail}"
        ))
    };
    let stored: Vec<StoredRoute> =
        serde_json::from_str(json).map_err(|error| corrupt(error.to_string()))?;
    let mut routes = Vec::with_capacity(stored.len());
    for route in stored {
        let target =
            ModelRef::parse("target", &route.target).map_err(|error| corrupt(error.to_string()))?;
        routes.push(Route {
            target,
            weight: route.weight,
        });
    }
    Ok(routes)
}

fn endpoint_from_row(row: &sqlx::any::AnyRow) -> Result<Endpoint, Error> {
    let name: String = row.try_get("name")?;
    let routes_json: String = row.try_get("routes_json")?;
    let routes = routes_from_json(&name, &routes_json)?;
    let shadow_target: String = row.try_get("shadow_target")?;
    let shadow_percent: i64 = row.try_get("shadow_percent")?;
    let shadow = if shadow_target.is_empty() {
        None
    } else {
        let corrupt = |detail: String| {
            Error::Internal(format!(
                "stored shadow of endpoint `{name}` is corrupt: {detail}"
            ))
        };
        Some(Shadow {
            target: ModelRef::parse("shadow_target", &shadow_target)
                .map_err(|error| corrupt(error.to_string()))?,
            percent: u32::try_from(shadow_percent)
                .map_err(|_| corrupt(format!("percent {shadow_percent}")))?,
        })
    };
    Ok(Endpoint {
        shadow,
        routes,
        description: row.try_get("description")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        name,
    })
}

const SELECT_COLUMNS: &str = "SELECT name, routes_json, description, created_at_ms, \
     updated_at_ms, shadow_target, shadow_percent FROM endpoints";

/// The shadow as its two columns; ("", 0) for none.
fn shadow_columns(shadow: Option<&Shadow>) -> (String, i64) {
    shadow.map_or((String::new(), 0), |shadow| {
        (shadow.target.to_string(), i64::from(shadow.percent))
    })
}

/// Returns false when an endpoint of that name exists already.
pub async fn insert_endpoint(store: &Store, endpoint: &Endpoint) -> Result<bool, Error> {
    let routes_json = routes_to_json(&endpoint.routes)?;
    let (shadow_target, shadow_percent) = shadow_columns(endpoint.shadow.as_ref());
    let mut tx = store.begin_write().await?;
    let result = sqlx::query(
        "INSERT INTO endpoints (name, routes_json, description, created_at_ms, updated_at_ms,
             shadow_target, shadow_percent)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&endpoint.name)
    .bind(&routes_json)
    .bind(&endpoint.description)
    .bind(endpoint.created_at_ms)
    .bind(endpoint.updated_at_ms)
    .bind(shadow_target)
    .bind(shadow_percent)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get_endpoint(store: &Store, name: &str) -> Result<Option<Endpoint>, Error> {
    let row = sqlx::query(&format!("{SELECT_COLUMNS} WHERE name = $1"))
        .bind(name)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(endpoint_from_row).transpose()
}

pub async fn list_endpoints(store: &Store) -> Result<Vec<Endpoint>, Error> {
    let rows = sqlx::query(&format!("{SELECT_COLUMNS} ORDER BY name"))
        .fetch_all(store.pool())
        .await?;
    let mut endpoints = Vec::with_capacity(rows.len());
    for row in &rows {
        endpoints.push(endpoint_from_row(row)?);
    }
    Ok(endpoints)
}

/// Replaces routes, description and shadow; `None` when there is no such
/// endpoint.
pub async fn update_endpoint(
    store: &Store,
    name: &str,
    routes: &[Route],
    description: &str,
    shadow: Option<&Shadow>,
    updated_at_ms: i64,
) -> Result<Option<Endpoint>, Error> {
    let routes_json = routes_to_json(routes)?;
    let (shadow_target, shadow_percent) = shadow_columns(shadow);
    let mut tx = store.begin_write().await?;
    let result = sqlx::query(
        "UPDATE endpoints SET routes_json = $1, description = $2, updated_at_ms = $3,
             shadow_target = $4, shadow_percent = $5
         WHERE name = $6",
    )
    .bind(&routes_json)
    .bind(description)
    .bind(updated_at_ms)
    .bind(shadow_target)
    .bind(shadow_percent)
    .bind(name)
    .execute(tx.conn())
    .await?;
    if result.rows_affected() == 0 {
        return Ok(None);
    }
    let row = sqlx::query(&format!("{SELECT_COLUMNS} WHERE name = $1"))
        .bind(name)
        .fetch_one(tx.conn())
        .await?;
    let endpoint = endpoint_from_row(&row)?;
    tx.commit().await?;
    Ok(Some(endpoint))
}

/// Returns false when there was no such endpoint.
pub async fn delete_endpoint(store: &Store, name: &str) -> Result<bool, Error> {
    let mut tx = store.begin_write().await?;
    let result = sqlx::query("DELETE FROM endpoints WHERE name = $1")
        .bind(name)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(target: &str, weight: u32) -> Route {
        Route {
            target: ModelRef::parse("target", target).unwrap(),
            weight,
        }
    }

    fn endpoint(name: &str, at_ms: i64) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            routes: vec![route("bot@champion", 90), route("bot/3", 10)],
            description: format!("{name} endpoint"),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
            shadow: None,
        }
    }

    async fn exercise(store: Store) {
        assert_eq!(get_endpoint(&store, "support").await.unwrap(), None);
        assert!(insert_endpoint(&store, &endpoint("support", 100))
            .await
            .unwrap());
        assert!(insert_endpoint(&store, &endpoint("billing", 200))
            .await
            .unwrap());
        // A second insert of the same name changes nothing.
        let mut clash = endpoint("support", 999);
        clash.description = "other".to_string();
        assert!(!insert_endpoint(&store, &clash).await.unwrap());
        assert_eq!(
            get_endpoint(&store, "support").await.unwrap(),
            Some(endpoint("support", 100))
        );

        let names: Vec<String> = list_endpoints(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["billing", "support"]);

        let new_routes = vec![route("bot@challenger", 1)];
        let shadow = Shadow {
            target: ModelRef::parse("target", "bot/4").unwrap(),
            percent: 25,
        };
        let updated = update_endpoint(&store, "support", &new_routes, "moved", Some(&shadow), 500)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.routes, new_routes);
        assert_eq!(updated.shadow, Some(shadow));
        assert_eq!(updated.description, "moved");
        assert_eq!(updated.created_at_ms, 100);
        assert_eq!(updated.updated_at_ms, 500);
        assert_eq!(
            get_endpoint(&store, "support").await.unwrap(),
            Some(updated)
        );
        assert_eq!(
            update_endpoint(&store, "missing", &new_routes, "", None, 1)
                .await
                .unwrap(),
            None
        );

        assert!(delete_endpoint(&store, "support").await.unwrap());
        assert!(!delete_endpoint(&store, "support").await.unwrap());
        assert_eq!(get_endpoint(&store, "support").await.unwrap(), None);
        assert_eq!(list_endpoints(&store).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn endpoints_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = keel_store::default_sqlite_url(dir.path(), "serving");
        let store = Store::open(&url, MIGRATIONS).await.unwrap();
        exercise(store.clone()).await;
        store.close().await;
        // Reopening keeps what was acknowledged and does not re-run migrations.
        let reopened = Store::open(&url, MIGRATIONS).await.unwrap();
        assert_eq!(list_endpoints(&reopened).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn endpoints_on_postgres() {
        let url = keel_store::testing::fresh_postgres_database()
            .await
            .expect("postgres must be running for the store tests");
        let store = Store::open(&url, MIGRATIONS).await.unwrap();
        exercise(store).await;
    }
}
