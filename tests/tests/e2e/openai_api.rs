//! OpenAI's HTTP API on serving's admin port, over the real cluster with
//! keys on: chat completions answer what `Query` answers (streamed as
//! OpenAI streams), embeddings come from a collection's embedder, errors
//! come in OpenAI's shape — and the real `openai` Python package, unchanged,
//! works against it.

use base64::Engine;
use keel_proto::v1::CreateApiKeyRequest;
use keel_testkit::HttpResponse;
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, COLLECTION, ENDPOINT, REFUND_QUESTION};
use keel_tests::{on_both_backends, Backend, Cluster, Storage, MASTER_KEY};
use serde_json::{json, Value};

on_both_backends!(openai_clients_use_keel_unchanged);

/// Where `scripts/test` installs the `openai` package (the version
/// `tests/python/requirements.txt` pins).
const PYTHON_ENV: &str = "KEEL_TEST_PYTHON";

async fn post(cluster: &Cluster, path: &str, body: &Value, key: &str) -> HttpResponse {
    let authorization = format!("Bearer {key}");
    let request = keel_testkit::http_request(
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &authorization),
        ],
        body.to_string().as_bytes(),
    );
    keel_testkit::http_exchange(cluster.keel.admin_addr(Service::Serving), request).await
}

fn json_of(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.text()))
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": REFUND_QUESTION.text}],
        "user": "ana",
        "stream": stream,
    })
}

/// The `data:` payloads of a server-sent event stream, in order.
fn sse_data(response: &HttpResponse) -> Vec<String> {
    response
        .text()
        .split("\n\n")
        .filter_map(|event| event.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

async fn openai_clients_use_keel_unchanged(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let over_grpc = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "ana").await;

    // The same answer as Query, with Keel's fields in `keel`.
    let answered = post(
        &cluster,
        "/v1/chat/completions",
        &chat(ENDPOINT, false),
        MASTER_KEY,
    )
    .await;
    assert_eq!(answered.status, 200, "{}", answered.text());
    let completion = json_of(&answered);
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], ENDPOINT);
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        over_grpc.answer.as_str()
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    let usage = &completion["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    let keel = &completion["keel"];
    let request_id = keel["request_id"].as_str().unwrap();
    assert_eq!(completion["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(keel["served_version"], 1);
    assert_eq!(
        keel["citations"][0]["id"],
        over_grpc.citations[0].point_id.as_str()
    );

    // `endpoint@N` pins version N of the endpoint's chain.
    let pinned = post(
        &cluster,
        "/v1/chat/completions",
        &chat(&format!("{ENDPOINT}@2"), false),
        MASTER_KEY,
    )
    .await;
    assert_eq!(pinned.status, 200, "{}", pinned.text());
    assert_eq!(json_of(&pinned)["keel"]["served_version"], 2);

    // Streamed: role first (with the citations), the answer in pieces, the
    // finish reason, the usage, then [DONE].
    let streamed = post(
        &cluster,
        "/v1/chat/completions",
        &chat(ENDPOINT, true),
        MASTER_KEY,
    )
    .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert!(streamed.headers.contains("content-type: text/event-stream"));
    let data = sse_data(&streamed);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|payload| serde_json::from_str(payload).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|chunk| chunk["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[0]["keel"]["citations"][0]["id"],
        over_grpc.citations[0].point_id.as_str()
    );
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, over_grpc.answer);
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|chunk| !chunk["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Errors in OpenAI's shape, naming what is wrong.
    let missing = post(
        &cluster,
        "/v1/chat/completions",
        &chat("no-such-endpoint", false),
        MASTER_KEY,
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    let error = json_of(&missing);
    assert_eq!(error["error"]["type"], "not_found_error");
    assert_eq!(error["error"]["code"], "model_not_found");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-endpoint"));
    let bad_version = post(
        &cluster,
        "/v1/chat/completions",
        &chat(&format!("{ENDPOINT}@0"), false),
        MASTER_KEY,
    )
    .await;
    assert_eq!(bad_version.status, 400);
    assert_eq!(json_of(&bad_version)["error"]["param"], "model");
    let no_messages = json!({"model": ENDPOINT, "messages": []});
    let empty = post(&cluster, "/v1/chat/completions", &no_messages, MASTER_KEY).await;
    assert_eq!(empty.status, 400);
    assert!(json_of(&empty)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages"));
    let other_bot = cluster
        .registry
        .clone()
        .create_api_key(CreateApiKeyRequest {
            name: "billing-bot".to_string(),
            scopes: vec!["query:billing".to_string()],
            expires_at_ms: 0,
            actor: "e2e".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let denied = post(
        &cluster,
        "/v1/chat/completions",
        &chat(ENDPOINT, false),
        &other_bot,
    )
    .await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("lacks scope `query:acme-support`"));

    // Embeddings by the collection's embedder, as floats or base64.
    let request = json!({"model": COLLECTION, "input": ["refund window", "shipping"]});
    let floats = json_of(&post(&cluster, "/v1/embeddings", &request, MASTER_KEY).await);
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    let first: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert!(!first.is_empty());
    assert!(floats["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);
    let request =
        json!({"model": COLLECTION, "input": "refund window", "encoding_format": "base64"});
    let encoded = json_of(&post(&cluster, "/v1/embeddings", &request, MASTER_KEY).await);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|word| f32::from_le_bytes(word.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, first);
    let unknown = post(
        &cluster,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "x"}),
        MASTER_KEY,
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    // The endpoints are the models.
    let models = keel_testkit::http_exchange(
        cluster.keel.admin_addr(Service::Serving),
        keel_testkit::http_request(
            "GET",
            "/v1/models",
            &[("authorization", &format!("Bearer {MASTER_KEY}"))],
            b"",
        ),
    )
    .await;
    assert_eq!(json_of(&models)["data"][0]["id"], ENDPOINT);

    the_openai_package_works(&cluster, &over_grpc.answer).await;
    cluster.shutdown().await;
}

/// The real `openai` package, streaming and not, embeddings, models and
/// its error classes.
async fn the_openai_package_works(cluster: &Cluster, answer: &str) {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| {
        panic!(
            "{PYTHON_ENV} is not set: run scripts/test, or point it at a Python with \
             `pip install -r tests/python/requirements.txt`"
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_client.py");
    let base_url = format!("{}/v1", cluster.keel.admin_url(Service::Serving));
    let question = REFUND_QUESTION.text.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args([
                script, &base_url, MASTER_KEY, ENDPOINT, COLLECTION, &question,
            ])
            .output()
            .unwrap_or_else(|error| panic!("cannot run {python}: {error}"))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the openai client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["answer"], answer);
    assert_eq!(got["streamed"], answer);
    assert_eq!(got["finish_reason"], "stop");
    assert_eq!(got["stream_finish_reason"], "stop");
    assert!(got["stream_usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(got["keel"]["request_id"].as_str().is_some());
    assert!(got["stream_keel"]["citations"]
        .as_array()
        .is_some_and(|citations| !citations.is_empty()));
    let lengths = got["embedding_lengths"].as_array().unwrap();
    assert_eq!(lengths.len(), 2);
    assert!(lengths[0].as_u64().unwrap() > 0);
    assert_eq!(got["models"], json!([ENDPOINT]));
    assert_eq!(got["missing_endpoint"]["status"], 404);
    assert_eq!(got["unauthenticated"]["status"], 401);
}
