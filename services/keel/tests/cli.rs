//! The `keel` binary as a user runs it: exit codes and what it says on
//! stderr when something is missing. (Being an integration test, this also
//! makes `cargo test --no-run` build `target/debug/keel`, which
//! `scripts/test` uses to fetch the models.)

// Test helpers are not #[test] functions, but they are test code.
#![allow(clippy::expect_used)]

use std::process::{Command, Output};

fn keel(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(arguments)
        .env_remove("KEEL_MODELS_DIR")
        .env_remove("KEEL_DATA_DIR")
        .env_remove("KEEL_SERVING_URL")
        .env_remove("KEEL_REGISTRY_URL")
        .output()
        .expect("the keel binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_a_users_commands() {
    let output = keel(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in [
        "up",
        "demo",
        "models",
        "collection",
        "ingest",
        "query",
        "feedback",
        "export",
    ] {
        assert!(text.contains(command), "`{command}` missing from:\n{text}");
    }
}

#[test]
fn up_without_model_files_says_how_to_fetch_them() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir_text = data_dir.path().to_str().unwrap();
    let output = keel(&["up", "--data-dir", data_dir_text]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("keel models fetch"), "{message}");
    assert!(
        message.contains(&format!(
            "{data_dir_text}/models/minilm/all-MiniLM-L6-v2.f32.gguf"
        )),
        "{message}"
    );
}

#[test]
fn a_query_to_an_unreachable_serving_names_it() {
    for extra in [&[][..], &["--stream"][..]] {
        let mut arguments = vec!["query", "support", "How long is the refund window?"];
        arguments.extend_from_slice(extra);
        arguments.extend_from_slice(&["--serving", "http://127.0.0.1:1"]);
        let output = keel(&arguments);
        assert_eq!(output.status.code(), Some(1), "{arguments:?}");
        let message = stderr(&output);
        assert!(
            message.contains("cannot reach serving at http://127.0.0.1:1"),
            "{arguments:?}: {message}"
        );
    }
}

#[test]
fn a_bad_spec_file_fails_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("chain.yaml");
    std::fs::write(&spec, "chain: [not, a, spec]\n").unwrap();
    let output = keel(&[
        "version",
        "create",
        "support-bot",
        "--file",
        spec.to_str().unwrap(),
        "--registry",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("chain.yaml"), "{message}");
    assert!(!message.contains("cannot reach"), "{message}");
}

/// `keel serve <service>` with `envs`, on ephemeral ports in a fresh data
/// directory, telemetry off.
fn serve(service: &str, envs: &[(&str, &str)]) -> Output {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command
        .args(["serve", service])
        .env("KEEL_DATA_DIR", data_dir.path())
        .env("KEEL_REGISTRY__PORT", "0")
        .env("KEEL_MONITORING__PORT", "0")
        .env("KEEL_TELEMETRY__ENABLED", "false")
        .env_remove("KEEL_MASTER_KEY")
        .env_remove("KEEL_HOST");
    command.envs(envs.iter().copied());
    command.output().expect("the keel binary runs")
}

#[test]
fn a_service_refuses_every_interface_without_authentication() {
    for service in ["registry", "monitoring"] {
        let output = serve(service, &[("KEEL_HOST", "0.0.0.0")]);
        assert_eq!(output.status.code(), Some(1), "{service}");
        let message = stderr(&output);
        assert!(
            message.contains("refusing to serve") && message.contains("without authentication"),
            "{service}: {message}"
        );
        assert!(message.contains("KEEL_MASTER_KEY"), "{service}: {message}");
    }
}

#[test]
fn authentication_without_a_master_key_names_the_variable() {
    let output = serve("registry", &[("KEEL_AUTH__ENABLED", "true")]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("needs a master key: set KEEL_MASTER_KEY"),
        "{message}"
    );
    let short = serve(
        "registry",
        &[("KEEL_AUTH__ENABLED", "true"), ("KEEL_MASTER_KEY", "short")],
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        stderr(&short).contains("shorter than 32"),
        "{}",
        stderr(&short)
    );
}
