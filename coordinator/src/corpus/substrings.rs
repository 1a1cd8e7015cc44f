//! Repeated-substring removal across documents, as ROOTS did with the suffix-array tool of
//! Lee et al. ("Deduplicating Training Data Makes Language Models Better"): boilerplate that
//! near-duplicate detection leaves (a licence footer, a navigation block, a disclaimer
//! copied into thousands of otherwise different pages) is cut from every document but the
//! first that carries it.
//!
//! The kept documents are laid end to end in corpus order, a suffix array and its longest
//! common prefixes are built over the bytes, and every run of suffixes sharing at least
//! `min_bytes` bytes (never across a document's end) is a repeated substring: each occurrence
//! but the earliest is removed, at character boundaries. The result depends only on the
//! texts and their order, so every build of the same corpus cuts the same bytes.
//!
//! The stage is opt-in (`repeated_substrings_min_bytes`, 0 by default) and runs on the
//! coordinator over the whole kept corpus at once: about 22 bytes of memory per byte of kept
//! text, so it suits corpora of up to a few gigabytes, not ROOTS' 1.6 TB.

/// What the stage removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// Documents that lost at least one substring.
    pub documents: u64,
    /// Bytes removed in all.
    pub bytes: u64,
}

/// The suffix array of `text` (prefix doubling: `O(n log² n)`, no recursion).
fn suffix_array(text: &[u8]) -> Vec<u32> {
    let n = text.len();
    let mut sa: Vec<u32> = (0..n as u32).collect();
    let mut rank: Vec<u32> = text.iter().map(|&b| u32::from(b)).collect();
    let mut next = vec![0u32; n];
    if n < 2 {
        return sa;
    }
    let mut k = 1usize;
    loop {
        // The key of a suffix: its rank, then the rank `k` further on (0 past the end, so
        // ranks are shifted by one).
        let key = |i: u32| {
            let i = i as usize;
            (rank[i], rank.get(i + k).map_or(0, |r| r + 1))
        };
        sa.sort_unstable_by_key(|&i| key(i));
        next[sa[0] as usize] = 0;
        for w in 1..n {
            let bump = u32::from(key(sa[w - 1]) != key(sa[w]));
            next[sa[w] as usize] = next[sa[w - 1] as usize] + bump;
        }
        std::mem::swap(&mut rank, &mut next);
        if rank[sa[n - 1] as usize] as usize == n - 1 || k >= n {
            break;
        }
        k *= 2;
    }
    sa
}

/// `lcp[w]`: the longest common prefix of the suffixes at `sa[w - 1]` and `sa[w]` (Kasai).
fn lcp_array(text: &[u8], sa: &[u32]) -> Vec<u32> {
    let n = text.len();
    let mut rank = vec![0u32; n];
    for (w, &i) in sa.iter().enumerate() {
        rank[i as usize] = w as u32;
    }
    let mut lcp = vec![0u32; n];
    let mut h = 0usize;
    for i in 0..n {
        let r = rank[i] as usize;
        if r == 0 {
            h = 0;
            continue;
        }
        let j = sa[r - 1] as usize;
        while i + h < n && j + h < n && text[i + h] == text[j + h] {
            h += 1;
        }
        lcp[r] = h as u32;
        h = h.saturating_sub(1);
    }
    lcp
}

/// For each text, the byte ranges to remove: later occurrences of substrings of at least
/// `min_bytes` bytes that an earlier place in the corpus (an earlier text, or earlier in the
/// same text) already holds. Ranges are sorted, disjoint and on character boundaries.
pub fn repeated(texts: &[&str], min_bytes: usize) -> Vec<Vec<(usize, usize)>> {
    let min_bytes = min_bytes.max(1);
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let mut all = Vec::with_capacity(total);
    // Each byte's text and the bytes left in that text from it on.
    let mut starts = Vec::with_capacity(texts.len());
    for t in texts {
        starts.push(all.len());
        all.extend_from_slice(t.as_bytes());
    }
    let doc_of = |p: usize| starts.partition_point(|&s| s <= p) - 1;
    let left = |p: usize| {
        let d = doc_of(p);
        starts[d] + texts[d].len() - p
    };
    let sa = suffix_array(&all);
    let lcp = lcp_array(&all, &sa);
    // The shared length of two neighbours, never across a text's end.
    let shared = |w: usize| -> usize {
        let (a, b) = (sa[w - 1] as usize, sa[w] as usize);
        (lcp[w] as usize).min(left(a)).min(left(b))
    };
    let mut marks = vec![false; total];
    let mut w = 1;
    while w < sa.len() {
        if shared(w) < min_bytes {
            w += 1;
            continue;
        }
        // A run of suffixes that each share at least `min_bytes` with the one before.
        let from = w - 1;
        let mut to = w;
        while to + 1 < sa.len() && shared(to + 1) >= min_bytes {
            to += 1;
        }
        let common = (from + 1..=to).map(shared).min().unwrap_or(0);
        let first = (from..=to).map(|v| sa[v]).min().unwrap_or(0) as usize;
        for v in from..=to {
            let p = sa[v] as usize;
            if p == first {
                continue;
            }
            // As much as it shares with a neighbour that comes earlier, at least the run's.
            let mut len = common;
            if v > from && (sa[v - 1] as usize) < p {
                len = len.max(shared(v));
            }
            if v < to && (sa[v + 1] as usize) < p {
                len = len.max(shared(v + 1));
            }
            marks[p..p + len].fill(true);
        }
        w = to + 1;
    }
    texts
        .iter()
        .zip(&starts)
        .map(|(t, &s)| {
            let mut ranges = Vec::new();
            let mut i = 0;
            while i < t.len() {
                if !marks[s + i] {
                    i += 1;
                    continue;
                }
                let mut j = i;
                while j < t.len() && marks[s + j] {
                    j += 1;
                }
                // Whole characters only: a cut that starts or ends inside one keeps it.
                let mut a = i;
                while !t.is_char_boundary(a) {
                    a += 1;
                }
                let mut b = j;
                while !t.is_char_boundary(b) {
                    b -= 1;
                }
                if a < b {
                    ranges.push((a, b));
                }
                i = j;
            }
            ranges
        })
        .collect()
}

/// `text` without `ranges` (sorted, disjoint, on character boundaries).
pub fn cut(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(a, b) in ranges {
        out.push_str(&text[at..a]);
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(texts: &[&str], min: usize) -> Vec<String> {
        repeated(texts, min)
            .iter()
            .zip(texts)
            .map(|(r, t)| cut(t, r))
            .collect()
    }

    #[test]
    fn the_suffix_array_sorts_every_suffix() {
        for text in [
            &b"banana"[..],
            b"mississippi",
            b"aaaaaaaa",
            b"",
            b"x",
            "été à la maison".as_bytes(),
        ] {
            let sa = suffix_array(text);
            let mut want: Vec<u32> = (0..text.len() as u32).collect();
            want.sort_by_key(|&i| &text[i as usize..]);
            assert_eq!(sa, want, "{text:?}");
            let lcp = lcp_array(text, &sa);
            for w in 1..sa.len() {
                let (a, b) = (&text[sa[w - 1] as usize..], &text[sa[w] as usize..]);
                let h = a.iter().zip(b).take_while(|(x, y)| x == y).count();
                assert_eq!(lcp[w] as usize, h);
            }
        }
    }

    #[test]
    fn a_footer_repeated_across_documents_is_kept_only_where_it_first_appears() {
        let footer = " This page is published under the site's terms of use; all rights reserved.";
        let a = format!("Rivers of the north flood each spring.{footer}");
        let b = format!("The harvest festival opens on Saturday.{footer}");
        let c = format!("A new bridge links the two villages.{footer} Tickets at the door.");
        let texts = [a.as_str(), b.as_str(), c.as_str()];
        let out = cleaned(&texts, 40);
        assert_eq!(out[0], a, "the first occurrence stays");
        // The full stop before the footer is part of what repeats.
        assert_eq!(out[1], "The harvest festival opens on Saturday");
        assert_eq!(
            out[2],
            "A new bridge links the two villages Tickets at the door."
        );
        // Shorter than the threshold (the footer and its full stop): nothing is cut.
        assert_eq!(cleaned(&texts, footer.len() + 2), texts);
    }

    #[test]
    fn repeats_within_a_document_and_never_across_a_documents_end() {
        let block = "0123456789abcdefghij";
        let one = format!("{block}--{block}");
        assert_eq!(cleaned(&[&one], 20), [format!("{block}--")]);
        // The end of one text and the start of the next do not make a substring together.
        let texts = ["abcdefghijhello", "worldklmnopqrst", "helloworld"];
        assert_eq!(cleaned(&texts, 8), texts);
    }

    #[test]
    fn cuts_keep_whole_characters_and_the_same_input_cuts_the_same_bytes() {
        let shared = "Дата публикации: сведения о правообладателе указаны ниже.";
        let a = format!("Первая статья о реке. {shared}");
        let b = format!("Вторая статья о мосте. {shared}");
        let texts = [a.as_str(), b.as_str()];
        let ranges = repeated(&texts, 30);
        assert_eq!(ranges, repeated(&texts, 30));
        let out = cleaned(&texts, 30);
        assert_eq!(out[0], a);
        // "е. Дата публикации…" repeats, from the last letter of "реке" and "мосте" on.
        assert_eq!(out[1], "Вторая статья о мост");
        assert!(repeated(&[], 10).is_empty());
        assert_eq!(repeated(&["", "abc"], 0), [vec![], vec![]]);
    }
}
