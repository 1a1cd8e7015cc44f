//! Flagged words per language, for the filter that drops documents with too many of them, as
//! ROOTS did: pornographic spam and abuse pages are dense in such words, while ordinary text
//! that mentions one now and then stays well below a few percent.
//!
//! The lists are LDNOOBW's ("List of Dirty, Naughty, Obscene, and Otherwise Bad Words",
//! CC BY 4.0), shipped in `coordinator/data/flagged_words.json` with their provenance and
//! licence in `coordinator/data/NOTICE.md`. A language without a list is not filtered by this
//! rule. The filter is off by default (`max_flagged_word_ratio = 1`); ROOTS-like settings are a
//! few percent.
//!
//! Text and entries are split into words the same way (lowercased runs of letters and
//! digits), and an entry of several words matches only the same words in a row. Languages
//! written without spaces (`zh`) are matched as substrings instead, and the ratio is over
//! letters rather than words.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The lists, as shipped: a JSON object from language to entries.
const LISTS: &str = include_str!("../../data/flagged_words.json");

/// Languages whose entries are matched as substrings (written without spaces).
const UNSPACED: &[&str] = &["zh"];

/// One language's entries, ready to match.
#[derive(Debug, Default)]
struct List {
    /// Entries of one word.
    words: HashSet<String>,
    /// Entries of several words, by their first word.
    phrases: HashMap<String, Vec<Vec<String>>>,
    /// Entries matched as substrings (languages without spaces).
    substrings: Vec<String>,
}

/// Lowercased runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn parse(json: &str) -> HashMap<String, List> {
    // The lists are part of the binary and checked by a unit test; a list that did not parse
    // would filter nothing, never drop a document.
    let raw: HashMap<String, Vec<String>> = serde_json::from_str(json).unwrap_or_default();
    raw.into_iter()
        .map(|(language, entries)| {
            let mut list = List::default();
            for entry in entries {
                if UNSPACED.contains(&language.as_str()) {
                    list.substrings.push(entry.to_lowercase());
                    continue;
                }
                let mut split: Vec<String> = words(&entry).collect();
                match split.len() {
                    0 => {}
                    1 => {
                        list.words.extend(split.pop());
                    }
                    _ => list
                        .phrases
                        .entry(split[0].clone())
                        .or_default()
                        .push(split),
                }
            }
            (language, list)
        })
        .collect()
}

fn lists() -> &'static HashMap<String, List> {
    static LISTS_PARSED: OnceLock<HashMap<String, List>> = OnceLock::new();
    LISTS_PARSED.get_or_init(|| parse(LISTS))
}

/// The list of `language` (by primary subtag), if Canopy ships one.
fn list(language: &str) -> Option<&'static List> {
    let primary = language.split(['-', '_']).next().unwrap_or(language);
    lists().get(&primary.to_ascii_lowercase())
}

/// The languages with a list, sorted.
pub fn languages() -> Vec<&'static str> {
    let mut langs: Vec<&str> = lists().keys().map(String::as_str).collect();
    langs.sort_unstable();
    langs
}

/// The share of `text` that flagged entries of `language` cover: of its words, or of its
/// letters for a language written without spaces. `None` without a list or without words.
pub fn ratio(language: &str, text: &str) -> Option<f64> {
    let list = list(language)?;
    if !list.substrings.is_empty() {
        return substring_ratio(&list.substrings, text);
    }
    let tokens: Vec<String> = words(text).collect();
    if tokens.is_empty() {
        return None;
    }
    let mut covered = vec![false; tokens.len()];
    for (i, token) in tokens.iter().enumerate() {
        if list.words.contains(token) {
            covered[i] = true;
        }
        for phrase in list.phrases.get(token).into_iter().flatten() {
            if tokens[i..].starts_with(phrase) {
                covered[i..i + phrase.len()].fill(true);
            }
        }
    }
    let flagged = covered.iter().filter(|c| **c).count();
    Some(flagged as f64 / tokens.len() as f64)
}

/// The share of `text`'s letters that `entries` cover as substrings (case-insensitive).
fn substring_ratio(entries: &[String], text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let mut covered = vec![false; lower.len()];
    for entry in entries.iter().filter(|e| !e.is_empty()) {
        for (at, found) in lower.match_indices(entry.as_str()) {
            covered[at..at + found.len()].fill(true);
        }
    }
    let (mut letters, mut flagged) = (0u64, 0u64);
    for (at, c) in lower.char_indices() {
        if c.is_alphabetic() {
            letters += 1;
            flagged += u64::from(covered[at]);
        }
    }
    (letters > 0).then(|| flagged as f64 / letters as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw entries of a language, as shipped.
    fn shipped(language: &str) -> Vec<String> {
        let raw: HashMap<String, Vec<String>> = serde_json::from_str(LISTS).unwrap();
        raw[language].clone()
    }

    #[test]
    fn the_shipped_lists_parse_and_cover_the_languages_named_in_the_notice() {
        assert_eq!(
            languages(),
            [
                "ar", "cs", "de", "en", "es", "fr", "hi", "it", "nl", "pl", "pt", "ru", "zh"
            ]
        );
        for lang in languages() {
            let list = list(lang).unwrap();
            let n = list.words.len() + list.phrases.values().map(Vec::len).sum::<usize>();
            assert!(n + list.substrings.len() >= 30, "{lang}: {n} entries");
        }
        // No entry is a short word that ordinary text is full of.
        for lang in languages().into_iter().filter(|l| !UNSPACED.contains(l)) {
            for entry in shipped(lang) {
                let letters = entry.chars().filter(|c| c.is_alphabetic()).count();
                assert!(letters >= 3, "{lang}: {entry:?}");
            }
        }
    }

    #[test]
    fn ordinary_text_has_none_and_spam_made_of_entries_is_mostly_flagged() {
        let prose = "The committee met on Tuesday to discuss the budget for the new library, \
                     and agreed to publish its report before the end of the month.";
        assert_eq!(ratio("en", prose), Some(0.0));
        assert_eq!(
            ratio("en-GB", prose),
            Some(0.0),
            "the primary subtag matches"
        );
        // A page that repeats entries of the list between filler words.
        let entries = shipped("en");
        let singles: Vec<&String> = entries.iter().filter(|e| !e.contains(' ')).collect();
        let spam: String = singles
            .iter()
            .take(20)
            .map(|e| format!("{} click here ", e.to_uppercase()))
            .collect();
        let r = ratio("en", &spam).unwrap();
        assert!(
            (r - 1.0 / 3.0).abs() < 1e-9,
            "one word in three, any case: {r}"
        );
        // One mention in a longer text stays small.
        let one = format!("{prose} {} {prose}", singles[0]);
        assert!(ratio("en", &one).unwrap() < 0.05);
        // No list, or no words: no figure.
        assert_eq!(ratio("sw", &spam), None);
        assert_eq!(ratio("en", "  ... !!! "), None);
    }

    #[test]
    fn a_phrase_matches_only_its_words_in_a_row() {
        let entries = shipped("en");
        let phrase = entries
            .iter()
            .find(|e| e.split(' ').count() == 2 && !e.contains('-'))
            .unwrap();
        let parts: Vec<&str> = phrase.split(' ').collect();
        let together = format!("well {phrase} then");
        assert_eq!(ratio("en", &together), Some(0.5));
        // The same words apart, neither an entry by itself, are not a match.
        let list = list("en").unwrap();
        if parts.iter().all(|p| !list.words.contains(*p)) {
            let apart = format!("{} well then {}", parts[0], parts[1]);
            assert_eq!(ratio("en", &apart), Some(0.0));
        }
    }

    #[test]
    fn text_without_spaces_is_matched_by_letters() {
        let entries = shipped("zh");
        let entry = entries.iter().find(|e| e.chars().count() == 2).unwrap();
        let clean = "人人生而自由在尊严和权利上一律平等";
        assert_eq!(ratio("zh", clean), Some(0.0));
        let with = format!("{entry}。{clean}。{entry}");
        let letters = with.chars().filter(|c| c.is_alphabetic()).count();
        let r = ratio("zh-Hans", &with).unwrap();
        assert!((r - 4.0 / letters as f64).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_list_that_does_not_parse_filters_nothing() {
        assert!(parse("not json").is_empty());
        let lists = parse(r#"{"xx": ["one two", "word", " "]}"#);
        assert!(lists["xx"].words.contains("word"));
        assert_eq!(lists["xx"].phrases["one"], [vec!["one", "two"]]);
    }
}
