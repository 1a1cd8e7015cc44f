//! The project's own generated multilingual text: a seeded generator of plausible documents
//! in English, French, Spanish, German, Swahili, Hindi (Devanagari), Arabic, Chinese and code
//! (Python and Rust), built from small embedded word lists and sentence templates.
//!
//! It gives training and tests real byte-level structure (words, word order, punctuation,
//! multi-byte UTF-8 in four scripts, indentation) without downloading anything. It is not a
//! corpus: the vocabulary is a few hundred phrases, so a model learns it quickly, which is
//! what a test of a training loop wants.
//!
//! [`generate`] is deterministic: the same seed gives the same bytes on every machine (the
//! draws come from ChaCha8, taken in a fixed order, with no floating point). Documents are
//! separated by a blank line; each picks its language uniformly. A natural-language document
//! is one to three paragraphs of two to five sentences; each sentence fills a template of its
//! language with a subject, verb, object and place or time (word order follows the language:
//! SVO, V2 in German, SOV in Hindi, VSO in Arabic, no spaces in Chinese). A code document is
//! one to three small Python or Rust functions.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

mod words;

use words::{ARABIC, CHINESE, ENGLISH, FRENCH, FUNCTION_NAMES, GERMAN, HINDI, SPANISH, SWAHILI};

/// `len` bytes of generated multilingual text from `seed`: always valid UTF-8 (the last
/// document is cut at a character boundary and the rest filled with `\n`).
pub fn generate(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Draw(ChaCha8Rng::seed_from_u64(seed));
    let mut text = String::with_capacity(len + 1024);
    while text.len() < len {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        match LANGUAGES.get(rng.below(LANGUAGES.len() + 1)) {
            Some(lang) => prose(&mut rng, lang, &mut text),
            None => code(&mut rng, &mut text),
        }
    }
    let mut cut = len;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(cut);
    bytes.resize(len, b'\n');
    bytes
}

/// Uniform draws from ChaCha8 (modulo: the bias for lists this short is below 2⁻⁵⁰).
struct Draw(ChaCha8Rng);

impl Draw {
    /// Uniform in `0..n` (`n ≥ 1`).
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One language's word lists and templates. In a template, `{S}` is a subject, `{V}` a verb,
/// `{O}` an object and `{P}` a place or time; in an object, `{N}` is a number.
struct Language {
    subjects: &'static [&'static str],
    verbs: &'static [&'static str],
    objects: &'static [&'static str],
    places: &'static [&'static str],
    templates: &'static [&'static str],
    /// Between sentences of a paragraph.
    space: &'static str,
}

static LANGUAGES: [Language; 8] = [
    ENGLISH, FRENCH, SPANISH, GERMAN, SWAHILI, HINDI, ARABIC, CHINESE,
];

/// Appends a document of `lang` to `out`.
fn prose(rng: &mut Draw, lang: &Language, out: &mut String) {
    let paragraphs = rng.between(1, 3);
    for p in 0..paragraphs {
        if p > 0 {
            out.push('\n');
        }
        let sentences = rng.between(2, 5);
        for s in 0..sentences {
            if s > 0 {
                out.push_str(lang.space);
            }
            let template = rng.pick(lang.templates);
            let sentence = expand(template, |key| match key {
                "S" => Some(rng.pick(lang.subjects).to_string()),
                "V" => Some(rng.pick(lang.verbs).to_string()),
                "P" => Some(rng.pick(lang.places).to_string()),
                "O" => {
                    let object = rng.pick(lang.objects);
                    Some(expand(object, |k| {
                        (k == "N").then(|| rng.between(2, 999).to_string())
                    }))
                }
                _ => None,
            });
            push_capitalized(out, &sentence);
        }
    }
}

/// Appends `sentence` with its first letter in upper case (for the scripts that have case),
/// after any opening punctuation such as `¿`.
fn push_capitalized(out: &mut String, sentence: &str) {
    let mut done = false;
    for c in sentence.chars() {
        if !done && c.is_alphabetic() {
            out.extend(c.to_uppercase());
            done = true;
        } else {
            out.push(c);
        }
    }
}

/// Replaces each `{KEY}` (one to four upper-case ASCII letters) for which `fill` gives a value;
/// every other brace is kept as it is (so code templates can hold `{` and `{}`).
fn expand(template: &str, mut fill: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let key_len = after.find('}').filter(|&n| {
            (1..=4).contains(&n) && after[..n].bytes().all(|b| b.is_ascii_uppercase())
        });
        match key_len.and_then(|n| fill(&after[..n]).map(|v| (n, v))) {
            Some((n, value)) => {
                out.push_str(&value);
                rest = &after[n + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

const VARIABLES: &[&str] = &[
    "count", "total", "price", "weight", "left", "right", "step", "size", "days", "rate",
];

const DOCS: &[&str] = &[
    "Return the adjusted total.",
    "Combine two measurements.",
    "Compute the value for the next day.",
    "Keep the result within the limit.",
];

const OPS: &[&str] = &["+", "*", "-", "//"];

const PYTHON: &[&str] = &[
    "def {F}({A}, {B}):\n    \"\"\"{D}\"\"\"\n    {T} = {A} {OP} {B}\n    if {T} > {N}:\n        return {T} - {N}\n    return {T}\n",
    "def {F}({A}):\n    {T} = 0\n    for i in range({N}):\n        {T} += {A} * i\n    return {T}\n",
    "for i in range({N}):\n    print(\"{F}\", i, i * {M})\n",
];

const RUST: &[&str] = &[
    "/// {D}\nfn {F}({A}: u64, {B}: u64) -> u64 {\n    let {T} = {A} {OP} {B};\n    if {T} > {N} {\n        {T} - {N}\n    } else {\n        {T}\n    }\n}\n",
    "fn {F}({A}: &[u64]) -> u64 {\n    let mut {T} = 0;\n    for x in {A} {\n        {T} += x * {M};\n    }\n    {T}\n}\n",
    "for i in 0..{N} {\n    println!(\"{} {}\", i, i * {M});\n}\n",
];

/// Appends a document of one to three Python or Rust snippets to `out`.
fn code(rng: &mut Draw, out: &mut String) {
    let python = rng.below(2) == 0;
    let templates = if python { PYTHON } else { RUST };
    let snippets = rng.between(1, 3);
    for k in 0..snippets {
        if k > 0 {
            out.push('\n');
        }
        let a = rng.pick(VARIABLES);
        let b = rng.pick(VARIABLES);
        let b = if a == b { "other" } else { b };
        let t = if a == "total" || b == "total" {
            "result"
        } else {
            "total"
        };
        let template = rng.pick(templates);
        // Rust has no `//` operator; use `/` there.
        let op = match rng.pick(OPS) {
            "//" if !python => "/",
            op => op,
        };
        let snippet = expand(template, |key| match key {
            "F" => Some(rng.pick(FUNCTION_NAMES).to_string()),
            "A" => Some(a.to_string()),
            "B" => Some(b.to_string()),
            "T" => Some(t.to_string()),
            "D" => Some(rng.pick(DOCS).to_string()),
            "OP" => Some(op.to_string()),
            "N" => Some(rng.between(2, 100).to_string()),
            "M" => Some(rng.between(2, 9).to_string()),
            _ => None,
        });
        out.push_str(&snippet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_deterministic_exact_in_length_and_utf8() {
        for len in [0, 1, 7, 1000, 65_536] {
            let a = generate(3, len);
            assert_eq!(a.len(), len);
            assert_eq!(a, generate(3, len));
            assert!(std::str::from_utf8(&a).is_ok(), "len {len}");
        }
        assert_ne!(generate(3, 4096), generate(4, 4096));
        // A longer request extends a shorter one (up to the cut at its end).
        let long = generate(9, 10_000);
        let short = generate(9, 5_000);
        assert_eq!(short[..4_000], long[..4_000]);
    }

    /// The first bytes of seed 0 are pinned, so a change to the generator is a decision.
    #[test]
    fn the_output_is_pinned() {
        let text = String::from_utf8(generate(0, 120)).unwrap();
        assert_eq!(text, PINNED);
    }

    const PINNED: &str = "وجد جاري حديقة المدرسة بعد المطر الطويل. عد الصياد العجوز خريطة قد";

    #[test]
    fn every_language_and_script_appears() {
        let text = String::from_utf8(generate(1, 1 << 16)).unwrap();
        let has = |f: fn(char) -> bool| text.chars().any(f);
        assert!(
            has(|c| ('\u{0900}'..='\u{097F}').contains(&c)),
            "Devanagari"
        );
        assert!(has(|c| ('\u{0600}'..='\u{06FF}').contains(&c)), "Arabic");
        assert!(has(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c)), "CJK");
        for needle in [
            "The ", "Le ", "El ", "Der ", "Mtoto", "def ", "fn ", "ने", "。", "¿", "é", "ß",
        ] {
            assert!(text.contains(needle), "{needle:?} missing");
        }
        // Documents are separated by blank lines, and there are many of them.
        assert!(text.matches("\n\n").count() > 50);
        // Several scripts make it multi-byte UTF-8 text, but mostly ASCII.
        let ascii = text.bytes().filter(u8::is_ascii).count() as f64 / text.len() as f64;
        assert!((0.4..0.95).contains(&ascii), "ascii share {ascii}");
        // The unexpanded placeholders never leak.
        for key in ["{S}", "{V}", "{O}", "{P}", "{N}", "{F}", "{OP}"] {
            assert!(!text.contains(key), "{key} left in the text");
        }
    }

    #[test]
    fn expand_keeps_other_braces() {
        let out = expand("fn {F}() {\n    println!(\"{}\", {X});\n}", |k| {
            (k == "F").then(|| "go".to_string())
        });
        assert_eq!(out, "fn go() {\n    println!(\"{}\", {X});\n}");
    }
}
