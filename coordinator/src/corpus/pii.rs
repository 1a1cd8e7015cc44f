//! Personal data in kept text: e-mail addresses, IP addresses and phone numbers are replaced
//! by placeholder tokens, as the ROOTS pipeline did (`PI:EMAIL`, `PI:IP_ADDRESS`, and here
//! `PI:PHONE`), and counted per category in the data card.
//!
//! The rules are regular expressions, deterministic and independent of where they run, so a
//! build redacts the same bytes whether the coordinator or volunteers computed its chunks.
//! They lean towards precision: a number is a phone number only in a shape phone numbers
//! take and lists of numbers do not (an international `+` prefix, an area code in
//! parentheses, `555-123-4567`, or `06 12 34 56 78`), so years, prices and counts stay; an IP
//! address must parse as one (`999.1.1.1` stays). Digits of any script count (`٠٦١٢…`,
//! `०६१२…`), and addresses may have letters of any script.
//!
//! | category | placeholder | example |
//! | --- | --- | --- |
//! | e-mail | `PI:EMAIL` | `ana.perez@example.org`, `用户@例子.公司` |
//! | IPv4, IPv6 | `PI:IP_ADDRESS` | `192.168.0.12`, `2001:db8::7` |
//! | phone | `PI:PHONE` | `+44 20 7946 0958`, `(030) 1234 5678`, `555-123-4567` |

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a build does with personal data in kept text (`[corpus] pii` in `corpus.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiMode {
    /// Replace it by placeholder tokens (the default).
    #[default]
    Redact,
    /// Keep the text as it is (for sources already redacted, or where the project has the
    /// right to keep it); still counted in the data card.
    Keep,
}

/// Personal data found, by category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PiiCounts {
    /// E-mail addresses.
    pub emails: u64,
    /// IPv4 and IPv6 addresses.
    pub ip_addresses: u64,
    /// Phone numbers.
    pub phone_numbers: u64,
}

impl PiiCounts {
    /// Adds `other` into these counts.
    pub fn add(&mut self, other: PiiCounts) {
        self.emails += other.emails;
        self.ip_addresses += other.ip_addresses;
        self.phone_numbers += other.phone_numbers;
    }

    /// Everything found.
    pub fn total(&self) -> u64 {
        self.emails + self.ip_addresses + self.phone_numbers
    }
}

/// The placeholder for an e-mail address.
pub const EMAIL: &str = "PI:EMAIL";
/// The placeholder for an IP address.
pub const IP_ADDRESS: &str = "PI:IP_ADDRESS";
/// The placeholder for a phone number.
pub const PHONE: &str = "PI:PHONE";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Email,
    Ip,
    Phone,
}

/// Compiles a rule; the patterns are constants, tested below.
fn rule(pattern: &str) -> Regex {
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("a valid built-in pattern")
}

static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| {
    rule(concat!(
        r"[\p{L}\p{M}\p{N}._%+-]+@",
        r"[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?",
        r"(?:\.[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}-]*[\p{L}\p{M}\p{N}])?)*",
        r"\.\p{L}[\p{L}\p{M}]+",
    ))
});
/// Candidates: dotted quads, and runs of hex digits and colons with at least two colons
/// (checked by parsing).
static IP_RE: LazyLock<Regex> = LazyLock::new(|| {
    rule(
        r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?-u:\b)|[^\w:])",
    )
});
static PHONE_RE: LazyLock<Regex> = LazyLock::new(|| {
    rule(concat!(
        // International: + country code, then two to five groups.
        r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}\d?",
        // An area code in parentheses.
        r"|\(\d{2,5}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){1,2}",
        // 555-123-4567, 555.123.4567.
        r"|(?-u:\b)\d{3}[.-]\d{3}[.-]\d{4}(?-u:\b)",
        // A leading 0 and four pairs: 06 12 34 56 78.
        r"|(?-u:\b)0\d(?:[ .-]\d{2}){4}(?-u:\b)",
    ))
});

/// How many digits (of any script) `s` has.
fn digits(s: &str) -> usize {
    s.chars().filter(|c| c.is_numeric()).count()
}

/// Whether a candidate is an IP address: it parses as one (an IPv6 address also needs a
/// digit, so `::` alone and words such as `cafe::` stay text).
fn is_ip(candidate: &str) -> bool {
    let c = candidate.trim_end_matches(|ch: char| !ch.is_ascii_hexdigit());
    if c.contains('.') && !c.contains(':') {
        return c.parse::<Ipv4Addr>().is_ok();
    }
    c.split(':').filter(|g| !g.is_empty()).count() >= 2 && c.parse::<Ipv6Addr>().is_ok()
}

/// The spans of personal data in `text`, in order, without overlaps (the earlier and then
/// the longer match wins).
fn find(text: &str) -> Vec<(usize, usize, Category)> {
    let mut spans: Vec<(usize, usize, Category)> = Vec::new();
    // Each rule needs a character most text lacks, which a cheap scan looks for first.
    if text.contains('@') {
        for m in EMAIL_RE.find_iter(text) {
            spans.push((m.start(), m.end(), Category::Email));
        }
    }
    if !text.contains(|c: char| c == ':' || c.is_numeric()) {
        return spans;
    }
    for m in IP_RE.find_iter(text) {
        let s = m.as_str();
        let trimmed = s.trim_end_matches(|ch: char| !ch.is_ascii_hexdigit());
        if is_ip(s) {
            spans.push((m.start(), m.start() + trimmed.len(), Category::Ip));
        }
    }
    for m in PHONE_RE.find_iter(text) {
        let s = m.as_str().trim_end();
        if (8..=15).contains(&digits(s)) {
            spans.push((m.start(), m.start() + s.len(), Category::Phone));
        }
    }
    spans.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
    let mut kept: Vec<(usize, usize, Category)> = Vec::with_capacity(spans.len());
    for span in spans {
        if kept.last().is_none_or(|last| span.0 >= last.1) {
            kept.push(span);
        }
    }
    kept
}

impl Category {
    fn placeholder(self) -> &'static str {
        match self {
            Category::Email => EMAIL,
            Category::Ip => IP_ADDRESS,
            Category::Phone => PHONE,
        }
    }
}

impl PiiCounts {
    fn note(&mut self, category: Category) {
        match category {
            Category::Email => self.emails += 1,
            Category::Ip => self.ip_addresses += 1,
            Category::Phone => self.phone_numbers += 1,
        }
    }
}

/// `text` with personal data replaced by placeholders, and what was found. Text without any
/// comes back borrowed.
pub fn redact(text: &str) -> (Cow<'_, str>, PiiCounts) {
    let spans = find(text);
    let mut counts = PiiCounts::default();
    if spans.is_empty() {
        return (Cow::Borrowed(text), counts);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, category) in spans {
        out.push_str(&text[at..start]);
        out.push_str(category.placeholder());
        counts.note(category);
        at = end;
    }
    out.push_str(&text[at..]);
    (Cow::Owned(out), counts)
}

/// Counts personal data without changing the text (for [`PiiMode::Keep`]).
pub fn count(text: &str) -> PiiCounts {
    let mut counts = PiiCounts::default();
    for (_, _, category) in find(text) {
        counts.note(category);
    }
    counts
}

/// The text as `mode` writes it, and what it holds.
pub fn apply(mode: PiiMode, text: &str) -> (Cow<'_, str>, PiiCounts) {
    match mode {
        PiiMode::Redact => redact(text),
        PiiMode::Keep => (Cow::Borrowed(text), count(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(text: &str) -> String {
        redact(text).0.into_owned()
    }

    /// Each text of `replaced` redacts to its pair; each of `untouched` stays as it is.
    fn assert_redacts(replaced: &[(&str, &str)], untouched: &[&str]) {
        for (text, want) in replaced {
            assert_eq!(redacted(text), *want, "{text}");
        }
        for text in untouched {
            assert_eq!(redacted(text), *text, "{text}");
        }
    }

    #[test]
    fn emails_in_several_scripts_are_replaced() {
        // Not addresses: a handle, a decorator, a domain alone.
        assert_redacts(
            &[
                (
                    "Write to ana.perez+corpus@example.org today.",
                    "Write to PI:EMAIL today.",
                ),
                ("联系 用户@例子.公司 获取", "联系 PI:EMAIL 获取"),
                ("للتواصل: info@مثال.شبكة شكرا", "للتواصل: PI:EMAIL شكرا"),
                ("Пишите: иван@пример.рф.", "Пишите: PI:EMAIL."),
                ("संपर्क राम.शर्मा@example.in करें", "संपर्क PI:EMAIL करें"),
            ],
            &["@canopy said so", "@property def x", "see example.org"],
        );
    }

    #[test]
    fn ip_addresses_are_replaced_when_they_parse() {
        assert_redacts(
            &[
                (
                    "the server at 192.168.0.12 answered",
                    "the server at PI:IP_ADDRESS answered",
                ),
                ("from 2001:db8::7, again.", "from PI:IP_ADDRESS, again."),
                (
                    "fe80::1ff:fe23:4567:890a is link-local",
                    "PI:IP_ADDRESS is link-local",
                ),
                ("服务器 10.0.0.1 出错", "服务器 PI:IP_ADDRESS 出错"),
            ],
            &[
                "version 999.1.1.1 is not an address",
                "at 12:30:45 the train left",
                "std::fs::read and cafe::latte",
                "ratio 3.14 and 1.2.3",
            ],
        );
    }

    #[test]
    fn phone_numbers_in_their_usual_shapes_and_any_digits_are_replaced() {
        // Years, prices, counts, dates and ISBN-like lists stay.
        assert_redacts(
            &[
                ("Call +44 20 7946 0958 now", "Call PI:PHONE now"),
                ("Ruf an: (030) 1234 5678.", "Ruf an: PI:PHONE."),
                ("dial 555-123-4567 or", "dial PI:PHONE or"),
                ("appelez le 06 12 34 56 78 svp", "appelez le PI:PHONE svp"),
                ("اتصل ‎+٩٦٦ ٥٠ ١٢٣ ٤٥٦٧ الآن", "اتصل ‎PI:PHONE الآن"),
                ("फ़ोन +९१ ९८७६५ ४३२१० पर", "फ़ोन PI:PHONE पर"),
            ],
            &[
                "in 1998 2004 2010 and 2016",
                "it cost 1,299.00 euros",
                "on 2024-01-15 at noon",
                "population 67 000 000",
                "+5 points",
            ],
        );
    }

    #[test]
    fn counts_follow_the_categories_and_clean_text_is_borrowed() {
        let (out, counts) =
            redact("a@b.org and c@d.net, 10.1.2.3, +1 415 555 0100 and 2001:db8::1");
        assert_eq!(
            out,
            "PI:EMAIL and PI:EMAIL, PI:IP_ADDRESS, PI:PHONE and PI:IP_ADDRESS"
        );
        assert_eq!(
            counts,
            PiiCounts {
                emails: 2,
                ip_addresses: 2,
                phone_numbers: 1
            }
        );
        assert_eq!(counts.total(), 5);
        let clean = "nothing personal here";
        assert!(matches!(redact(clean).0, Cow::Borrowed(_)));
        assert_eq!(count(clean), PiiCounts::default());
    }
}
