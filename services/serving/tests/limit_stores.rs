//! The three counter stores behave alike: the same rates, budgets,
//! credits and all-or-nothing reservations, on the process's memory, on
//! Redis and on Postgres (each run under a fresh prefix or database).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_serving::limits::ledger::{Charge, Ledger, Verdict, Window};
use keel_serving::limits::memory::MemoryLedger;
use keel_serving::limits::postgres_ledger::PostgresLedger;
use keel_serving::limits::redis_ledger::RedisLedger;

async fn stores() -> Vec<(&'static str, Box<dyn Ledger>, String)> {
    let prefix = format!("keel-limits-test-{}", uuid::Uuid::new_v4().simple());
    let redis = RedisLedger::connect(&keel_testkit::database::test_redis_url())
        .await
        .expect("the test Redis answers");
    let database = keel_store::testing::fresh_postgres_database()
        .await
        .expect("the test Postgres answers");
    let postgres = PostgresLedger::connect(&database).await.unwrap();
    vec![
        ("memory", Box::new(MemoryLedger::default()), prefix.clone()),
        ("redis", Box::new(redis), prefix.clone()),
        ("postgres", Box::new(postgres), prefix),
    ]
}

fn rate(bucket: &str, limit: u64, units: i64) -> Charge {
    Charge {
        bucket: bucket.to_string(),
        window: Window::Minute,
        limit,
        units,
    }
}

fn budget(bucket: &str, limit: u64, units: i64) -> Charge {
    Charge {
        bucket: bucket.to_string(),
        // An hour from now.
        window: Window::Period {
            ends_at_ms: keel_core::time::now_ms() + 3_600_000,
        },
        limit,
        units,
    }
}

fn refused(verdict: Verdict) -> (usize, Duration) {
    match verdict {
        Verdict::Refused {
            charge,
            retry_after,
        } => (charge, retry_after),
        Verdict::Admitted => panic!("admitted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_admits_its_burst_then_refuses_with_the_wait() {
    for (store, ledger, prefix) in stores().await {
        let bucket = format!("{prefix}:rate");
        for request in 0..60 {
            let verdict = ledger.reserve(&[rate(&bucket, 60, 1)]).await.unwrap();
            assert_eq!(verdict, Verdict::Admitted, "{store}: request {request}");
        }
        let (charge, wait) = refused(ledger.reserve(&[rate(&bucket, 60, 1)]).await.unwrap());
        assert_eq!(charge, 0, "{store}");
        // One interval at 60 per minute is a second, less the test's time.
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{store}: {wait:?}"
        );
        // A credit of 5 makes room for 5 more, and no more.
        ledger.adjust(&[rate(&bucket, 60, -5)]).await.unwrap();
        for _ in 0..5 {
            assert_eq!(
                ledger.reserve(&[rate(&bucket, 60, 1)]).await.unwrap(),
                Verdict::Admitted,
                "{store}"
            );
        }
        assert!(
            matches!(
                ledger.reserve(&[rate(&bucket, 60, 1)]).await.unwrap(),
                Verdict::Refused { .. }
            ),
            "{store}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_takes_every_bucket_or_none() {
    for (store, ledger, prefix) in stores().await {
        let wide = format!("{prefix}:wide");
        let narrow = format!("{prefix}:narrow");
        let both = |units| [budget(&wide, 1000, units), budget(&narrow, 100, units)];
        assert_eq!(
            ledger.reserve(&both(80)).await.unwrap(),
            Verdict::Admitted,
            "{store}"
        );
        // The narrow budget has 20 left: refused, and the wide one untouched.
        let (charge, wait) = refused(ledger.reserve(&both(30)).await.unwrap());
        assert_eq!(charge, 1, "{store}: the narrow budget refuses");
        assert!(
            wait > Duration::from_secs(3500),
            "{store}: until the period ends: {wait:?}"
        );
        assert_eq!(
            ledger.reserve(&[budget(&wide, 1000, 920)]).await.unwrap(),
            Verdict::Admitted,
            "{store}: the refused reservation took nothing from the wide budget"
        );
        // Settling past the limit is never refused; it leaves no room.
        ledger.adjust(&[budget(&narrow, 100, 50)]).await.unwrap();
        assert!(
            matches!(
                ledger.reserve(&[budget(&narrow, 100, 1)]).await.unwrap(),
                Verdict::Refused { .. }
            ),
            "{store}"
        );
        ledger.adjust(&[budget(&narrow, 100, -40)]).await.unwrap();
        assert_eq!(
            ledger.reserve(&[budget(&narrow, 100, 10)]).await.unwrap(),
            Verdict::Admitted,
            "{store}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_overrun() {
    for (store, ledger, prefix) in stores().await {
        let ledger: std::sync::Arc<dyn Ledger> = std::sync::Arc::from(ledger);
        let bucket = format!("{prefix}:race");
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let ledger = ledger.clone();
            let bucket = bucket.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..10 {
                    if ledger.reserve(&[budget(&bucket, 300, 1)]).await.unwrap()
                        == Verdict::Admitted
                    {
                        admitted += 1;
                    }
                }
                admitted
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        assert_eq!(admitted, 300, "{store}: 640 tries at a budget of 300");
    }
}
