//! A chatbot page in headless Chromium, on an origin of its own, posts
//! feedback to the feedback service the two ways a browser can: JSON to
//! `POST /v1/feedback` on the admin port (the browser sends a CORS
//! preflight first) and gRPC-Web on the gRPC port. The page reports what
//! it saw back to the server that served it. Chromium is installed by
//! `scripts/setup`; this test fails, never skips, without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use keel_proto::v1 as pb;
use keel_testkit::eventually;
use tokio::net::TcpListener;

use support::*;

/// The page: three calls, then a report of their outcomes to `/report`.
const PAGE: &str = r#"<!doctype html>
<html><body><script>
const requestId = "REQUEST_ID";
const feedbackUrl = "FEEDBACK_URL";
const grpcUrl = "GRPC_URL";

// SubmitFeedbackRequest by hand: request_id (1, string), kind (2, varint),
// value (3, double), user_id (6, string).
function encodeSubmit(id, kind, value, user) {
  const text = new TextEncoder();
  const bytes = [];
  const field = (tag, data) => { bytes.push(tag, data.length, ...data); };
  field(0x0a, text.encode(id));
  bytes.push(0x10, kind);
  const double = new Uint8Array(new Float64Array([value]).buffer);
  bytes.push(0x19, ...double);
  field(0x32, text.encode(user));
  return new Uint8Array(bytes);
}

// One gRPC-Web frame: flag 0 (data), a big-endian length, the message.
function frame(message) {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

// The frames of a gRPC-Web response: data frames and the trailer frame.
function frames(bytes) {
  const found = [];
  let at = 0;
  while (at + 5 <= bytes.length) {
    const length = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    found.push({ trailer: (bytes[at] & 0x80) !== 0, body: bytes.slice(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  return found;
}

async function run() {
  const report = {};
  const post = (body) => fetch(feedbackUrl + "/v1/feedback", {
    method: "POST", headers: { "Content-Type": "application/json" }, body,
  });
  try {
    const good = await post(JSON.stringify({ request_id: requestId, kind: "thumbs", value: 1, user_id: "browser-json" }));
    report.json_status = good.status;
    report.json_body = await good.json();
    const bad = await post(JSON.stringify({ request_id: requestId, kind: "stars", value: 5 }));
    report.bad_status = bad.status;
    report.bad_body = await bad.json();
    const web = await fetch(grpcUrl + "/keel.v1.FeedbackService/SubmitFeedback", {
      method: "POST",
      headers: { "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1" },
      body: frame(encodeSubmit(requestId, 1, -1, "browser-grpc-web")),
    });
    report.grpc_web_http_status = web.status;
    const parts = frames(new Uint8Array(await web.arrayBuffer()));
    report.grpc_web_data_frames = parts.filter((part) => !part.trailer).length;
    const trailer = parts.find((part) => part.trailer);
    report.grpc_web_trailer = trailer ? new TextDecoder().decode(trailer.body) : "";
    report.grpc_web_header_status = web.headers.get("grpc-status");
    report.grpc_web_header_message = web.headers.get("grpc-message");
  } catch (error) {
    report.error = String(error);
  }
  await fetch("/report", { method: "POST", body: JSON.stringify(report) });
}
run();
</script></body></html>"#;

#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Option<serde_json::Value>>>);

async fn report(State(reports): State<Reports>, body: String) {
    *reports.0.lock().unwrap() = Some(serde_json::from_str(&body).unwrap());
}

#[tokio::test]
async fn a_page_on_another_origin_posts_feedback_as_json_and_grpc_web() {
    let chromium = which_chromium();
    let page_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_origin = format!("http://{}", page_listener.local_addr().unwrap());

    let mut monitoring = Running::monitoring().await;
    monitoring
        .client
        .record_inferences(pb::RecordInferencesRequest {
            records: vec![inference(1, 1_000, "Where is my parcel?", "On its way.")],
        })
        .await
        .unwrap();
    let origin = page_origin.clone();
    let feedback = Running::feedback_on(
        keel_testkit::TestDatabase::sqlite(),
        monitoring.server.url(),
        move |config| config.cors_allowed_origins = vec![origin],
    )
    .await;

    let page = PAGE
        .replace("REQUEST_ID", &request_id(1))
        .replace(
            "FEEDBACK_URL",
            &format!("http://{}", feedback.server.admin_address()),
        )
        .replace("GRPC_URL", &feedback.server.url());
    let reports = Reports::default();
    let site = Router::new()
        .route("/", get(move || async move { Html(page) }))
        .route("/report", post(report))
        .with_state(reports.clone());
    tokio::spawn(async move { axum::serve(page_listener, site).await });

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Command::new(&chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("{page_origin}/"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {chromium}: {error}"));
    let outcome = eventually("the page's report", Duration::from_secs(60), async || {
        reports.0.lock().unwrap().clone()
    })
    .await;
    let _ = browser.kill();
    let _ = browser.wait();

    assert!(outcome.get("error").is_none(), "{outcome}");
    assert_eq!(outcome["json_status"], 200, "{outcome}");
    assert_eq!(outcome["json_body"]["user_id"], "browser-json");
    assert_eq!(outcome["json_body"]["joined"], true);
    assert_eq!(outcome["bad_status"], 400, "{outcome}");
    assert!(
        outcome["bad_body"]["error"]
            .as_str()
            .unwrap()
            .starts_with("field `kind`: must be one of"),
        "{outcome}"
    );
    assert_eq!(outcome["grpc_web_http_status"], 200, "{outcome}");
    assert_eq!(outcome["grpc_web_data_frames"], 1, "{outcome}");
    let status_zero = outcome["grpc_web_trailer"]
        .as_str()
        .unwrap()
        .contains("grpc-status:0")
        || outcome["grpc_web_header_status"] == "0";
    assert!(status_zero, "{outcome}");

    // Both posts were stored, joined with the record.
    let listed = feedback
        .client
        .clone()
        .list_feedback(pb::ListFeedbackRequest {
            request_id: request_id(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut users: Vec<&str> = listed
        .records
        .iter()
        .map(|record| record.user_id.as_str())
        .collect();
    users.sort();
    assert_eq!(users, vec!["browser-grpc-web", "browser-json"]);
    assert!(listed.records.iter().all(|record| record.joined));
    feedback.server.stop().await.unwrap();
    monitoring.server.stop().await.unwrap();
}

/// Debian's `chromium`, as `scripts/setup` installs it.
fn which_chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {candidate}")])
            .output()
            .map(|output| output.status.success())
            .unwrap_or(false);
        if found {
            return candidate.to_string();
        }
    }
    panic!("the browser test needs Chromium: run scripts/setup (Debian: apt-get install chromium)");
}
