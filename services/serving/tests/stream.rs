//! Streaming, fallbacks and cancellation, through the real serving server
//! on port 0 in the fake world of `support`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_models::{
    Generation, GenerationRequest, Generator, ModelCatalog, ModelError, OpenAiConfig,
    OpenAiGenerator, SharedGenerator,
};
use keel_proto::v1 as pb;
use keel_proto::v1::query_stream_event::Event;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_testkit::fakes::{chain_spec, FakeOpenAi, SlowWords};
use keel_testkit::{assert_status, eventually};
use tonic::transport::Channel;
use tonic::Code;

use support::{ask, create, route, Serving, World, PATIENCE};

const QUESTION: &str = "How does Keel route traffic between chain versions?";

/// Hands over one piece of text, then fails as unavailable.
struct FailsMidAnswer;

impl Generator for FailsMidAnswer {
    fn name(&self) -> &str {
        "flaky"
    }

    fn provider(&self) -> &str {
        "test"
    }

    fn generate(
        &self,
        _request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let _ = on_delta("partial ");
        Err(ModelError::Unavailable("connection lost".to_string()))
    }
}

/// A generator talking to `server`, with `max_retries` retries.
fn openai_generator(server: &FakeOpenAi, max_retries: u32) -> SharedGenerator {
    let config = OpenAiConfig {
        base_url: server.base_url(),
        model: "fake-chat".to_string(),
        max_retries,
        initial_backoff_ms: 1,
        request_timeout_ms: 5_000,
        ..OpenAiConfig::default()
    };
    Arc::new(OpenAiGenerator::with_api_key(config, None).unwrap())
}

/// A chain `model` (v1, @champion) answering with `generator`, then
/// `fallbacks`, behind an endpoint of the same name.
async fn chain_endpoint(
    world: &World,
    client: &mut ServingServiceClient<Channel>,
    model: &str,
    generator: &str,
    fallbacks: &[&str],
) {
    world.registry.add_model(model, pb::ModelKind::Chain);
    let mut spec = chain_spec("docs", 2, "qa@champion", generator);
    spec.fallbacks = fallbacks
        .iter()
        .map(|name| pb::GeneratorSpec {
            name: name.to_string(),
            params: None,
            model: String::new(),
        })
        .collect();
    let version = world.registry.add_chain_version(model, spec);
    world.registry.set_alias(model, "champion", version);
    client
        .create_endpoint(create(model, vec![route(&format!("{model}@champion"), 1)]))
        .await
        .unwrap();
}

/// Every event of a streamed query, and the status that ended it, if any.
async fn stream_all(
    client: &mut ServingServiceClient<Channel>,
    request: pb::QueryRequest,
) -> Result<(Vec<Event>, Option<tonic::Status>), tonic::Status> {
    let mut stream = client.query_stream(request).await?.into_inner();
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(event)) => events.push(event.event.unwrap()),
            Ok(None) => return Ok((events, None)),
            Err(status) => return Ok((events, Some(status))),
        }
    }
}

fn delta_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Delta(delta) => Some(delta.text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn stream_sends_citations_then_deltas_then_done() {
    let world = World::start().await;
    let serving = world.serving_with(ModelCatalog::builtin()).await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    let unary = client
        .query(ask("support", QUESTION))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(unary.generator, "extractive");

    let (events, ending) = stream_all(&mut client, ask("support", QUESTION))
        .await
        .unwrap();
    assert!(ending.is_none(), "{ending:?}");
    let Some(Event::Citations(citations)) = events.first() else {
        panic!("the first event is not the citations: {events:?}");
    };
    let ids: Vec<&str> = citations
        .citations
        .iter()
        .map(|citation| citation.point_id.as_str())
        .collect();
    assert_eq!(ids, vec!["p1", "p2"]);
    assert_eq!(citations.citations[0].text.chars().count(), 300);
    let Some(Event::Done(done)) = events.last() else {
        panic!("the last event is not done: {events:?}");
    };
    let middle = &events[1..events.len() - 1];
    assert!(
        middle.iter().all(|event| matches!(event, Event::Delta(_))),
        "{middle:?}"
    );
    let deltas = delta_texts(&events);
    assert!(deltas.len() > 3, "{deltas:?}");
    assert_eq!(deltas.concat(), unary.answer);

    assert_eq!(done.request_id, citations.request_id);
    assert_ne!(done.request_id, unary.request_id);
    assert_eq!(done.trace_id, citations.trace_id);
    assert_eq!(done.trace_id.len(), 32);
    assert_eq!(done.served_model, "bot");
    assert_eq!(done.served_version, 1);
    assert_eq!(done.route_target, "bot@champion");
    assert_eq!(done.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(done.generator, "extractive");
    assert_eq!(done.usage, unary.usage);
    assert!(done.latency_ms > 0.0);

    let record = eventually("the streamed record", PATIENCE, async || {
        world.monitoring.record(&done.request_id)
    })
    .await;
    assert_eq!(record.answer, unary.answer);
    assert_eq!(record.generator, "extractive");
    assert_eq!(record.status, pb::InferenceStatus::Ok as i32);
    assert_eq!(record.contexts.len(), 2);
    serving.stop().await;
}

#[tokio::test]
async fn stream_errors_before_the_first_event_are_the_call_status() {
    let world = World::start().await;
    let serving = world.serving_with(ModelCatalog::builtin()).await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("broken", vec![route("broken@champion", 1)]))
        .await
        .unwrap();
    let cases = [
        (ask("nowhere", QUESTION), Code::NotFound, "nowhere"),
        (
            ask("broken", QUESTION),
            Code::FailedPrecondition,
            "no-such-generator",
        ),
        (ask("broken", ""), Code::InvalidArgument, "question"),
    ];
    for (request, code, needle) in cases {
        assert_status(needle, client.query_stream(request).await, code, &[needle]);
    }
    serving.stop().await;
}

/// Generate: one chat completion by a catalog generator, no retrieval (an
/// LLM judge's call); bad input is refused before any generator is asked.
#[tokio::test]
async fn generate_asks_a_catalog_generator_directly() {
    let judge = FakeOpenAi::answering("4").await;
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator("judge", openai_generator(&judge, 0));
    let world = World::start().await;
    let serving = world.serving_with(catalog).await;
    let mut client = serving.client.clone();
    let message = |role: &str, content: &str| pb::ChatMessage {
        role: role.to_string(),
        content: content.to_string(),
    };
    let request =
        |generator: &str, messages: Vec<pb::ChatMessage>, temperature: f32| pb::GenerateRequest {
            generator: generator.to_string(),
            messages,
            params: Some(pb::GenerationParams {
                temperature: Some(temperature),
                max_tokens: Some(8),
                ..Default::default()
            }),
        };
    let grading = vec![
        message("system", "Reply with one digit."),
        message("user", "Grade: 30 days."),
    ];
    let reply = client
        .generate(request("judge", grading.clone(), 0.0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.text, "4");
    assert_eq!(reply.finish_reason(), pb::FinishReason::Stop);
    assert!(reply.usage.unwrap().output_tokens >= 1);
    assert_eq!(judge.requests(), 1);

    let cases = [
        (
            request("nobody", grading.clone(), 0.0),
            Code::NotFound,
            "generator `nobody` is not in serving's catalog",
        ),
        (
            request("", grading.clone(), 0.0),
            Code::InvalidArgument,
            "generator",
        ),
        (
            request("judge", Vec::new(), 0.0),
            Code::InvalidArgument,
            "messages",
        ),
        (
            request("judge", vec![message("assistant", "hi")], 0.0),
            Code::InvalidArgument,
            "messages[0].role",
        ),
        (
            request("judge", grading.clone(), 3.0),
            Code::InvalidArgument,
            "params.temperature",
        ),
    ];
    for (bad, code, needle) in cases {
        assert_status(needle, client.generate(bad).await, code, &[needle]);
    }
    assert_eq!(judge.requests(), 1, "no bad request reached the generator");
    serving.stop().await;
}

#[tokio::test]
async fn an_unavailable_openai_server_falls_back_to_the_next_generator() {
    let down = FakeOpenAi::failing(503).await;
    let up = FakeOpenAi::answering("Keel routes traffic by weight.").await;
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator("openai-down", openai_generator(&down, 1));
    catalog.add_generator("openai-up", openai_generator(&up, 0));
    let world = World::start().await;
    let serving = world.serving_with(catalog).await;
    let mut client = serving.client.clone();
    chain_endpoint(&world, &mut client, "remote", "openai-down", &["openai-up"]).await;

    let unary = client
        .query(ask("remote", QUESTION))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.answer, "Keel routes traffic by weight.");
    assert_eq!(unary.generator, "openai-up");
    assert_eq!(unary.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(
        unary.usage,
        Some(pb::TokenUsage {
            input_tokens: 11,
            output_tokens: 5,
        })
    );
    // One attempt and one retry on the 503, then the fallback.
    assert_eq!(down.requests(), 2);
    assert_eq!(up.requests(), 1);

    let (events, ending) = stream_all(&mut client, ask("remote", QUESTION))
        .await
        .unwrap();
    assert!(ending.is_none(), "{ending:?}");
    assert!(matches!(events.first(), Some(Event::Citations(_))));
    assert_eq!(
        delta_texts(&events),
        vec!["Keel ", "routes ", "traffic ", "by ", "weight."]
    );
    let Some(Event::Done(done)) = events.last() else {
        panic!("no done event: {events:?}");
    };
    assert_eq!(done.generator, "openai-up");
    let record = eventually("the fallback's record", PATIENCE, async || {
        world.monitoring.record(&done.request_id)
    })
    .await;
    assert_eq!(record.generator, "openai-up");
    assert_eq!(record.answer, "Keel routes traffic by weight.");

    chain_endpoint(
        &world,
        &mut client,
        "all-down",
        "openai-down",
        &["openai-down"],
    )
    .await;
    let status = client.query(ask("all-down", QUESTION)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert_eq!(
        status.message().matches("HTTP 503").count(),
        2,
        "{}",
        status.message()
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_failure_after_a_delta_ends_the_stream_and_does_not_fall_back() {
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator("flaky", Arc::new(FailsMidAnswer));
    let world = World::start().await;
    let serving = world.serving_with(catalog).await;
    let mut client = serving.client.clone();
    chain_endpoint(&world, &mut client, "flaky", "flaky", &["extractive"]).await;

    let (events, ending) = stream_all(&mut client, ask("flaky", QUESTION))
        .await
        .unwrap();
    assert!(matches!(events.first(), Some(Event::Citations(_))));
    assert_eq!(delta_texts(&events), vec!["partial "]);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_status(
        "the stream's ending",
        Err::<(), _>(ending.unwrap()),
        Code::Unavailable,
        &["generator `flaky` failed"],
    );

    let status = client.query(ask("flaky", QUESTION)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    serving.stop().await;
}

/// A catalog with the `slow` generator (2000 words, 10 ms apart) and the
/// counter of the words it made.
fn slow_catalog() -> (ModelCatalog, Arc<AtomicUsize>) {
    let slow = SlowWords::new("slow", 2000, Duration::from_millis(10));
    let produced = slow.produced();
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator("slow", Arc::new(slow));
    (catalog, produced)
}

#[tokio::test]
async fn a_client_that_drops_the_stream_stops_the_generator() {
    let (catalog, produced) = slow_catalog();
    let world = World::start().await;
    let serving = world.serving_with(catalog).await;
    let mut client = serving.client.clone();
    chain_endpoint(&world, &mut client, "slow", "slow", &[]).await;

    let mut stream = client
        .query_stream(ask("slow", QUESTION))
        .await
        .unwrap()
        .into_inner();
    let Some(Event::Citations(citations)) = stream.message().await.unwrap().unwrap().event else {
        panic!("the first event is not the citations");
    };
    let Some(Event::Delta(first)) = stream.message().await.unwrap().unwrap().event else {
        panic!("the second event is not a delta");
    };
    assert_eq!(first.text, "w0 ");
    drop(stream);
    let produced_at_drop = produced.load(Ordering::SeqCst);

    // The record is written once the generator has stopped.
    let record = eventually("the cancelled stream's record", PATIENCE, async || {
        world.monitoring.record(&citations.request_id)
    })
    .await;
    let produced_in_all = produced.load(Ordering::SeqCst);
    assert!(
        produced_in_all - produced_at_drop <= 20,
        "the generator went on for {} words after the client left",
        produced_in_all - produced_at_drop
    );
    assert!(record.answer.starts_with("w0 "), "{}", record.answer);
    // The record holds what was generated, all of it.
    assert_eq!(record.answer.split_whitespace().count(), produced_in_all);
    assert_eq!(record.status, pb::InferenceStatus::Ok as i32);
    serving.stop().await;
}

#[tokio::test]
async fn a_unary_caller_that_leaves_stops_the_generator() {
    let (catalog, produced) = slow_catalog();
    let world = World::start().await;
    let serving = world.serving_with(catalog).await;
    let mut client = serving.client.clone();
    chain_endpoint(&world, &mut client, "slow", "slow", &[]).await;

    let mut caller = client.clone();
    let call = caller.query(ask("slow", QUESTION));
    let gave_up = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(gave_up.is_err(), "a 20 s answer came back in 300 ms");
    let produced_at_drop = produced.load(Ordering::SeqCst);
    assert!(produced_at_drop > 0);

    let record = eventually("the abandoned query's record", PATIENCE, async || {
        world
            .monitoring
            .records()
            .into_iter()
            .find(|record| record.endpoint == "slow")
    })
    .await;
    let produced_in_all = produced.load(Ordering::SeqCst);
    assert!(
        produced_in_all - produced_at_drop <= 20,
        "the generator went on for {} words after the caller left",
        produced_in_all - produced_at_drop
    );
    assert_eq!(record.answer.split_whitespace().count(), produced_in_all);
    serving.stop().await;
}

/// Remote generators are awaited, not run on the generation pool: with one
/// generation worker and no queue (a second local answer would be
/// RESOURCE_EXHAUSTED), 64 queries to a server that thinks for 300 ms are
/// all answered, the server answering them at the same time.
#[tokio::test]
async fn remote_answers_do_not_hold_generation_workers() {
    let server = FakeOpenAi::answering_after("Keel answers.", Duration::from_millis(300)).await;
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator("remote-llm", openai_generator(&server, 0));
    let world = World::start().await;
    let serving = Serving::start_adjusted(
        world.registry_server.url(),
        world.vector_index_server.url(),
        world.monitoring.url(),
        catalog,
        tempfile::tempdir().unwrap(),
        |config| {
            config.generation_workers = 1;
            config.generation_queue = 0;
        },
    )
    .await;
    let mut client = serving.client.clone();
    chain_endpoint(&world, &mut client, "remote", "remote-llm", &[]).await;

    let queries = (0..64).map(|index| {
        let mut client = client.clone();
        async move {
            client
                .query(ask("remote", &format!("{QUESTION} ({index})")))
                .await
                .map(|response| response.into_inner().answer)
        }
    });
    let started = std::time::Instant::now();
    let answers = futures::future::join_all(queries).await;
    for answer in &answers {
        assert_eq!(answer.as_ref().unwrap(), "Keel answers.");
    }
    assert_eq!(server.requests(), 64);
    assert!(
        server.most_in_flight() >= 32,
        "the server saw at most {} requests at once",
        server.most_in_flight()
    );
    // One worker answering in turn would take 64 × 300 ms.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
