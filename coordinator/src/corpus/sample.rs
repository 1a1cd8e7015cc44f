//! A generator of multilingual sample sources, for tests, the bench and trying the pipeline
//! (`canopy-coordinator corpus sample DIR`).
//!
//! Five governed sources in five languages (English, French, Spanish, German as `.txt` books,
//! Hindi in Devanagari), seeded, with planted problems: near-duplicates (word edits, sentence
//! swaps, appended boilerplate), exact duplicates (verbatim, and differing only in case and
//! spacing), low-quality documents (word repetition, symbol spam, character runs, too short),
//! malformed records (bad JSON, no `text`, a non-UTF-8 file), an opt-out list (by URL pattern,
//! id and text hash), and optionally a source without a license ([`UNLICENSED`]). Documents
//! are real text: sentences of the Universal Declaration of Human Rights in each language
//! (`canopy_text::udhr`), drawn in a seeded order. Only [`near_duplicate_documents`], which
//! needs many distinct documents with a known duplicate structure, uses synthetic words.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{CorpusBuildError, Result};

/// The name of the source written without a license when asked.
pub const UNLICENSED: &str = "scrape-misc";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOptions {
    /// The seed.
    pub seed: u64,
    /// Original documents per source (planted ones come on top).
    pub documents_per_source: usize,
    /// Also write a source whose `source.toml` has no license.
    pub unlicensed_source: bool,
}

impl SampleOptions {
    /// A small sample (60 originals per source).
    pub fn small(seed: u64) -> Self {
        Self {
            seed,
            documents_per_source: 60,
            unlicensed_source: false,
        }
    }
}

/// What was written, for tests to check the build against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleTruth {
    /// Input records per source (documents and malformed records).
    pub records: BTreeMap<String, u64>,
    /// `(source, id)` of documents an opt-out request targets.
    pub opted_out: Vec<(String, String)>,
}

struct Lang {
    tag: &'static str,
    footer: &'static str,
}

const EN: Lang = Lang {
    tag: "en",
    footer: "Subscribe to our newsletter for weekly updates and share this page with your friends and colleagues today.",
};
const FR: Lang = Lang {
    tag: "fr",
    footer: "Abonnez-vous à notre lettre d'information pour recevoir chaque semaine nos meilleurs articles et nos analyses.",
};
const ES: Lang = Lang {
    tag: "es",
    footer: "Este mensaje fue publicado en el foro comunitario y puede ser editado por los moderadores en cualquier momento.",
};
const DE: Lang = Lang {
    tag: "de",
    footer: "Dieses Werk ist gemeinfrei und wurde von freiwilligen Helfern sorgfältig korrekturgelesen und digitalisiert.",
};
const HI: Lang = Lang {
    tag: "hi",
    footer: "यह लेख समुदाय के सदस्यों द्वारा लिखा गया है और इसे स्वतंत्र रूप से साझा किया जा सकता है।",
};

/// Syllables of the synthetic English-like words of [`near_duplicate_documents`].
const SYLLABLES: &[&str] = &[
    "the", "an", "ro", "mi", "ter", "son", "ly", "ing", "ba", "ke", "wor", "pla", "ne", "sto",
    "ci", "vel",
];

type Doc = Vec<Vec<String>>;

/// `n` synthetic words of one to three [`SYLLABLES`].
fn vocabulary(r: &mut ChaCha8Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let parts = r.random_range(1..=3);
            (0..parts)
                .map(|_| SYLLABLES[r.random_range(0..SYLLABLES.len())])
                .collect()
        })
        .collect()
}

/// The sentences (as words, end punctuation removed) of the Universal Declaration of Human
/// Rights in `lang`, headings left out.
fn real_sentences(lang: &Lang) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for doc in canopy_text::udhr::documents() {
        if doc.language != lang.tag {
            continue;
        }
        // The first line of a section is its heading.
        for paragraph in doc.text.lines().skip(1) {
            for sentence in paragraph.split_inclusive(['.', '।', ';']) {
                let words: Vec<String> = sentence
                    .trim_end_matches(['.', '।', ';'])
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if words.len() >= 4 {
                    out.push(words);
                }
            }
        }
    }
    out
}

/// The distinct words of `sentences`, most frequent first (ties in first-seen order).
fn real_vocabulary(sentences: &[Vec<String>]) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for w in sentences.iter().flatten() {
        let i = *index.entry(w.clone()).or_insert_with(|| {
            counts.push((w.clone(), 0));
            counts.len() - 1
        });
        counts[i].1 += 1;
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.into_iter().map(|(w, _)| w).collect()
}

/// A document of 6 to 13 real sentences drawn from `sentences`.
fn real_document(r: &mut ChaCha8Rng, sentences: &[Vec<String>]) -> Doc {
    (0..r.random_range(6..14))
        .map(|_| sentences[r.random_range(0..sentences.len())].clone())
        .collect()
}

fn word(r: &mut ChaCha8Rng, vocab: &[String]) -> String {
    // Skewed towards the head of the vocabulary, like natural word frequencies.
    let u: f64 = r.random();
    vocab[((u * u) * vocab.len() as f64) as usize % vocab.len()].clone()
}

fn document(r: &mut ChaCha8Rng, vocab: &[String]) -> Doc {
    (0..r.random_range(6..14))
        .map(|_| (0..r.random_range(8..18)).map(|_| word(r, vocab)).collect())
        .collect()
}

fn render(doc: &Doc) -> String {
    doc.iter()
        .map(|s| {
            let mut t = s.join(" ");
            if let Some(first) = t.chars().next() {
                let upper: String = first.to_uppercase().collect();
                t.replace_range(..first.len_utf8(), &upper);
            }
            t.push('.');
            t
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `edits` words replaced by others from the vocabulary.
fn edited(r: &mut ChaCha8Rng, doc: &Doc, vocab: &[String], edits: usize) -> Doc {
    let mut d = doc.clone();
    for _ in 0..edits {
        let s = r.random_range(0..d.len());
        let w = r.random_range(0..d[s].len());
        d[s][w] = format!("{}x", word(r, vocab));
    }
    d
}

fn swapped(r: &mut ChaCha8Rng, doc: &Doc) -> Doc {
    let mut d = doc.clone();
    let a = r.random_range(0..d.len());
    let b = r.random_range(0..d.len());
    d.swap(a, b);
    d
}

/// A planted variant of `doc`, of graded similarity: word edits (1 to 8), a sentence swap,
/// a swap with edits, or the document with a boilerplate footer.
fn variant(r: &mut ChaCha8Rng, doc: &Doc, vocab: &[String], footer: &str) -> String {
    match r.random_range(0..4) {
        0 | 1 => {
            let n = r.random_range(1..=8);
            render(&edited(r, doc, vocab, n))
        }
        2 => {
            let s = swapped(r, doc);
            let n = r.random_range(0..=2);
            render(&edited(r, &s, vocab, n))
        }
        _ => format!("{} {footer}", render(doc)),
    }
}

/// Documents for measuring near-duplicate detection: `originals` English documents, each with
/// 0 to 3 planted variants of graded similarity, and unrelated documents sharing boilerplate.
pub fn near_duplicate_documents(seed: u64, originals: usize) -> Vec<String> {
    near_duplicate_groups(seed, originals)
        .into_iter()
        .flatten()
        .collect()
}

/// [`near_duplicate_documents`] grouped: each original with its planted variants, and each
/// unrelated document alone. Documents of different groups are far apart; within a group,
/// the variants' similarity to the original is graded across the usual 0.8 threshold.
pub fn near_duplicate_groups(seed: u64, originals: usize) -> Vec<Vec<String>> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let vocab = vocabulary(&mut r, 4000);
    let mut out = Vec::new();
    for _ in 0..originals {
        let base = document(&mut r, &vocab);
        let mut group = vec![render(&base)];
        for _ in 0..r.random_range(0..=3) {
            group.push(variant(&mut r, &base, &vocab, EN.footer));
        }
        out.push(group);
        if r.random_bool(0.2) {
            out.push(vec![format!(
                "{} {}",
                render(&document(&mut r, &vocab)),
                EN.footer
            )]);
        }
    }
    out
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CorpusBuildError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, bytes).map_err(|source| CorpusBuildError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn source_toml(name: &str, lang: &str, license: Option<&str>, consent: &str) -> String {
    let license = license.map_or(String::new(), |l| format!("license = \"{l}\"\n"));
    format!(
        "name = \"{name}\"\nlanguages = [\"{lang}\"]\n{license}\
         provenance_url = \"https://data.example.org/{name}\"\nconsent_basis = \"{consent}\"\n\
         steward_contact = \"stewards+{name}@example.org\"\n"
    )
}

/// The texts of one source: originals, planted variants and duplicates, and junk.
fn texts(r: &mut ChaCha8Rng, lang: &Lang, n: usize) -> Vec<String> {
    let sentences = real_sentences(lang);
    let vocab = real_vocabulary(&sentences);
    let mut out = Vec::new();
    let mut bases = Vec::new();
    for i in 0..n {
        let base = real_document(r, &sentences);
        out.push(render(&base));
        if i % 4 == 0 {
            out.push(variant(r, &base, &vocab, lang.footer));
        }
        bases.push(base);
    }
    // Exact duplicates: verbatim, and in other case and spacing.
    out.push(render(&bases[1]));
    out.push(render(&bases[2]).to_uppercase().replace(' ', "  \n"));
    // Junk the filters catch.
    let spam = (0..60)
        .map(|_| vocab[0].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    out.push(format!("{} {spam}", render(&bases[3][..1].to_vec())));
    out.push(format!(
        "{} {}",
        render(&bases[4]),
        "$!#@%&*()+= ".repeat(60)
    ));
    out.push(format!("{} {}", render(&bases[5]), "-".repeat(2000)));
    out.push(vocab[7].clone());
    out
}

/// Writes the sample sources under `dir` (and `dir/optout.txt`).
pub fn write_sample(dir: &Path, options: &SampleOptions) -> Result<SampleTruth> {
    let mut r = ChaCha8Rng::seed_from_u64(options.seed);
    let n = options.documents_per_source.max(8);
    let mut truth = SampleTruth::default();
    let mut optout = String::from("# Opt-out requests, one per line.\n");

    // JSONL sources.
    for (name, lang, license, consent) in [
        ("wiki-en", &EN, "CC-BY-SA-4.0", "open_license"),
        ("news-fr", &FR, "CC-BY-4.0", "open_license"),
        ("forum-es", &ES, "CC0-1.0", "explicit_consent"),
        ("web-hi", &HI, "CC-BY-4.0", "open_license"),
    ] {
        let d = dir.join(name);
        write(
            &d.join("source.toml"),
            source_toml(name, lang.tag, Some(license), consent).as_bytes(),
        )?;
        let mut lines = Vec::new();
        for (i, text) in texts(&mut r, lang, n).into_iter().enumerate() {
            let mut obj = serde_json::Map::new();
            obj.insert("text".into(), text.into());
            match name {
                "news-fr" => {
                    let section = if i % 10 == 3 { "private" } else { "public" };
                    let url = format!("https://news.example.fr/{section}/{i}");
                    obj.insert("url".into(), url.into());
                    if section == "private" {
                        truth
                            .opted_out
                            .push((name.into(), format!("part-000.jsonl:{}", i + 1)));
                    }
                }
                "forum-es" => {
                    obj.insert("id".into(), (1000 + i).into());
                    obj.insert("lang".into(), "es".into());
                    obj.insert("thread".into(), (i / 5).into());
                }
                _ => {
                    obj.insert("id".into(), format!("{}-{i}", lang.tag).into());
                }
            }
            lines.push(serde_json::Value::Object(obj).to_string());
        }
        if name == "wiki-en" {
            lines.push("{\"id\": \"en-bad\", \"text\": 5}".into());
            lines.push("{not json".into());
            optout.push_str("id:wiki-en/en-6\n");
            truth.opted_out.push((name.into(), "en-6".into()));
        }
        if name == "forum-es" {
            let target: serde_json::Value =
                serde_json::from_str(&lines[9]).map_err(|source| CorpusBuildError::Json {
                    what: "a sample line",
                    source,
                })?;
            let text = target["text"].as_str().unwrap_or_default();
            optout.push_str(&format!(
                "hash:{}\n",
                canopy_protocol::corpus::text_hash(text)
            ));
            truth
                .opted_out
                .push((name.into(), target["id"].to_string()));
        }
        truth.records.insert(name.into(), lines.len() as u64);
        let mut body = lines.join("\n");
        body.push('\n');
        write(&d.join("part-000.jsonl"), body.as_bytes())?;
    }
    optout.push_str("url:https://news.example.fr/private/*\n");

    // Books as .txt files, one document per file.
    let d = dir.join("books-de");
    write(
        &d.join("source.toml"),
        source_toml("books-de", "de", Some("public-domain"), "public_domain").as_bytes(),
    )?;
    let sentences = real_sentences(&DE);
    let vocab = real_vocabulary(&sentences);
    let mut books = 0;
    for i in 0..n / 2 {
        let mut book = real_document(&mut r, &sentences);
        book.extend(real_document(&mut r, &sentences));
        write(
            &d.join(format!("book-{i:03}.txt")),
            format!("{}\n\n{}\n", render(&book), DE.footer).as_bytes(),
        )?;
        books += 1;
        if i % 5 == 0 {
            let edition = edited(&mut r, &book, &vocab, 2);
            write(
                &d.join(format!("book-{i:03}-edition2.txt")),
                format!("{}\n\n{}\n", render(&edition), DE.footer).as_bytes(),
            )?;
            books += 1;
        }
    }
    write(&d.join("broken.txt"), &[0x66, 0x6f, 0xff, 0xfe, 0x6f])?;
    books += 1;
    truth.records.insert("books-de".into(), books);

    if options.unlicensed_source {
        let d = dir.join(UNLICENSED);
        write(
            &d.join("source.toml"),
            source_toml(UNLICENSED, "en", None, "research_exception").as_bytes(),
        )?;
        write(
            &d.join("pages.jsonl"),
            b"{\"text\": \"scraped without a license\"}\n",
        )?;
    }
    write(&dir.join(super::optout::FILE_NAME), optout.as_bytes())?;
    Ok(truth)
}
