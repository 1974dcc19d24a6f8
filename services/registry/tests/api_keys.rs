//! API keys through the registry's gRPC API, on SQLite and on Postgres: a
//! key's secret is returned once and authenticates it with its scopes;
//! listing never shows a secret; revoked and expired keys, wrong secrets
//! and malformed ones are UNAUTHENTICATED alike; bad input names the field
//! and stores nothing; keys survive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, BACKENDS};
use tonic::Code;

use support::{Client, Registry};

fn create(name: &str, scopes: &[&str], expires_at_ms: i64) -> pb::CreateApiKeyRequest {
    pb::CreateApiKeyRequest {
        name: name.to_string(),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        expires_at_ms,
        actor: "ops".to_string(),
    }
}

async fn authenticate(client: &mut Client, secret: &str) -> Result<pb::ApiKey, tonic::Status> {
    client
        .authenticate_api_key(pb::AuthenticateApiKeyRequest {
            secret: secret.to_string(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn listed(client: &mut Client, include_inactive: bool) -> Vec<String> {
    client
        .list_api_keys(pb::ListApiKeysRequest { include_inactive })
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|key| key.name)
        .collect()
}

fn now_ms() -> i64 {
    keel_core::time::now_ms()
}

#[tokio::test]
async fn keys_authenticate_until_revoked_or_expired() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;

        for (request, field) in [
            (create("ci", &[], 0), "scopes"),
            (create("ci", &["read", "root"], 0), "scopes[1]"),
            (create("bad name", &["read"], 0), "name"),
            (create("ci", &["read"], now_ms() - 1), "expires_at_ms"),
        ] {
            assert_status(
                &format!("{backend:?} {field}"),
                client.create_api_key(request).await,
                Code::InvalidArgument,
                &[field],
            );
        }
        assert!(listed(client, true).await.is_empty(), "{backend:?}");

        let created = client
            .create_api_key(create(
                "support-bot",
                &["query:support", "feedback:write"],
                0,
            ))
            .await
            .unwrap()
            .into_inner();
        let key = created.key.unwrap();
        assert_eq!(key.scopes, ["query:support", "feedback:write"]);
        assert_eq!(key.created_by, "ops");
        assert!(
            created.secret.starts_with(&format!("keel_{}_", key.id)),
            "{}",
            created.secret
        );
        assert_eq!(created.secret.len(), "keel_".len() + 12 + 1 + 64);
        let authenticated = authenticate(client, &created.secret).await.unwrap();
        assert_eq!(authenticated, key);

        // The right id with another secret, a malformed secret, nothing.
        let forged = format!("keel_{}_{}", key.id, "0".repeat(64));
        for (case, secret) in [
            ("forged", forged.as_str()),
            ("malformed", "keel_nope"),
            ("empty", ""),
        ] {
            assert_status(
                &format!("{backend:?} {case}"),
                authenticate(client, secret).await,
                Code::NotFound,
                &["unknown, revoked or expired"],
            );
        }

        // A key that expires in a moment works, then does not.
        let brief = client
            .create_api_key(create("brief", &["read"], now_ms() + 300))
            .await
            .unwrap()
            .into_inner();
        authenticate(client, &brief.secret).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_status(
            &format!("{backend:?} expired"),
            authenticate(client, &brief.secret).await,
            Code::NotFound,
            &[],
        );
        assert_eq!(listed(client, false).await, ["support-bot"]);
        let mut everything = listed(client, true).await;
        everything.sort();
        assert_eq!(everything, ["brief", "support-bot"]);

        // Keys outlive a restart; a revoked one stops working at once.
        let database = registry.stop().await;
        let mut registry = Registry::start_on(database).await;
        let client = &mut registry.client;
        assert_eq!(authenticate(client, &created.secret).await.unwrap(), key);
        let revoked = client
            .revoke_api_key(pb::RevokeApiKeyRequest {
                id: key.id.clone(),
                actor: "ops".to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(revoked.revoked_at_ms > 0);
        assert_status(
            &format!("{backend:?} revoked"),
            authenticate(client, &created.secret).await,
            Code::NotFound,
            &[],
        );
        assert!(listed(client, false).await.is_empty());
        assert_status(
            &format!("{backend:?} unknown id"),
            client
                .revoke_api_key(pb::RevokeApiKeyRequest {
                    id: "000000000000".to_string(),
                    actor: String::new(),
                })
                .await,
            Code::NotFound,
            &["000000000000"],
        );
        registry.stop().await;
    }
}
