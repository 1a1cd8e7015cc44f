//! Hugging Face cards: the `README.md` with YAML metadata that describes a model export or a
//! dataset, written as the Hub and `huggingface_hub` read them.

use std::fmt::Write as _;

/// One metadata field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    /// A string.
    Text(String),
    /// A list of strings.
    List(Vec<String>),
}

/// The YAML block that opens a card, `---` to `---`. Strings are written double-quoted
/// (JSON string syntax, which YAML reads), so no value can break the block.
pub fn front_matter(entries: &[(&str, Meta)]) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut y = String::from("---\n");
    for (key, value) in entries {
        match value {
            Meta::Text(s) => {
                let _ = writeln!(y, "{key}: {}", quote(s));
            }
            Meta::List(items) if items.is_empty() => {}
            Meta::List(items) => {
                let _ = writeln!(y, "{key}:");
                for item in items {
                    let _ = writeln!(y, "- {}", quote(item));
                }
            }
        }
    }
    y.push_str("---\n\n");
    y
}

/// A contributor group in a model card: organisation or country, with its share.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The organisation or country.
    pub name: String,
    /// Nodes in it.
    pub nodes: u64,
    /// Training tokens of its accepted updates.
    pub tokens: u64,
}

/// A data source a model was trained on.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The source's name.
    pub name: String,
    /// Its licence.
    pub license: String,
    /// Where it comes from.
    pub provenance: String,
    /// Bytes of text per language.
    pub bytes_per_language: Vec<(String, u64)>,
}

/// What a model card says about an export.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelCard {
    /// The model's name (the project's).
    pub name: String,
    /// Licence of the weights (an SPDX id, lowercase as the Hub writes them).
    pub license: String,
    /// Architecture in words, such as "BLOOM (ALiBi), hidden 128, 4 layers, 4 heads".
    pub architecture: String,
    /// Parameters.
    pub parameters: u64,
    /// Longest context in tokens.
    pub context: usize,
    /// The tokenizer in words.
    pub tokenizer: String,
    /// The training data.
    pub sources: Vec<Source>,
    /// The data card's figures, in words (documents kept and dropped, dedup, personal data),
    /// when the data came from a corpus build.
    pub data_card: Vec<String>,
    /// How it was trained, in words (rounds, inner steps, DiLoCo settings).
    pub training: String,
    /// Outer rounds run.
    pub rounds: u64,
    /// Training tokens of the accepted updates.
    pub tokens: u64,
    /// Held-out loss in nats per token.
    pub eval_loss: Option<f64>,
    /// Held-out loss in bits per byte.
    pub bits_per_byte: Option<f64>,
    /// Other figures on the same held-out text, in bits per byte: (what, value).
    pub baselines: Vec<(String, f64)>,
    /// Nodes whose updates were accepted.
    pub nodes: u64,
    /// Contributions by organisation.
    pub organisations: Vec<Contribution>,
    /// Contributions by country.
    pub countries: Vec<Contribution>,
    /// Greedy samples: (prompt, continuation).
    pub samples: Vec<(String, String)>,
    /// What the model is not, in sentences.
    pub limitations: Vec<String>,
}

impl ModelCard {
    /// The card as `README.md`.
    pub fn to_markdown(&self) -> String {
        let mut languages: Vec<String> = Vec::new();
        for s in &self.sources {
            for (lang, _) in &s.bytes_per_language {
                if !languages.contains(lang) {
                    languages.push(lang.clone());
                }
            }
        }
        let mut m = front_matter(&[
            ("license", Meta::Text(self.license.clone())),
            ("language", Meta::List(languages)),
            ("library_name", Meta::Text("transformers".into())),
            ("pipeline_tag", Meta::Text("text-generation".into())),
            (
                "tags",
                Meta::List(vec!["bloom".into(), "canopy".into(), "diloco".into()]),
            ),
            (
                "datasets",
                Meta::List(self.sources.iter().map(|s| s.name.clone()).collect()),
            ),
            ("metrics", Meta::List(vec!["bits_per_byte".into()])),
        ]);
        let _ = writeln!(m, "# {}\n", self.name);
        let _ = writeln!(
            m,
            "A causal language model trained with Canopy, a volunteer compute network, by \
             DiLoCo rounds across the nodes listed below.\n"
        );
        let _ = writeln!(m, "## Model\n");
        let _ = writeln!(m, "- Architecture: {}", self.architecture);
        let _ = writeln!(m, "- Parameters: {}", self.parameters);
        let _ = writeln!(m, "- Context: {} tokens", self.context);
        let _ = writeln!(m, "- Tokenizer: {}", self.tokenizer);
        let _ = writeln!(
            m,
            "- Load it with `AutoTokenizer.from_pretrained(dir)` and \
             `BloomForCausalLM.from_pretrained(dir)`, or `pipeline(\"text-generation\", model=dir)`.\n"
        );
        let _ = writeln!(m, "## Training data\n");
        for s in &self.sources {
            let total: u64 = s.bytes_per_language.iter().map(|(_, b)| b).sum();
            let _ = writeln!(
                m,
                "- **{}** ({} bytes): licence {}; {}",
                s.name, total, s.license, s.provenance
            );
            let _ = writeln!(m, "\n| language | bytes |\n| --- | ---: |");
            for (lang, bytes) in &s.bytes_per_language {
                let _ = writeln!(m, "| {lang} | {bytes} |");
            }
            m.push('\n');
        }
        for line in &self.data_card {
            let _ = writeln!(m, "- {line}");
        }
        if !self.data_card.is_empty() {
            m.push('\n');
        }
        let _ = writeln!(m, "## Training\n");
        let _ = writeln!(m, "{}\n", self.training);
        let _ = writeln!(m, "- Rounds: {}", self.rounds);
        let _ = writeln!(m, "- Training tokens (accepted updates): {}", self.tokens);
        if let Some(loss) = self.eval_loss {
            let _ = writeln!(m, "- Held-out loss: {loss:.4} nats per token");
        }
        if let Some(bpb) = self.bits_per_byte {
            let _ = writeln!(m, "- Held-out bits per byte: {bpb:.3}");
        }
        for (what, bpb) in &self.baselines {
            let _ = writeln!(m, "- {what}: {bpb:.3} bits per byte");
        }
        m.push('\n');
        let _ = writeln!(m, "## Contributors\n");
        let _ = writeln!(m, "{} nodes had updates accepted.\n", self.nodes);
        for (title, rows) in [
            ("organisation", &self.organisations),
            ("country", &self.countries),
        ] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(m, "| {title} | nodes | tokens |\n| --- | ---: | ---: |");
            for c in rows {
                let name = if c.name.is_empty() {
                    "(none given)"
                } else {
                    &c.name
                };
                let _ = writeln!(m, "| {} | {} | {} |", name, c.nodes, c.tokens);
            }
            m.push('\n');
        }
        if !self.samples.is_empty() {
            let _ = writeln!(m, "## Samples\n");
            let _ = writeln!(m, "Greedy continuations (prompt in bold):\n");
            for (prompt, continuation) in &self.samples {
                let one_line = continuation.replace('\n', " ⏎ ");
                let _ = writeln!(m, "- **{prompt}**{one_line}");
            }
            m.push('\n');
        }
        let _ = writeln!(m, "## Limitations\n");
        for l in &self.limitations {
            let _ = writeln!(m, "- {l}");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_matter_quotes_every_string() {
        let y = front_matter(&[
            ("license", Meta::Text("apache-2.0".into())),
            ("language", Meta::List(vec!["en".into(), "zh".into()])),
            ("pretty_name", Meta::Text("a: \"b\"\n---".into())),
            ("tags", Meta::List(vec![])),
        ]);
        assert_eq!(
            y,
            "---\nlicense: \"apache-2.0\"\nlanguage:\n- \"en\"\n- \"zh\"\npretty_name: \"a: \\\"b\\\"\\n---\"\n---\n\n"
        );
    }

    #[test]
    fn a_model_card_names_languages_figures_contributors_and_limits() {
        let card = ModelCard {
            name: "demo".into(),
            license: "apache-2.0".into(),
            architecture: "BLOOM".into(),
            parameters: 1000,
            context: 128,
            tokenizer: "byte-level".into(),
            sources: vec![Source {
                name: "udhr-24".into(),
                license: "public-domain".into(),
                provenance: "UN".into(),
                bytes_per_language: vec![("en".into(), 10), ("fr".into(), 12)],
            }],
            rounds: 3,
            tokens: 999,
            eval_loss: Some(1.5),
            bits_per_byte: Some(2.164),
            baselines: vec![("unigram byte model".into(), 4.9)],
            nodes: 2,
            organisations: vec![Contribution {
                name: "Lab".into(),
                nodes: 2,
                tokens: 999,
            }],
            samples: vec![("The ".into(), "right\nto".into())],
            limitations: vec!["Small.".into()],
            ..ModelCard::default()
        };
        let md = card.to_markdown();
        assert!(md.starts_with("---\nlicense: \"apache-2.0\"\nlanguage:\n- \"en\"\n- \"fr\"\n"));
        for part in [
            "datasets:\n- \"udhr-24\"",
            "pipeline_tag: \"text-generation\"",
            "Held-out bits per byte: 2.164",
            "unigram byte model: 4.900 bits per byte",
            "| Lab | 2 | 999 |",
            "**The **right ⏎ to",
            "- Small.",
        ] {
            assert!(md.contains(part), "{part}\n{md}");
        }
    }
}
