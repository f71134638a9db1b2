//! Text helpers: tokens for similarity and KB search, IP extraction.

use std::collections::HashSet;
use std::net::IpAddr;

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "have", "has", "not", "are", "was", "were", "can", "cannot",
    "could", "would", "should", "our", "your", "their", "its", "into", "when", "since", "after", "before", "about",
    "please", "help", "issue", "problem", "request", "user", "users", "working", "does", "doesn", "any", "all", "but",
    "you", "they", "there", "been", "being", "will", "just", "also", "today", "again",
];

/// Lower-case word tokens of three or more letters, stopwords removed.
pub fn tokens(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.len() >= 3 && !STOPWORDS.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
        .collect()
}

/// Jaccard similarity of two token sets.
pub fn similarity(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let inter = a.intersection(b).count() as f64;
    inter / (a.len() + b.len()) as f64 * 2.0
}

/// Up to `n` search keywords from a subject: the longest distinct tokens.
pub fn keywords(subject: &str, n: usize) -> Vec<String> {
    let mut words: Vec<String> = tokens(subject).into_iter().collect();
    words.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    words.truncate(n);
    words
}

/// IP addresses (v4 and v6) mentioned in `text`, in order, without repeats.
pub fn ip_addresses(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .map(|t| t.trim_matches(|c| c == '.' || c == ':'))
        .filter(|t| t.contains('.') || t.matches(':').count() >= 2)
        .filter_map(|t| t.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .filter(|ip| seen.insert(ip.clone()))
        .collect()
}

/// Escapes text for an SDP note (notes are HTML).
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ips_in_prose() {
        let ips = ip_addresses(
            "Users on 10.1.2.3, and 192.168.0.10. cannot reach fe80::1; 10.1.2.3 again; version 1.2 and 300.1.1.1",
        );
        assert_eq!(ips, vec!["10.1.2.3", "192.168.0.10", "fe80::1"]);
    }

    #[test]
    fn similarity_ranks_shared_words() {
        let a = tokens("VPN disconnects every hour for remote staff");
        let b = tokens("Remote staff VPN keeps disconnecting");
        let c = tokens("Printer out of toner");
        assert!(similarity(&a, &b) > similarity(&a, &c));
        assert_eq!(similarity(&a, &c), 0.0);
        assert_eq!(
            keywords("Outlook crashes when opening calendar", 2),
            vec!["calendar", "crashes"]
        );
    }
}
