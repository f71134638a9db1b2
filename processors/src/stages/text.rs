//! Text helpers: keywords for SDP's solutions search, IP address and host
//! name extraction. (Similarity search is BM25 in the store:
//! `sinks::store::search`.)

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

/// File extensions that make a dotted word a file name, not a host.
const FILE_EXTENSIONS: &[&str] = &[
    "txt", "log", "exe", "dll", "msi", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "csv", "zip", "rar", "png",
    "jpg", "jpeg", "gif", "html", "htm", "json", "xml", "yaml", "yml", "ps1", "bat", "cmd", "sh", "ini", "cfg", "conf",
    "config", "tmp", "bak", "iso", "vbs", "js", "py", "pst", "ost", "msg", "eml", "sys", "db", "sql", "rdp", "lnk",
];

/// Words of `text` as written, split at whitespace and at punctuation that
/// never occurs inside a host name; trailing sentence punctuation trimmed.
fn raw_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | '(' | ')' | '[' | ']' | '<' | '>' | '"' | '\'' | '`' | '|' | '!' | '?' | '*'
            )
    })
    .map(|w| w.trim_end_matches(['.', ':']))
    .filter(|w| !w.is_empty())
}

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Fully qualified host names mentioned in `text` (lower-cased, in order,
/// without repeats): dotted words of two or more DNS labels whose last
/// label is alphabetic. E-mail addresses, URLs, paths, IP addresses,
/// version numbers and file names (`report.pdf`) are not host names.
pub fn hostnames(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    raw_words(text)
        .filter(|w| !w.contains('@') && !w.contains('/') && !w.contains(':') && !w.contains('='))
        .filter(|w| w.contains('.'))
        .map(str::to_ascii_lowercase)
        .filter(|w| {
            let labels: Vec<&str> = w.split('.').collect();
            let tld = labels[labels.len() - 1];
            labels.len() >= 2
                && w.len() <= 253
                && labels.iter().all(|l| is_label(l))
                && tld.len() >= 2
                && tld.chars().all(|c| c.is_ascii_alphabetic())
                && !FILE_EXTENSIONS.contains(&tld)
                && !labels[0].starts_with("www")
        })
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

/// Words of `text` that may name a machine (lower-cased, in order, without
/// repeats, at most `max`): single DNS labels of three or more characters
/// with a digit or a dash between letters and digits (`srv01`, `PC-0423`,
/// `web-03`), and the first label of each host name. They are looked up in
/// the tenant's asset inventory; only the ones found count as host names.
pub fn host_candidates(text: &str, max: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let short = hostnames(text)
        .into_iter()
        .filter_map(|h| h.split('.').next().map(str::to_string));
    let words = raw_words(text)
        .filter(|w| !w.contains('@') && !w.contains('/') && !w.contains('.'))
        .map(str::to_ascii_lowercase)
        .filter(|w| {
            w.len() >= 3
                && is_label(w)
                && w.chars().any(|c| c.is_ascii_alphabetic())
                && (w.chars().any(|c| c.is_ascii_digit()) || w.contains('-'))
        });
    short
        .chain(words)
        .filter(|w| seen.insert(w.clone()))
        .take(max)
        .collect()
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
    fn finds_host_names_but_not_mail_urls_files_or_versions() {
        let text = "Cannot reach web-03.corp.example.com, nor DB01.Corp.Example.com. Mail jane@corp.example.com; \
                    see https://intranet.example.com/help and \\\\fs01.corp.local\\share; attached report.pdf \
                    and setup.exe; version 2.4.1 on 10.0.0.5; e.g. this; www.google.com is up; \
                    again web-03.corp.example.com.";
        assert_eq!(hostnames(text), ["web-03.corp.example.com", "db01.corp.example.com"]);
        assert!(hostnames("user@host.example.com").is_empty());
        assert!(hostnames("http://host.example.com").is_empty());
        assert!(hostnames("-bad.example.com").is_empty());
    }

    #[test]
    fn machine_like_words_are_host_candidates() {
        let c = host_candidates(
            "PC-0423 and srv01 are down, so is web-03.corp.example.com; re-install Windows 11 on LT-JDOE; 2024-01-05",
            10,
        );
        assert_eq!(c, ["web-03", "pc-0423", "srv01", "re-install", "lt-jdoe"]);
        assert_eq!(host_candidates("a1 b2 srv01 srv02 srv03", 2), ["srv01", "srv02"]);
    }

    #[test]
    fn keywords_are_the_longest_tokens() {
        assert_eq!(
            keywords("Outlook crashes when opening calendar", 2),
            vec!["calendar", "crashes"]
        );
    }
}
