use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::text::words;
use crate::{Embedder, ModelError};

/// A deterministic bag-of-words embedder: each lowercased word and word pair
/// is hashed to a signed bucket, then the vector is L2-normalised. Texts that
/// share words get close vectors; there is no semantics beyond that.
pub struct HashingEmbedder {
    dimension: usize,
}

pub const HASHING_EMBEDDER_NAME: &str = "hashing";

impl HashingEmbedder {
    pub fn new(dimension: usize) -> HashingEmbedder {
        HashingEmbedder {
            dimension: dimension.max(1),
        }
    }

    fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimension];
        let tokens: Vec<String> = words(text).collect();
        for token in &tokens {
            self.add_feature(&mut vector, token.as_bytes(), 1.0);
        }
        for pair in tokens.windows(2) {
            let joined = format!("{} {}", pair[0], pair[1]);
            self.add_feature(&mut vector, joined.as_bytes(), 0.5);
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut vector {
                *x /= norm;
            }
        }
        vector
    }

    fn add_feature(&self, vector: &mut [f32], feature: &[u8], weight: f32) {
        let hash = xxh3_64_with_seed(feature, 0x6b65656c);
        let bucket = (hash % self.dimension as u64) as usize;
        let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
        vector[bucket] += sign * weight;
    }
}

impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        HASHING_EMBEDDER_NAME
    }

    fn provider(&self) -> &str {
        "keel"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(texts.iter().map(|text| self.embed_one(text)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn deterministic_normalised_and_topical() {
        let embedder = HashingEmbedder::new(384);
        let texts = vec![
            "How do I reset my password?".to_string(),
            "To reset your password, open settings".to_string(),
            "The cafeteria serves lunch at noon".to_string(),
        ];
        let first = embedder.embed(&texts).unwrap();
        let second = embedder.embed(&texts).unwrap();
        assert_eq!(first, second);
        assert_eq!(first[0].len(), 384);
        let norm: f32 = first[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(cosine(&first[0], &first[1]) > cosine(&first[0], &first[2]));
    }

    #[test]
    fn empty_text_is_the_zero_vector() {
        let vector = HashingEmbedder::new(8).embed(&[String::new()]).unwrap();
        assert_eq!(vector[0], vec![0.0; 8]);
    }
}
