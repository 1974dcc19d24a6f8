//! Where a version came from: the version it was derived from, the
//! datasets it was built from and the evaluation runs that justified it.

use keel_types::{validate, FieldError};
use serde::{Deserialize, Serialize};

pub const MAX_LINEAGE_DATASETS: usize = 64;
pub const MAX_LINEAGE_RUNS: usize = 64;
pub const MAX_DATASET_NAME_BYTES: usize = 512;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lineage {
    /// 0: none.
    pub parent_version: u32,
    pub datasets: Vec<DatasetSource>,
    /// Evaluation run ids.
    pub evaluation_runs: Vec<String>,
}

/// A dataset as it was used: its name and exactly which lines (a SHA-256
/// of its bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSource {
    pub name: String,
    /// 64 lowercase hex digits, or empty when unknown.
    pub digest: String,
    pub examples: u64,
}

impl Lineage {
    pub fn is_empty(&self) -> bool {
        *self == Lineage::default()
    }

    /// The rules a lineage can be checked by alone; that the parent and the
    /// runs exist is checked against the store.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.datasets.len() > MAX_LINEAGE_DATASETS {
            return Err(FieldError::new(
                "lineage.datasets",
                format!(
                    "must hold at most {MAX_LINEAGE_DATASETS} datasets, got {}",
                    self.datasets.len()
                ),
            ));
        }
        for (index, dataset) in self.datasets.iter().enumerate() {
            dataset.validate(&format!("lineage.datasets[{index}]"))?;
        }
        if self.evaluation_runs.len() > MAX_LINEAGE_RUNS {
            return Err(FieldError::new(
                "lineage.evaluation_runs",
                format!(
                    "must hold at most {MAX_LINEAGE_RUNS} runs, got {}",
                    self.evaluation_runs.len()
                ),
            ));
        }
        for (index, run) in self.evaluation_runs.iter().enumerate() {
            keel_types::RequestId::parse(&format!("lineage.evaluation_runs[{index}]"), run)?;
        }
        Ok(())
    }
}

impl DatasetSource {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate::not_empty(&format!("{field}.name"), &self.name)?;
        validate::max_len(&format!("{field}.name"), &self.name, MAX_DATASET_NAME_BYTES)?;
        let is_sha256 = self.digest.len() == 64
            && self
                .digest
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if !self.digest.is_empty() && !is_sha256 {
            return Err(FieldError::new(
                format!("{field}.digest"),
                "must be empty or a SHA-256 in 64 lowercase hex digits",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_rules_name_their_field() {
        let mut lineage = Lineage {
            parent_version: 1,
            datasets: vec![DatasetSource {
                name: "feedback:eval:support".into(),
                digest: "ab".repeat(32),
                examples: 12,
            }],
            evaluation_runs: vec!["0190b5a0-0000-7000-8000-000000000001".into()],
        };
        assert_eq!(lineage.validate(), Ok(()));
        lineage.datasets[0].digest = "AB".repeat(32);
        let error = lineage.validate().unwrap_err();
        assert_eq!(error.field, "lineage.datasets[0].digest");
        lineage.datasets[0].digest.clear();
        lineage.datasets[0].name.clear();
        assert_eq!(
            lineage.validate().unwrap_err().field,
            "lineage.datasets[0].name"
        );
        lineage.datasets[0].name = "ok".into();
        lineage.evaluation_runs.push("run-7".into());
        assert_eq!(
            lineage.validate().unwrap_err().field,
            "lineage.evaluation_runs[1]"
        );
    }
}
