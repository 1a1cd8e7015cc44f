//! The whole build on one machine: plan, compute on a local backend, decide, write. This is
//! `canopy-coordinator corpus build`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use canopy_shaders::{Backend, Runtime};
use serde::Serialize;

use super::output::{self, OutputSummary};
use super::{CorpusConfig, Result, compute, decide, plan};

/// What to build from and where to.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The sources directory.
    pub sources: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// The opt-out list (default: `sources/optout.txt` when present).
    pub optout: Option<PathBuf>,
    /// The settings file (default: `sources/corpus.toml` when present, else the defaults).
    pub config: Option<PathBuf>,
}

/// Progress of a build, for a caller's progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Planned: sources read, documents to compute over, chunks, records dropped so far.
    Planned {
        /// Sources.
        sources: usize,
        /// Documents in chunks.
        documents: usize,
        /// Chunks.
        chunks: usize,
        /// Records dropped while planning.
        dropped: usize,
    },
    /// A chunk was computed.
    Computed {
        /// Chunks done.
        done: usize,
        /// Chunks in all.
        total: usize,
    },
}

/// Seconds spent per stage (in the summary only, never in the outputs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageSeconds {
    /// Plan.
    pub plan: f64,
    /// Compute.
    pub compute: f64,
    /// Decide.
    pub decide: f64,
    /// Write.
    pub write: f64,
}

/// The summary of a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSummary {
    /// Where the compute stage ran.
    pub adapter: String,
    /// Sources.
    pub sources: usize,
    /// Corpus chunks.
    pub chunks: usize,
    /// What was written.
    #[serde(flatten)]
    pub outputs: OutputSummary,
    /// The output directory.
    pub out: PathBuf,
    /// Time per stage.
    pub seconds: StageSeconds,
}

/// The settings: `explicit`, else `sources/corpus.toml` when it exists, else the defaults.
pub fn load_config(sources: &Path, explicit: Option<&Path>) -> Result<CorpusConfig> {
    let default = sources.join(CorpusConfig::FILE_NAME);
    match explicit {
        Some(path) => CorpusConfig::load(path),
        None if default.is_file() => CorpusConfig::load(&default),
        None => Ok(CorpusConfig::default()),
    }
}

/// Runs the build with the compute stage on `backend`.
pub fn build<B: Backend>(
    backend: &B,
    options: &BuildOptions,
    mut progress: impl FnMut(Progress),
) -> Result<BuildSummary> {
    let mut seconds = StageSeconds::default();
    let t = Instant::now();
    let config = load_config(&options.sources, options.config.as_deref())?;
    let plan = plan::plan(&options.sources, options.optout.as_deref(), &config)?;
    seconds.plan = t.elapsed().as_secs_f64();
    progress(Progress::Planned {
        sources: plan.sources.len(),
        documents: plan.documents.len(),
        chunks: plan.chunks.len(),
        dropped: plan.dropped.len(),
    });
    let t = Instant::now();
    let results = compute::compute_local(backend, &plan, |done, total| {
        progress(Progress::Computed { done, total })
    })?;
    seconds.compute = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let decisions = decide::decide(&plan, &results)?;
    seconds.decide = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let outputs = output::write_outputs(&plan, &results, &decisions, &options.out)?;
    seconds.write = t.elapsed().as_secs_f64();
    Ok(BuildSummary {
        adapter: backend.report().to_string(),
        sources: plan.sources.len(),
        chunks: plan.chunks.len(),
        outputs,
        out: options.out.clone(),
        seconds,
    })
}

/// [`build`] on whichever backend `runtime` holds.
pub fn build_on(
    runtime: &Runtime,
    options: &BuildOptions,
    progress: impl FnMut(Progress),
) -> Result<BuildSummary> {
    match runtime {
        Runtime::Gpu(gpu) => build(gpu.as_ref(), options, progress),
        Runtime::Cpu(cpu) => build(cpu, options, progress),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use canopy_shaders::Cpu;

    use super::*;
    use crate::corpus::parquet::{self, StringTable};
    use crate::corpus::sample::{self, SampleOptions};

    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    /// Writes source `name` (labelled English, openly licensed) under `sources`, its `texts`
    /// as `data.jsonl` with ids `d0`, `d1`, …
    fn write_source(sources: &Path, name: &str, texts: &[String]) {
        write_source_in(sources, name, "en", texts);
    }

    /// [`write_source`] for a source labelled `language`.
    fn write_source_in(sources: &Path, name: &str, language: &str, texts: &[String]) {
        let src = sources.join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("source.toml"),
            format!(
                "name = \"{name}\"\nlanguages = [\"{language}\"]\nlicense = \"CC-BY-4.0\"\n\
                 provenance_url = \"https://data.example.org/{name}\"\n\
                 consent_basis = \"open_license\"\nsteward_contact = \"s@example.org\"\n"
            ),
        )
        .unwrap();
        let jsonl: String = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "{}\n",
                    serde_json::json!({"id": format!("d{i}"), "text": t})
                )
            })
            .collect();
        std::fs::write(src.join("data.jsonl"), jsonl).unwrap();
    }

    /// Builds `sources` on the CPU into `out` beside it, after writing `corpus_toml` as its
    /// `corpus.toml` when given; returns the output directory.
    fn build_sources(sources: &Path, corpus_toml: Option<&str>) -> PathBuf {
        if let Some(toml) = corpus_toml {
            std::fs::write(sources.join("corpus.toml"), toml).unwrap();
        }
        let options = BuildOptions {
            sources: sources.to_path_buf(),
            out: sources.with_file_name("out"),
            ..BuildOptions::default()
        };
        build(&Cpu::new(), &options, |_| {}).unwrap();
        options.out
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_build_accounts_for_every_document_honours_opt_outs_and_repeats_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let truth = sample::write_sample(&sources, &SampleOptions::small(9)).unwrap();
        let run = |out: &str| {
            let options = BuildOptions {
                sources: sources.clone(),
                out: tmp.path().join(out),
                ..BuildOptions::default()
            };
            build(&Cpu::new(), &options, |_| {}).unwrap()
        };
        let summary = run("a");
        let out = tmp.path().join("a");
        let o = &summary.outputs;
        assert_eq!(o.input_documents, o.kept_documents + o.dropped_documents);
        let kept = lines(&out.join("kept.jsonl"));
        let dropped = lines(&out.join("dropped.jsonl"));
        assert_eq!(kept.len() as u64, o.kept_documents);
        assert_eq!(dropped.len() as u64, o.dropped_documents);
        // Per source, from the files themselves.
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("datacard.json")).unwrap()).unwrap();
        // The Hugging Face dataset card: metadata naming every language and source, then
        // the same Markdown as datacard.md.
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        let md = std::fs::read_to_string(out.join("datacard.md")).unwrap();
        let (meta, body) = readme
            .strip_prefix("---\n")
            .unwrap()
            .split_once("---\n\n")
            .unwrap();
        assert_eq!(body, md);
        assert!(
            meta.contains("task_categories:\n- \"text-generation\""),
            "{meta}"
        );
        for lang in card["languages"].as_object().unwrap().keys() {
            assert!(meta.contains(&format!("- \"{lang}\"\n")), "{lang}: {meta}");
        }
        for s in card["sources"].as_array().unwrap() {
            let name = s["governance"]["name"].as_str().unwrap();
            assert!(meta.contains(&format!("- \"{name}\"\n")), "{name}: {meta}");
        }
        for s in card["sources"].as_array().unwrap() {
            let name = s["governance"]["name"].as_str().unwrap();
            let k = kept.iter().filter(|l| l["source"] == name).count() as u64;
            let d = dropped.iter().filter(|l| l["source"] == name).count() as u64;
            assert_eq!(s["input"]["documents"].as_u64().unwrap(), k + d, "{name}");
            assert_eq!(
                truth.records.get(name).copied().unwrap_or(0),
                k + d,
                "{name}: every record written is counted"
            );
        }
        // Opt-outs: every targeted document is dropped with reason opt_out, none kept.
        for (source, id) in &truth.opted_out {
            assert!(
                dropped.iter().any(|l| l["source"] == source.as_str()
                    && l["id"] == id.as_str()
                    && l["reason"] == "opt_out"),
                "{source}/{id} is dropped as opt_out"
            );
            assert!(
                !kept
                    .iter()
                    .any(|l| l["source"] == source.as_str() && l["id"] == id.as_str())
            );
        }
        assert!(
            card["opt_outs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["removed"].as_u64().unwrap() > 0)
        );
        // Planted exact and near duplicates are dropped, naming what was kept instead.
        for reason in [
            "exact_duplicate",
            "near_duplicate",
            "word_repetition",
            "special_characters",
            "char_repetition",
            "too_short",
            "malformed",
        ] {
            assert!(
                o.dropped_by_reason.get(reason).copied().unwrap_or(0) > 0,
                "{reason}: {:?}",
                o.dropped_by_reason
            );
        }
        for l in dropped
            .iter()
            .filter(|l| l["reason"] == "near_duplicate" || l["reason"] == "exact_duplicate")
        {
            let (id, src) = (&l["kept_instead"], &l["kept_instead_source"]);
            assert!(
                kept.iter().any(|k| &k["id"] == id && &k["source"] == src),
                "{l}"
            );
        }
        // Training reads kept.jsonl: the build writes no token shards of its own.
        assert!(!out.join("shards").exists());
        // The same build again: byte-identical outputs.
        run("b");
        assert_eq!(files(&out), files(&tmp.path().join("b")));
    }

    #[test]
    fn personal_data_is_redacted_in_kept_text_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let body = "the river rose early that spring and the village gathered by the old \
                    mill to watch the water climb the stones";
        let docs = [
            format!("{body}; write to clara.stone@example.org or call +44 20 7946 0958."),
            format!("{body}, and the gauge at 192.168.4.20 reported every hour (030) 1234 5678"),
            format!("{body} while the children counted boats from 1998 2004 2010 onwards"),
        ];
        write_source(&sources, "letters", &docs);
        let run = |out: &str, keep: bool| {
            let config = keep.then(|| {
                let path = tmp.path().join("keep.toml");
                std::fs::write(&path, "pii = \"keep\"\n").unwrap();
                path
            });
            let options = BuildOptions {
                sources: sources.clone(),
                out: tmp.path().join(out),
                config,
                ..BuildOptions::default()
            };
            build(&Cpu::new(), &options, |_| {}).unwrap();
            let out = tmp.path().join(out);
            let kept: Vec<String> = lines(&out.join("kept.jsonl"))
                .iter()
                .map(|l| l["text"].as_str().unwrap().to_string())
                .collect();
            let card: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join("datacard.json")).unwrap()).unwrap();
            (kept, card)
        };
        let (kept, card) = run("redacted", false);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert!(
            kept[0].ends_with("write to PI:EMAIL or call PI:PHONE."),
            "{}",
            kept[0]
        );
        assert!(kept[1].contains("gauge at PI:IP_ADDRESS reported every hour PI:PHONE"));
        assert_eq!(kept[2], docs[2], "years are not phone numbers");
        assert_eq!(
            card["pii"],
            serde_json::json!({"emails": 1, "ip_addresses": 1, "phone_numbers": 2})
        );
        assert_eq!(card["settings"]["pii"], "redact");
        let (kept, card) = run("kept", true);
        assert_eq!(kept, docs, "pii = keep leaves the text as it is");
        assert_eq!(card["pii"]["phone_numbers"], 2, "and still counts it");
    }

    #[test]
    fn mislabelled_documents_are_kept_relabelled_or_dropped_by_their_sources_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let english = "The committee met on Tuesday to discuss the budget for the new library, \
                       and most members agreed that the reading room should open next spring.";
        let french = "Le comité s'est réuni mardi pour discuter du budget de la nouvelle \
                      bibliothèque, et la plupart des membres ont convenu que la salle de \
                      lecture ouvrirait au printemps prochain.";
        // Three sources labelled English, each with one French document among English ones.
        for name in ["kept", "relabelled", "dropped"] {
            // Each source's own wording, so that no document duplicates another source's.
            let en = format!("{english} The {name} archive kept this note for its readers.");
            let fr = format!("{french} Les archives {name} ont gardé cette note.");
            write_source(&sources, name, &[en, fr]);
        }
        std::fs::write(
            sources.join("corpus.toml"),
            "[language_id.sources]\nrelabelled = \"relabel\"\ndropped = \"drop\"\n",
        )
        .unwrap();
        let options = BuildOptions {
            sources: sources.clone(),
            out: tmp.path().join("out"),
            ..BuildOptions::default()
        };
        build(&Cpu::new(), &options, |_| {}).unwrap();
        let out = tmp.path().join("out");
        let kept = lines(&out.join("kept.jsonl"));
        let doc = |source: &str, id: &str| {
            kept.iter()
                .find(|l| l["source"] == source && l["id"] == id)
                .cloned()
        };
        for source in ["kept", "relabelled", "dropped"] {
            let en = doc(source, "d0").expect("the English document is kept");
            assert_eq!(
                (&en["language"], &en["detected_language"]),
                (&"en".into(), &"en".into())
            );
        }
        let fr = doc("kept", "d1").unwrap();
        assert_eq!(
            (&fr["language"], &fr["detected_language"]),
            (&"en".into(), &"fr".into())
        );
        let fr = doc("relabelled", "d1").unwrap();
        assert_eq!(
            (&fr["language"], &fr["detected_language"]),
            (&"fr".into(), &"fr".into())
        );
        assert!(doc("dropped", "d1").is_none());
        let dropped = lines(&out.join("dropped.jsonl"));
        assert!(
            dropped.iter().any(|l| l["source"] == "dropped"
                && l["id"] == "d1"
                && l["reason"] == "language_mismatch"
                && l["detail"] == "labelled \"en\", detected \"fr\""),
            "{dropped:?}"
        );
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("datacard.json")).unwrap()).unwrap();
        assert_eq!(card["detected_languages"]["en"]["documents"], 3);
        assert_eq!(card["detected_languages"]["fr"]["documents"], 2);
        assert_eq!(
            card["languages"]["fr"]["documents"], 1,
            "the relabelled one"
        );

        // A policy for a source that does not exist is a mistake, said as such.
        std::fs::write(
            sources.join("corpus.toml"),
            "[language_id.sources]\nwiki = \"drop\"\n",
        )
        .unwrap();
        let err = build(&Cpu::new(), &options, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"wiki\", which is not a source"), "{err}");
    }

    /// A source in a language the detector does not know (Yoruba here, which it calls
    /// something else with confidence) keeps its documents under a `drop` policy: a detection
    /// says nothing of such a label, and none is recorded.
    #[test]
    fn labels_the_detector_cannot_judge_are_kept_whatever_the_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let texts: Vec<String> = canopy_text::udhr::documents()
            .into_iter()
            .filter(|d| d.language == "yo")
            .map(|d| d.text)
            .collect();
        write_source_in(&sources, "yoruba", "yo", &texts);
        let out = build_sources(&sources, Some("[language_id]\ndefault = \"drop\"\n"));
        let dropped = lines(&out.join("dropped.jsonl"));
        assert!(
            dropped.iter().all(|l| l["reason"] != "language_mismatch"),
            "{dropped:?}"
        );
        let kept = lines(&out.join("kept.jsonl"));
        assert!(kept.len() >= 25, "{} kept", kept.len());
        assert!(
            kept.iter()
                .all(|l| l["language"] == "yo" && l["detected_language"].is_null()),
            "{kept:?}"
        );
    }

    /// ROOTS' flagged-word filter, set in `corpus.toml`: a page dense in flagged words is
    /// dropped with its reason and counted in the data card; prose is kept.
    #[test]
    fn pages_dense_in_flagged_words_are_dropped_when_the_filter_is_set() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let raw: BTreeMap<String, Vec<String>> =
            serde_json::from_str(include_str!("../../data/flagged_words.json")).unwrap();
        let flagged: Vec<&String> = raw["en"].iter().filter(|e| !e.contains(' ')).collect();
        let spam: String = flagged
            .iter()
            .take(12)
            .map(|w| format!("{w} pictures of the day and "))
            .collect();
        let prose = "The committee met on Tuesday to discuss the budget for the new library, \
                     and most members agreed that the reading room should open next spring."
            .to_string();
        write_source(&sources, "web", &[prose, spam]);
        let out = build_sources(&sources, None);
        assert_eq!(lines(&out.join("kept.jsonl")).len(), 2, "off by default");
        std::fs::remove_dir_all(&out).unwrap();
        build_sources(
            &sources,
            Some("[filters.default]\nmax_flagged_word_ratio = 0.05\n"),
        );
        let kept = lines(&out.join("kept.jsonl"));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["id"], "d0");
        let dropped = lines(&out.join("dropped.jsonl"));
        assert!(
            dropped
                .iter()
                .any(|l| l["id"] == "d1" && l["reason"] == "flagged_words"),
            "{dropped:?}"
        );
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("datacard.json")).unwrap()).unwrap();
        assert_eq!(card["dropped_by_reason"]["flagged_words"], 1, "{card}");
    }

    /// Repeated-substring removal, set in `corpus.toml`: a footer shared by documents that
    /// are otherwise different stays only in the first, in `kept.jsonl`,
    /// and the data card says what was cut.
    #[test]
    fn a_repeated_footer_is_cut_from_all_but_the_first_document_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        let footer = " Published by the county archive; copying is allowed with credit given.";
        let bodies = [
            "The committee met on Tuesday to discuss the budget for the new library.",
            "Heavy rain closed the mountain road for most of the weekend, said the police!",
            "Will the school choir sing at the harvest festival on the village green?",
        ];
        let texts: Vec<String> = bodies.iter().map(|b| format!("{b}{footer}")).collect();
        write_source(&sources, "archive", &texts);
        let out = build_sources(&sources, Some("repeated_substrings_min_bytes = 50\n"));
        let kept: Vec<String> = lines(&out.join("kept.jsonl"))
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kept, [texts[0].as_str(), bodies[1], bodies[2]]);
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("datacard.json")).unwrap()).unwrap();
        assert_eq!(card["settings"]["repeated_substrings_min_bytes"], 50);
        assert_eq!(card["repeated_substrings"]["documents"], 2);
        assert_eq!(card["repeated_substrings"]["bytes"], 2 * footer.len());
        let md = std::fs::read_to_string(out.join("datacard.md")).unwrap();
        assert!(md.contains("## Repeated substrings"), "{md}");
    }

    /// Rewrites every `.jsonl` file under `sources` keeping only the lines a Parquet file of
    /// string columns can hold (JSON objects of strings and numbers, numbers written as
    /// strings), each with its id (the one `<file>:<line>` would derive where it has none), and
    /// writes the same rows as a `.parquet` twin under `twin`; other files are copied.
    fn parquet_twin(sources: &Path, twin: &Path) {
        for (rel, bytes) in files(sources) {
            let (from, to) = (sources.join(&rel), twin.join(&rel));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if !rel.ends_with(".jsonl") {
                std::fs::copy(&from, &to).unwrap();
                continue;
            }
            let file = from.file_name().unwrap().to_string_lossy().into_owned();
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = bytes
                .split(|&b| b == b'\n')
                .enumerate()
                .filter_map(|(n, line)| {
                    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
                    let mut row = serde_json::Map::new();
                    for (k, v) in value.as_object()? {
                        let v = match v {
                            serde_json::Value::String(_) => v.clone(),
                            serde_json::Value::Number(n) => n.to_string().into(),
                            _ => return None,
                        };
                        row.insert(k.clone(), v);
                    }
                    row.entry("id")
                        .or_insert(format!("{file}:{}", n + 1).into());
                    Some(row)
                })
                .collect();
            let jsonl: String = rows
                .iter()
                .map(|o| format!("{}\n", serde_json::Value::Object(o.clone())))
                .collect();
            std::fs::write(&from, jsonl).unwrap();
            let mut names: Vec<&str> = rows
                .iter()
                .flat_map(|o| o.keys())
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            names.dedup();
            let columns: Vec<(&str, bool)> = names.iter().map(|n| (*n, false)).collect();
            let mut table = StringTable::create(&to.with_extension("parquet"), &columns).unwrap();
            for o in &rows {
                let row: Vec<Option<&str>> = names
                    .iter()
                    .map(|n| o.get(*n).and_then(|v| v.as_str()))
                    .collect();
                table.push(&row).unwrap();
            }
            table.finish().unwrap();
        }
    }

    #[test]
    fn a_parquet_source_builds_the_same_corpus_as_the_same_documents_in_jsonl() {
        let tmp = tempfile::tempdir().unwrap();
        let jsonl = tmp.path().join("jsonl");
        let parquet = tmp.path().join("parquet");
        sample::write_sample(&jsonl, &SampleOptions::small(3)).unwrap();
        parquet_twin(&jsonl, &parquet);
        let toml = "kept_parquet = true\n";
        for dir in [&jsonl, &parquet] {
            std::fs::write(dir.join("corpus.toml"), toml).unwrap();
        }
        let build_into = |sources: &Path, out: &str| {
            let options = BuildOptions {
                sources: sources.to_path_buf(),
                out: tmp.path().join(out),
                ..BuildOptions::default()
            };
            build(&Cpu::new(), &options, |_| {}).unwrap();
            files(&options.out)
        };
        let from_jsonl = build_into(&jsonl, "out-jsonl");
        let from_parquet = build_into(&parquet, "out-parquet");
        // Derived ids and malformed records name their file: the twins differ only there.
        let same_names =
            |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(".parquet:", ".jsonl:");
        assert_eq!(
            from_jsonl.keys().collect::<Vec<_>>(),
            from_parquet.keys().collect::<Vec<_>>()
        );
        for (name, bytes) in &from_jsonl {
            if name.ends_with(".jsonl") || name.ends_with(".json") || name.ends_with(".md") {
                assert_eq!(
                    same_names(bytes),
                    same_names(&from_parquet[name]),
                    "{name} differs"
                );
            } else {
                assert!(bytes == &from_parquet[name], "{name} differs");
            }
        }
        let kept = lines(&tmp.path().join("out-jsonl/kept.jsonl"));
        let card: serde_json::Value =
            serde_json::from_slice(&from_parquet["datacard.json"]).unwrap();
        for source in card["sources"].as_array().unwrap() {
            assert!(source["kept"]["documents"].as_u64() > Some(0), "{source}");
        }
        assert!(
            kept.iter().any(|k| k["url"].is_string())
                && kept
                    .iter()
                    .any(|k| k["id"].as_str().is_some_and(|i| i.contains(".jsonl:"))),
            "the sample should exercise URLs and derived ids"
        );

        // kept.parquet holds what kept.jsonl holds, row for line.
        let mut rows = Vec::new();
        parquet::read_rows(
            &tmp.path().join("out-jsonl/kept.parquet"),
            u64::MAX,
            |_, row| {
                rows.push(row);
            },
        )
        .unwrap();
        assert_eq!(rows.len(), kept.len());
        for (row, line) in rows.iter().zip(&kept) {
            let mut row = row.clone();
            if let Some(meta) = row.remove("meta") {
                row.insert(
                    "meta".into(),
                    serde_json::from_str(meta.as_str().unwrap()).unwrap(),
                );
            }
            assert_eq!(&serde_json::Value::Object(row), line);
        }

        // A build that does not ask for it leaves no kept.parquet of an earlier one behind.
        std::fs::remove_file(jsonl.join("corpus.toml")).unwrap();
        assert!(!build_into(&jsonl, "out-jsonl").contains_key("kept.parquet"));
    }

    #[test]
    fn a_source_without_license_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let options = SampleOptions {
            unlicensed_source: true,
            ..SampleOptions::small(4)
        };
        sample::write_sample(tmp.path(), &options).unwrap();
        let options = BuildOptions {
            sources: tmp.path().to_path_buf(),
            out: tmp.path().join("out"),
            ..BuildOptions::default()
        };
        let err = build(&Cpu::new(), &options, |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(sample::UNLICENSED) && err.contains("`license`"),
            "{err}"
        );
        assert!(!tmp.path().join("out").exists(), "nothing is written");
    }

    /// The WGSL path gives the CPU path's outputs byte for byte (on lavapipe here; skipped
    /// without an adapter unless CANOPY_REQUIRE_ADAPTER=1).
    #[test]
    fn cpu_and_wgsl_builds_are_byte_identical() {
        let Some(gpu) = canopy_shaders::testing::gpu() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let sources = tmp.path().join("sources");
        sample::write_sample(&sources, &SampleOptions::small(5)).unwrap();
        let options = |out: &str| BuildOptions {
            sources: sources.clone(),
            out: tmp.path().join(out),
            ..BuildOptions::default()
        };
        build(&Cpu::new(), &options("cpu"), |_| {}).unwrap();
        let s = build(gpu, &options("gpu"), |_| {}).unwrap();
        eprintln!("WGSL build ran on {}", s.adapter);
        assert_eq!(
            files(&tmp.path().join("cpu")),
            files(&tmp.path().join("gpu"))
        );
    }
}
