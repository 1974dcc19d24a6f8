//! Sampling parameters of one request, checked, and the llama.cpp sampler
//! chain that applies them.

use llama_cpp_2::sampling::LlamaSampler;

use crate::{GenerationParams, ModelError};

/// llama.cpp's "pick a random seed" value (`LLAMA_DEFAULT_SEED`).
const RANDOM_SEED: u32 = u32::MAX;

/// The checked sampling settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampling {
    /// 0 means greedy: always the most likely token, fully deterministic.
    pub(crate) temperature: f32,
    pub(crate) top_p: f32,
    pub(crate) seed: u32,
}

impl Sampling {
    /// Greedy unless the request asks for a temperature: a RAG answer
    /// should be reproducible by default.
    pub(crate) fn from_params(params: &GenerationParams) -> Result<Sampling, ModelError> {
        let temperature = params.temperature.unwrap_or(0.0);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(ModelError::InvalidInput(format!(
                "temperature must be a finite number >= 0, got {temperature}"
            )));
        }
        let top_p = params.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::InvalidInput(format!(
                "top_p must be in (0, 1], got {top_p}"
            )));
        }
        let seed = params.seed.map_or(RANDOM_SEED, fold_seed);
        Ok(Sampling {
            temperature,
            top_p,
            seed,
        })
    }

    pub(crate) fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The chain llama.cpp's own tools build, minus the samplers Keel does
    /// not expose: nucleus cut, temperature, then a seeded draw.
    pub(crate) fn sampler(&self) -> LlamaSampler {
        if self.is_greedy() {
            return LlamaSampler::greedy();
        }
        LlamaSampler::chain_simple([
            LlamaSampler::top_p(self.top_p, 1),
            LlamaSampler::temp(self.temperature),
            LlamaSampler::dist(self.seed),
        ])
    }
}

/// llama.cpp takes a 32-bit seed, and `u32::MAX` means "random": fold the
/// 64 bits so that distinct seeds stay distinct in practice, and keep an
/// explicit seed from meaning "random".
fn fold_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == RANDOM_SEED {
        RANDOM_SEED - 1
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_greedy_with_no_nucleus_cut() {
        let sampling = Sampling::from_params(&GenerationParams::default()).unwrap();
        assert!(sampling.is_greedy());
        assert_eq!(sampling.top_p, 1.0);
        assert_eq!(sampling.seed, RANDOM_SEED);
    }

    #[test]
    fn bad_temperature_and_top_p_are_refused_with_the_value() {
        let hot = GenerationParams {
            temperature: Some(-0.5),
            ..GenerationParams::default()
        };
        let error = Sampling::from_params(&hot).unwrap_err().to_string();
        assert!(
            error.contains("temperature") && error.contains("-0.5"),
            "{error}"
        );
        let no_mass = GenerationParams {
            top_p: Some(0.0),
            ..GenerationParams::default()
        };
        let error = Sampling::from_params(&no_mass).unwrap_err().to_string();
        assert!(error.contains("top_p"), "{error}");
    }

    #[test]
    fn seeds_fold_to_32_bits_and_never_mean_random() {
        assert_eq!(fold_seed(42), 42);
        assert_eq!(fold_seed(1 << 32), 1);
        assert_eq!(fold_seed(u64::from(u32::MAX)), u32::MAX - 1);
        assert_ne!(fold_seed(7), fold_seed(8));
    }
}
