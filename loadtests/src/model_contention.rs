//! How Keel's in-process models share the CPU: `smollm2` decoding while
//! `minilm` embeds without pause on another thread (an ingest during a
//! chat), against each model alone, in the same run. A share is the speed
//! together over the speed alone. Fair sharing of the CPU gives the
//! embedder about one half; decoding gets less than one half because its
//! share also counts the wait after the prompt, while the embedder catches
//! up on the CPU time the prompt took (measured on 2 cores: 0.31 and 0.48).
//! Threads that fight over the cores instead (llama.cpp's spinning barriers
//! on oversubscribed cores) gave 0.08 and 0.19.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use keel_models::{Embedder, Generator, ModelError};
use serde::{Deserialize, Serialize};

use crate::model_bench::{median, time_embedding, time_generation, Workload};

/// Sentences per embedding call, as an ingest sends them.
const EMBED_BATCH: usize = 32;
/// The share each model must keep, and the least the two must add up to.
pub const MIN_SHARE: f64 = 0.25;
pub const MIN_TOTAL_SHARE: f64 = 0.7;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContentionResult {
    pub decode_alone_tokens_per_s: f64,
    pub decode_together_tokens_per_s: f64,
    pub embed_alone_sentences_per_s: f64,
    pub embed_together_sentences_per_s: f64,
}

impl ContentionResult {
    pub fn decode_share(&self) -> f64 {
        self.decode_together_tokens_per_s / self.decode_alone_tokens_per_s
    }

    pub fn embed_share(&self) -> f64 {
        self.embed_together_sentences_per_s / self.embed_alone_sentences_per_s
    }

    /// Whether each model kept [`MIN_SHARE`] and the two [`MIN_TOTAL_SHARE`].
    pub fn meets_bars(&self) -> bool {
        self.decode_share() >= MIN_SHARE
            && self.embed_share() >= MIN_SHARE
            && self.decode_share() + self.embed_share() >= MIN_TOTAL_SHARE
    }

    /// The result as a markdown table.
    pub fn table(&self) -> String {
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        let mut table = String::from(
            "| measure | alone | together | share | bar | |\n| --- | ---: | ---: | ---: | ---: | --- |\n",
        );
        let mut row = |measure: &str, alone: f64, together: f64, share: f64| {
            table.push_str(&format!(
                "| {measure} | {alone:.1} | {together:.1} | {share:.2} | >= {MIN_SHARE} | {} |\n",
                verdict(share >= MIN_SHARE)
            ));
        };
        row(
            "smollm2 decode, tokens/s",
            self.decode_alone_tokens_per_s,
            self.decode_together_tokens_per_s,
            self.decode_share(),
        );
        row(
            &format!("minilm batch {EMBED_BATCH}, sentences/s"),
            self.embed_alone_sentences_per_s,
            self.embed_together_sentences_per_s,
            self.embed_share(),
        );
        let total = self.decode_share() + self.embed_share();
        table.push_str(&format!(
            "| both | | | {total:.2} | >= {MIN_TOTAL_SHARE} | {} |\n",
            verdict(total >= MIN_TOTAL_SHARE)
        ));
        table
    }
}

/// Each model alone (`repeats` generations, `repeats` embedding passes),
/// then `repeats` generations while another thread embeds without pause.
pub fn measure_contention(
    generator: &dyn Generator,
    embedder: &dyn Embedder,
    workload: &Workload,
    repeats: usize,
) -> Result<ContentionResult, ModelError> {
    let repeats = repeats.max(1);
    let sentences = &workload.sentences;
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(std::time::Duration::from_millis(200));

    progress.set_message("warm-up");
    time_generation(generator, workload)?;
    embedder.embed(&sentences[..sentences.len().min(EMBED_BATCH)])?;

    progress.set_message("smollm2 alone");
    let mut decode_alone = Vec::new();
    for _ in 0..repeats {
        decode_alone.push(time_generation(generator, workload)?.decode_tokens_per_s);
    }
    progress.set_message("minilm alone");
    let mut embed_alone = Vec::new();
    for _ in 0..repeats {
        embed_alone.push(time_embedding(
            embedder,
            sentences,
            EMBED_BATCH,
            &ProgressBar::hidden(),
        )?);
    }

    progress.set_message("smollm2 while minilm embeds");
    let generating = AtomicBool::new(true);
    let (decode_together, embed_together) = thread::scope(|scope| {
        let ingest = scope.spawn(|| embed_until_stopped(embedder, sentences, &generating));
        let mut decode_together = Vec::new();
        let mut failure = None;
        for _ in 0..repeats {
            match time_generation(generator, workload) {
                Ok(sample) => decode_together.push(sample.decode_tokens_per_s),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        generating.store(false, Ordering::Relaxed);
        let embed_together = ingest
            .join()
            .map_err(|_panic| ModelError::Backend("the embedding thread panicked".to_string()))?;
        match failure {
            Some(error) => Err(error),
            None => Ok((decode_together, embed_together?)),
        }
    })?;
    progress.finish_and_clear();
    Ok(ContentionResult {
        decode_alone_tokens_per_s: median(decode_alone),
        decode_together_tokens_per_s: median(decode_together),
        embed_alone_sentences_per_s: median(embed_alone),
        embed_together_sentences_per_s: embed_together,
    })
}

/// Embeds batches of `sentences` in a loop until `running` turns false;
/// sentences per second over the whole time.
fn embed_until_stopped(
    embedder: &dyn Embedder,
    sentences: &[String],
    running: &AtomicBool,
) -> Result<f64, ModelError> {
    let started = Instant::now();
    let mut embedded = 0_usize;
    for batch in sentences.chunks(EMBED_BATCH).cycle() {
        if !running.load(Ordering::Relaxed) {
            break;
        }
        embedded += embedder.embed(batch)?.len();
    }
    Ok(embedded as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(decode_together: f64, embed_together: f64) -> ContentionResult {
        ContentionResult {
            decode_alone_tokens_per_s: 60.0,
            decode_together_tokens_per_s: decode_together,
            embed_alone_sentences_per_s: 150.0,
            embed_together_sentences_per_s: embed_together,
        }
    }

    #[test]
    fn fair_sharing_meets_the_bars() {
        let shared = result(30.0, 75.0);
        assert_eq!(shared.decode_share(), 0.5);
        assert_eq!(shared.embed_share(), 0.5);
        assert!(shared.meets_bars());
        assert!(!shared.table().contains("MISSED"));
    }

    #[test]
    fn a_starved_model_or_lost_throughput_misses() {
        // One model starved, although the sum is fine.
        assert!(!result(6.0, 150.0).meets_bars());
        // Oversubscribed cores: both shares collapse (measured 0.08, 0.19).
        let collapsed = result(4.8, 28.5);
        assert!(!collapsed.meets_bars());
        assert!(collapsed.table().contains("| 0.27 | >= 0.7 | MISSED |"));
        // Each above its share but together too little.
        assert!(!result(18.0, 45.0).meets_bars());
    }
}
