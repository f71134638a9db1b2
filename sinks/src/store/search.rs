//! Context search: a per-tenant inverted index with BM25 ranking, over past
//! tickets and imported knowledge-base articles, plus the tenant's imported
//! asset inventory.
//!
//! Both stores keep the same postings (`(tenant, kind, term) → doc, tf,
//! doc length`) and per-(tenant, kind) statistics, and rank with the code in
//! this file, so a query answers the same on either store. The index is
//! shared state in the store: every process and pod sees every document as
//! soon as it is written, and nothing is rebuilt at start-up.
//!
//! Analysis: lower-cased alphanumeric words (dots and dashes inside a word
//! split it too), stop words dropped, a light suffix stemmer so
//! "disconnects"/"disconnecting"/"disconnected" meet. Fields are weighted
//! by repeating their terms: the title counts [`TITLE_WEIGHT`] times.
//!
//! Scoring is Okapi BM25 with Lucene's idf, `ln(1 + (N - df + 0.5) / (df +
//! 0.5))` (never negative), `k1 = 1.2`, `b = 0.75`. A query uses at most
//! [`MAX_QUERY_TERMS`] distinct terms (the rarest ones are not known before
//! the postings are read, so the first ones of the text are kept: subject
//! first), and a term with more than [`MAX_POSTINGS`] postings in a tenant
//! is skipped as a stop word for that tenant (its idf would be tiny anyway),
//! which bounds the work of one query however large the tenant grows.

use std::collections::{BTreeMap, HashMap};

/// What an indexed document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// A past ticket of the tenant (doc id: the ticket id).
    Ticket,
    /// A knowledge-base article the tenant imported (doc id: its id).
    Article,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Ticket => "ticket",
            DocKind::Article => "article",
        }
    }
}

/// One document as indexed and as returned by a search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchDoc {
    pub doc_id: String,
    /// Ticket subject or article title (weighted [`TITLE_WEIGHT`]).
    pub title: String,
    /// Ticket description or article content.
    pub body: String,
    /// Ticket: how it was resolved. Article: its keywords.
    pub extra: String,
    pub url: Option<String>,
    /// Ticket: the history status of its enhancement (`success`,
    /// `fallback`).
    pub status: Option<String>,
}

/// A ranked document.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub doc: SearchDoc,
    /// BM25 score.
    pub score: f64,
    /// The score as a share of the best score the query could reach (every
    /// query term matched with a very high term frequency; a term no
    /// document has counts as one with a single document): in `[0, 1)`,
    /// comparable between queries.
    pub similarity: f64,
}

/// An asset of a tenant's imported inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryAsset {
    /// Unique per tenant; an import replaces the asset of the same name.
    pub name: String,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub asset_type: Option<String>,
    pub owner: Option<String>,
    pub site: Option<String>,
}

impl InventoryAsset {
    /// The lower-cased keys this asset is found by: its IP, host name, the
    /// host name's first label, and its name.
    pub fn lookup_keys(&self) -> Vec<String> {
        let mut keys = vec![self.name.to_lowercase()];
        if let Some(ip) = &self.ip {
            keys.push(ip.trim().to_lowercase());
        }
        if let Some(h) = &self.hostname {
            let h = h.trim().trim_end_matches('.').to_lowercase();
            if let Some((short, _)) = h.split_once('.') {
                keys.push(short.to_string());
            }
            keys.push(h);
        }
        keys.retain(|k| !k.is_empty());
        keys.sort();
        keys.dedup();
        keys
    }
}

pub const K1: f64 = 1.2;
pub const B: f64 = 0.75;
/// How many times a title term counts.
pub const TITLE_WEIGHT: u32 = 2;
pub const MAX_QUERY_TERMS: usize = 32;
pub const MAX_POSTINGS: usize = 20_000;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "for", "with", "that", "this", "from", "have", "has", "had", "not", "are", "is",
    "was", "were", "be", "been", "being", "can", "cannot", "could", "would", "should", "our", "your", "their", "its",
    "into", "when", "since", "after", "before", "about", "please", "to", "of", "in", "on", "at", "by", "it", "as",
    "we", "you", "they", "there", "will", "just", "also", "today", "again", "my", "me", "i", "he", "she", "him", "her",
    "us", "them", "so", "if", "but", "do", "does", "did", "no", "any", "all", "some", "hi", "hello", "thanks", "thank",
    "regards", "dear", "team", "any", "what", "which", "who", "how", "why", "where", "than", "then", "too", "very",
    "still", "now", "get", "got", "am", "pm", "here", "other", "one", "out", "up", "down",
];

/// A light suffix stemmer (English inflections only): enough for plurals
/// and verb forms to meet ("printers"/"printer", "crashes"/"crashed"/
/// "crash"), and the same on both sides of the index.
pub fn stem(word: &str) -> String {
    let w = word;
    let n = w.len();
    let strip = |suffix: &str, min_stem: usize, add: &str| -> Option<String> {
        w.strip_suffix(suffix)
            .filter(|s| s.len() >= min_stem)
            .map(|s| format!("{s}{add}"))
    };
    if !w.is_ascii() || n <= 3 {
        return w.to_string();
    }
    let mut out = strip("ies", 2, "y")
        .or_else(|| strip("sses", 2, "ss"))
        .or_else(|| strip("ing", 3, ""))
        .or_else(|| strip("ed", 3, ""))
        .or_else(|| {
            if w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
                None
            } else {
                strip("s", 3, "")
            }
        })
        .unwrap_or_else(|| w.to_string());
    // "disconnecting" -> "disconnect", "running" -> "run", "stopped" -> "stop".
    let b = out.as_bytes();
    let l = b.len();
    if l != n && l >= 4 && b[l - 1] == b[l - 2] && !matches!(b[l - 1], b'l' | b's' | b'z') {
        out.pop();
    }
    // "share"/"shared"/"sharing" -> "shar": a final e goes either way.
    if out.len() >= 4 && out.ends_with('e') {
        out.pop();
    }
    out
}

/// The index terms of a text, in order of appearance (repeats kept).
pub fn analyze(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .filter(|w| w.chars().count() >= 2 || w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| w.chars().count() <= 40)
        .map(|w| stem(&w))
        .collect()
}

/// What one document contributes to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocTerms {
    /// Weighted term frequency per distinct term.
    pub tf: BTreeMap<String, u32>,
    /// Weighted length (sum of `tf`).
    pub len: u32,
}

impl DocTerms {
    pub fn of(doc: &SearchDoc) -> Self {
        let mut tf: BTreeMap<String, u32> = BTreeMap::new();
        for (text, weight) in [(&doc.title, TITLE_WEIGHT), (&doc.body, 1), (&doc.extra, 1)] {
            for t in analyze(text) {
                *tf.entry(t).or_default() += weight;
            }
        }
        let len = tf.values().sum();
        DocTerms { tf, len }
    }
}

/// The distinct terms of a query, at most [`MAX_QUERY_TERMS`], in order.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    analyze(query)
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .take(MAX_QUERY_TERMS)
        .collect()
}

/// One posting as read from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub doc_id: String,
    pub tf: u32,
    pub doc_len: u32,
}

/// Document count and total (weighted) length of one (tenant, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexStats {
    pub docs: u64,
    pub total_len: u64,
}

/// Lucene's BM25 idf.
pub fn idf(docs: u64, df: u64) -> f64 {
    let (n, df) = (docs as f64, df as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// Ranks documents by BM25 from the postings of each query term. Terms
/// whose postings were cut at [`MAX_POSTINGS`] (`truncated`) are skipped.
/// Returns `(doc_id, score, similarity)`, best first (ties: doc id), at most
/// `limit`, without `exclude`.
pub fn rank(
    stats: IndexStats,
    postings: &[(String, Vec<Posting>)],
    limit: usize,
    exclude: Option<&str>,
) -> Vec<(String, f64, f64)> {
    if stats.docs == 0 {
        return Vec::new();
    }
    let avgdl = (stats.total_len as f64 / stats.docs as f64).max(1.0);
    // The best a query can do: every term matched, tf -> infinity. A term
    // no document has counts with the idf of a term one document has: a
    // query whose words are mostly unknown to the index is a weak match
    // even where its one known word matches.
    let best: f64 = postings
        .iter()
        .filter(|(_, p)| p.len() <= MAX_POSTINGS)
        .map(|(_, p)| {
            let df = (p.len() as u64).max(1);
            idf(stats.docs.max(df), df) * (K1 + 1.0)
        })
        .sum();
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for (_, list) in postings {
        if list.is_empty() || list.len() > MAX_POSTINGS {
            continue;
        }
        // Counters may lag a concurrent write: never fewer docs than df.
        let w = idf(stats.docs.max(list.len() as u64), list.len() as u64);
        for p in list {
            let tf = f64::from(p.tf);
            let norm = K1 * (1.0 - B + B * f64::from(p.doc_len) / avgdl);
            *scores.entry(p.doc_id.as_str()).or_default() += w * tf * (K1 + 1.0) / (tf + norm);
        }
    }
    let mut ranked: Vec<(String, f64, f64)> = scores
        .into_iter()
        .filter(|(id, _)| Some(*id) != exclude)
        .map(|(id, s)| (id.to_string(), s, if best > 0.0 { s / best } else { 0.0 }))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    ranked
}

/// Plain text of an HTML note (tags dropped, common entities decoded,
/// whitespace collapsed).
pub fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_stems_and_drops_stop_words() {
        assert_eq!(
            analyze("The VPN keeps disconnecting; disconnects again for users on web-03.corp"),
            ["vpn", "keep", "disconnect", "disconnect", "user", "web", "03", "corp"]
        );
        assert_eq!(stem("stopped"), "stop");
        assert_eq!(stem("policies"), "policy");
        assert_eq!(stem("access"), "access");
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("printers"), "printer");
        for w in ["share", "shared", "sharing", "shares"] {
            assert_eq!(stem(w), "shar", "{w}");
        }
        assert_eq!(stem("crashes"), "crash");
    }

    #[test]
    fn title_terms_count_twice() {
        let t = DocTerms::of(&SearchDoc {
            title: "printer jam".into(),
            body: "printer".into(),
            ..Default::default()
        });
        assert_eq!(t.tf["printer"], 3);
        assert_eq!(t.tf["jam"], 2);
        assert_eq!(t.len, 5);
    }

    fn p(doc: &str, tf: u32, len: u32) -> Posting {
        Posting {
            doc_id: doc.into(),
            tf,
            doc_len: len,
        }
    }

    /// Worked by hand: N = 4, total length 40 (avgdl 10).
    /// "vpn" in a (tf 2, len 10) and b (tf 1, len 20): idf = ln(1 + 2.5/2.5)
    /// = ln 2. a: ln2 * 2*2.2 / (2 + 1.2) = 0.953; b: ln2 * 2.2 / (1 +
    /// 1.2*1.75) = 0.492. "timeout" in b only (tf 1): idf = ln(1 + 3.5/1.5)
    /// = 1.204, b += 1.204 * 2.2 / 3.1 = 0.855 -> b = 1.347 > a.
    #[test]
    fn bm25_matches_a_hand_computed_example() {
        let stats = IndexStats { docs: 4, total_len: 40 };
        let postings = vec![
            ("vpn".to_string(), vec![p("a", 2, 10), p("b", 1, 20)]),
            ("timeout".to_string(), vec![p("b", 1, 20)]),
        ];
        let r = rank(stats, &postings, 10, None);
        assert_eq!(r.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        let ln2 = 2f64.ln();
        let a = ln2 * 2.0 * 2.2 / 3.2;
        let b = ln2 * 2.2 / (1.0 + 1.2 * 1.75) + (1.0 + 3.5 / 1.5f64).ln() * 2.2 / 3.1;
        assert!((r[0].1 - b).abs() < 1e-9, "{} vs {b}", r[0].1);
        assert!((r[1].1 - a).abs() < 1e-9, "{} vs {a}", r[1].1);
        let best = (ln2 + (1.0 + 3.5 / 1.5f64).ln()) * 2.2;
        assert!((r[0].2 - b / best).abs() < 1e-9);
        // A query term no document has lowers every similarity: it counts
        // in the best score with the idf of df 1 (ln(1 + 3.5/1.5)).
        let mut with_unknown = postings.clone();
        with_unknown.push(("printer".to_string(), vec![]));
        let r2 = rank(stats, &with_unknown, 10, None);
        let best2 = best + (1.0 + 3.5 / 1.5f64).ln() * 2.2;
        assert!((r2[0].1 - b).abs() < 1e-9, "the score itself does not change");
        assert!((r2[0].2 - b / best2).abs() < 1e-9);
        assert_eq!(rank(stats, &postings, 10, Some("b")).len(), 1, "excluded doc");
        assert_eq!(rank(stats, &postings, 1, None).len(), 1, "limit");
        assert!(rank(IndexStats::default(), &postings, 10, None).is_empty());
    }

    #[test]
    fn asset_keys_cover_ip_host_and_short_name() {
        let a = InventoryAsset {
            name: "WEB-03".into(),
            ip: Some("10.0.0.3".into()),
            hostname: Some("web-03.corp.example.com".into()),
            ..Default::default()
        };
        assert_eq!(a.lookup_keys(), ["10.0.0.3", "web-03", "web-03.corp.example.com"]);
    }

    #[test]
    fn plain_text_of_a_note() {
        assert_eq!(
            plain_text("<p>Reset the <b>VPN</b> profile &amp; reboot.</p><ol><li>Step</li></ol>"),
            "Reset the VPN profile & reboot. Step"
        );
    }
}
