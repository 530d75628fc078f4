//! A tiny crate to try hybrid-lsp on.

use std::collections::HashMap;
use std::fmt;

/// A word counter.
#[derive(Debug, Default, Clone)]
pub struct WordCount {
    counts: HashMap<String, usize>,
}

impl WordCount {
    /// Creates an empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts every whitespace-separated word of `text`.
    pub fn add_text(&mut self, text: &str) {
        for word in text.split_whitespace() {
            *self.counts.entry(word.to_lowercase()).or_insert(0) += 1;
        }
    }

    /// How often `word` was seen.
    pub fn get(&self, word: &str) -> usize {
        
    }
}

impl fmt::Display for WordCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<_> = self.counts.iter().collect();
        words.sort();
        for (word, n) in words {
            writeln!(f, "{word}: {n}")?;
        }
        Ok(())
    }
}
