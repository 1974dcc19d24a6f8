//! Turning generated token pieces into the text a caller may see: pieces are
//! bytes that can split a UTF-8 character across tokens, and stop sequences
//! can span tokens, so both need a little held-back state.

/// Joins byte pieces into text, holding back an incomplete UTF-8 character
/// until the bytes that complete it arrive.
#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// The text that is complete after `bytes`; bytes that can never be
    /// valid UTF-8 become U+FFFD, as a lossy decoder would make them.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(error) => {
                    let valid_len = error.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[..valid_len]));
                    match error.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid_len);
                            return text;
                        }
                        Some(invalid_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid_len + invalid_len);
                        }
                    }
                }
            }
        }
    }

    /// What is left when generation ends: an incomplete character can no
    /// longer be completed, so it is replaced.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// What the stop filter lets through after a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filtered {
    /// Text that is certainly part of the answer.
    pub(crate) text: String,
    /// A stop sequence was produced: the answer ends before it.
    pub(crate) stopped: bool,
}

/// Cuts the answer before the first stop sequence, and holds back any tail
/// that could still grow into one, so a streamed delta never shows part of
/// a stop sequence that the final text would not contain.
#[derive(Debug)]
pub(crate) struct StopFilter {
    stop_sequences: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// `stop_sequences` must not hold an empty string (it would stop before
    /// the first character); the caller validates that.
    pub(crate) fn new(stop_sequences: Vec<String>) -> StopFilter {
        StopFilter {
            stop_sequences,
            pending: String::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> Filtered {
        self.pending.push_str(text);
        if let Some(stop_index) = self.earliest_stop() {
            let answer_end = self.pending[..stop_index].to_string();
            self.pending.clear();
            return Filtered {
                text: answer_end,
                stopped: true,
            };
        }
        let held_back = self.longest_stop_prefix_suffix();
        let releasable = self.pending.len() - held_back;
        let released: String = self.pending.drain(..releasable).collect();
        Filtered {
            text: released,
            stopped: false,
        }
    }

    /// The held-back tail, once no more text will come.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn earliest_stop(&self) -> Option<usize> {
        let mut earliest: Option<usize> = None;
        for stop in &self.stop_sequences {
            if let Some(index) = self.pending.find(stop.as_str()) {
                earliest = Some(earliest.map_or(index, |current| current.min(index)));
            }
        }
        earliest
    }

    /// The length of the longest end of `pending` that is the start of some
    /// stop sequence (shorter than the whole sequence, which `earliest_stop`
    /// would have found). It always lies on a character boundary because it
    /// equals a prefix of a `str` that ends on one.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stop_sequences {
            for prefix_len in (1..stop.len()).rev() {
                if prefix_len <= longest {
                    break;
                }
                if stop.is_char_boundary(prefix_len) && self.pending.ends_with(&stop[..prefix_len])
                {
                    longest = prefix_len;
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_pieces_comes_out_whole() {
        let mut assembler = Utf8Assembler::default();
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(assembler.push(b"5 "), "5 ");
        assert_eq!(assembler.push(&euro[..1]), "");
        assert_eq!(assembler.push(&euro[1..2]), "");
        assert_eq!(assembler.push(&euro[2..]), "€");
        assert_eq!(assembler.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_and_the_rest_survives() {
        let mut assembler = Utf8Assembler::default();
        assert_eq!(assembler.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(assembler.push(&"é".as_bytes()[..1]), "");
        assert_eq!(assembler.finish(), "\u{fffd}");
    }

    fn run_filter(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut filter = StopFilter::new(stops.iter().map(|stop| stop.to_string()).collect());
        let mut deltas = Vec::new();
        for piece in pieces {
            let filtered = filter.push(piece);
            if !filtered.text.is_empty() {
                deltas.push(filtered.text);
            }
            if filtered.stopped {
                return (deltas, true, String::new());
            }
        }
        let rest = filter.finish();
        (deltas, false, rest)
    }

    #[test]
    fn a_stop_sequence_spanning_pieces_is_never_streamed() {
        let (deltas, stopped, rest) =
            run_filter(&["\n\nQ:"], &["Paris.", "\n", "\n", "Q:", " next"]);
        assert_eq!(deltas, vec!["Paris.".to_string()]);
        assert!(stopped);
        assert_eq!(rest, "");
    }

    #[test]
    fn a_false_start_of_a_stop_sequence_is_released_once_it_diverges() {
        let (deltas, stopped, rest) = run_filter(&["END"], &["the E", "N", "d of it"]);
        assert_eq!(deltas, vec!["the ".to_string(), "ENd of it".to_string()]);
        assert!(!stopped);
        assert_eq!(rest, "");
    }

    #[test]
    fn the_held_back_tail_comes_out_at_the_end() {
        let (deltas, stopped, rest) = run_filter(&["###"], &["done #", "#"]);
        assert_eq!(deltas, vec!["done ".to_string()]);
        assert!(!stopped);
        assert_eq!(rest, "##");
    }

    #[test]
    fn the_earliest_of_several_stop_sequences_wins() {
        let (deltas, stopped, _) = run_filter(&["world", "lo"], &["hello world"]);
        assert_eq!(deltas, vec!["hel".to_string()]);
        assert!(stopped);
    }

    #[test]
    fn multibyte_stop_sequences_hold_back_on_character_boundaries() {
        let (deltas, stopped, _) = run_filter(&["éé"], &["caf", "é", "é!"]);
        assert_eq!(deltas, vec!["caf".to_string()]);
        assert!(stopped);
    }
}
