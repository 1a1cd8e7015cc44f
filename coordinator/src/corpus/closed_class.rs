//! Closed-class (function) words per language, for the filter that drops documents with too
//! few of them, as ROOTS did: natural prose is about a third to a half function words
//! (articles, pronouns, prepositions, conjunctions, auxiliaries), while keyword lists, menus,
//! tables, boilerplate and machine-generated junk have almost none.
//!
//! The lists are short on purpose (the most frequent function words of each language, which
//! carry nearly all of the ratio), were written for Canopy from standard grammars, and are
//! under the project's own licence. A language without a list is not filtered by this rule.
//! The filter is off by default (`min_closed_class_ratio = 0`); ROOTS-like settings are about
//! `0.15` for the languages listed here.

/// The languages with a list, by BCP 47 primary subtag.
pub const LANGUAGES: &[&str] = &["de", "en", "es", "fr", "it", "nl", "pt"];

/// The function words of `language` (by primary subtag), if Canopy ships a list for it.
pub fn words(language: &str) -> Option<&'static [&'static str]> {
    let primary = language.split(['-', '_']).next().unwrap_or(language);
    Some(match primary.to_ascii_lowercase().as_str() {
        "en" => &[
            "the", "of", "and", "a", "an", "to", "in", "is", "it", "that", "for", "on", "was",
            "with", "as", "at", "by", "be", "this", "are", "or", "from", "but", "not", "have",
            "has", "had", "they", "he", "she", "we", "you", "i", "his", "her", "their", "its",
            "which", "who", "there", "were", "been", "would", "will", "can", "if", "so", "no",
            "all", "one", "into", "than", "them", "these", "those", "our", "my", "me", "him",
        ],
        "fr" => &[
            "le", "la", "les", "l", "de", "des", "du", "d", "un", "une", "et", "à", "au", "aux",
            "en", "dans", "par", "pour", "sur", "avec", "que", "qui", "ne", "pas", "est", "il",
            "elle", "ils", "elles", "on", "nous", "vous", "je", "se", "s", "son", "sa", "ses",
            "ce", "cette", "ces", "leur", "leurs", "mais", "ou", "plus", "comme", "a", "sont",
            "été", "y", "qu", "c", "n", "j", "m",
        ],
        "de" => &[
            "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer",
            "und", "oder", "aber", "in", "im", "zu", "zum", "zur", "mit", "von", "vom", "auf",
            "für", "an", "am", "aus", "bei", "nach", "ist", "sind", "war", "waren", "hat", "haben",
            "wird", "werden", "nicht", "es", "er", "sie", "wir", "ich", "du", "ihr", "sich",
            "dass", "als", "wie", "auch", "so", "noch", "nur", "wenn", "um",
        ],
        "es" => &[
            "el", "la", "los", "las", "lo", "un", "una", "unos", "unas", "de", "del", "y", "o",
            "pero", "a", "al", "en", "por", "para", "con", "sin", "sobre", "que", "quien", "es",
            "son", "fue", "era", "ha", "han", "se", "no", "su", "sus", "le", "les", "me", "te",
            "nos", "él", "ella", "ellos", "yo", "tú", "como", "más", "este", "esta", "ese", "esa",
            "si", "ya", "muy", "también", "cuando",
        ],
        "pt" => &[
            "o", "a", "os", "as", "um", "uma", "uns", "umas", "de", "do", "da", "dos", "das", "e",
            "ou", "mas", "em", "no", "na", "nos", "nas", "por", "para", "com", "sem", "que",
            "quem", "é", "são", "foi", "era", "tem", "se", "não", "seu", "sua", "seus", "suas",
            "ele", "ela", "eles", "elas", "eu", "você", "como", "mais", "este", "esta", "esse",
            "essa", "ao", "aos", "pelo", "pela", "também",
        ],
        "it" => &[
            "il", "lo", "la", "i", "gli", "le", "l", "un", "uno", "una", "di", "del", "della",
            "dei", "delle", "e", "o", "ma", "a", "al", "alla", "in", "nel", "nella", "da", "dal",
            "per", "con", "su", "che", "chi", "è", "sono", "era", "ha", "hanno", "si", "non",
            "suo", "sua", "loro", "lui", "lei", "io", "tu", "noi", "voi", "come", "più", "questo",
            "questa", "quello", "anche", "se",
        ],
        "nl" => &[
            "de", "het", "een", "en", "of", "maar", "van", "in", "op", "te", "met", "voor", "aan",
            "door", "bij", "uit", "naar", "om", "over", "is", "zijn", "was", "waren", "heeft",
            "hebben", "wordt", "worden", "niet", "geen", "dat", "die", "dit", "deze", "er", "hij",
            "zij", "ze", "wij", "we", "ik", "je", "u", "hun", "haar", "zich", "als", "ook", "nog",
            "wel", "dan", "toen",
        ],
        _ => return None,
    })
}

/// The share of `text`'s words (runs of letters, lowercased) that are function words of
/// `language`; `None` without a list or without words.
pub fn ratio(language: &str, text: &str) -> Option<f64> {
    let list = words(language)?;
    let (mut total, mut closed) = (0u64, 0u64);
    for word in text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
    {
        total += 1;
        let lower = word.to_lowercase();
        if list.contains(&lower.as_str()) {
            closed += 1;
        }
    }
    (total > 0).then(|| closed as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_is_rich_in_function_words_and_lists_are_not() {
        for (lang, prose) in [
            (
                "en",
                "The committee met on Tuesday to discuss the budget for the new library, and \
                 most of the members agreed that it should open in the spring.",
            ),
            (
                "fr",
                "Le comité s'est réuni mardi pour discuter du budget de la nouvelle \
                 bibliothèque, et la plupart des membres ont convenu qu'elle ouvrirait.",
            ),
            (
                "de",
                "Der Ausschuss traf sich am Dienstag, um über den Haushalt der neuen Bibliothek \
                 zu sprechen, und die meisten waren sich einig, dass sie im Frühjahr öffnet.",
            ),
            (
                "es-419",
                "El comité se reunió el martes para hablar del presupuesto de la nueva \
                 biblioteca, y la mayoría estuvo de acuerdo en que se abriría en primavera.",
            ),
        ] {
            let r = ratio(lang, prose).unwrap();
            assert!(r > 0.3, "{lang}: {r}");
        }
        let keywords = "cheap flights hotels deals discount tickets travel booking online \
                        vacation packages cruise rental cars insurance";
        assert!(ratio("en", keywords).unwrap() < 0.05);
        assert_eq!(ratio("zh", "委员会星期二开会"), None, "no list, no ratio");
        assert_eq!(ratio("en", "1234 5678"), None, "no words, no ratio");
        for l in LANGUAGES {
            assert!(words(l).is_some_and(|w| w.len() >= 40), "{l}");
        }
    }
}
