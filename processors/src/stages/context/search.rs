//! The context stage's searches over the store: similar past tickets and
//! imported articles through the tenant's BM25 index, assets through the
//! tenant's imported inventory, and the merge with what ServiceDesk Plus
//! answered. Public so the quality benchmark (`loadtest quality`) measures
//! exactly what the stage runs.

use std::collections::HashSet;

use schemas::{IpReference, KbArticle, SimilarTicket};
use sinks::store::search::{analyze, plain_text};
use sinks::store::{DocKind, InventoryAsset, SearchDoc, Store, StoreError};

use super::super::text::{host_candidates, hostnames};

/// Below this share of the query's best possible BM25 score a past ticket
/// is noise (a word or two in common), not context. Chosen on the quality
/// benchmark (`loadtest --scenario quality`): at 0.08 recall@5 is 0.94 with
/// 1.1 wrong tickets in a note's top 3; at 0.12, 0.89 with 0.6; at 0.15,
/// 0.86 with 0.3.
pub const MIN_TICKET_SIMILARITY: f64 = 0.12;
/// The same for imported articles, whose wording differs more from
/// tickets' (0.06: recall@5 0.85; 0.08: 0.76; 0.10: 0.66).
pub const MIN_ARTICLE_SIMILARITY: f64 = 0.06;
/// Longest resolution kept with an indexed ticket.
pub const RESOLUTION_CHARS: usize = 400;
/// Most words looked up in the inventory per ticket.
pub const MAX_HOST_CANDIDATES: usize = 32;

/// The text a ticket is searched and indexed by.
pub fn ticket_text(subject: Option<&str>, description: Option<&str>) -> String {
    format!("{} {}", subject.unwrap_or(""), description.unwrap_or(""))
}

/// The tenant's past tickets most like `text`, best first, without
/// `ticket_id` itself.
pub async fn similar_tickets(
    store: &dyn Store,
    tenant_id: &str,
    ticket_id: &str,
    text: &str,
    limit: usize,
) -> Result<Vec<SimilarTicket>, StoreError> {
    let hits = store
        .search_documents(tenant_id, DocKind::Ticket, text, limit, Some(ticket_id))
        .await?;
    Ok(hits
        .into_iter()
        .filter(|h| h.similarity >= MIN_TICKET_SIMILARITY)
        .map(|h| SimilarTicket {
            summary: (!h.doc.body.is_empty()).then(|| h.doc.body.chars().take(300).collect()),
            resolution: (!h.doc.extra.is_empty()).then(|| h.doc.extra.clone()),
            status: h.doc.status.unwrap_or_else(|| "success".to_string()),
            similarity: (h.similarity * 1000.0).round() / 1000.0,
            subject: (!h.doc.title.is_empty()).then_some(h.doc.title),
            ticket_id: h.doc.doc_id,
        })
        .collect())
}

/// What the record stage indexes for a finished ticket. We get no
/// resolution events from ServiceDesk Plus, so the resolution is the LLM's
/// prose in the note Ticketflow posted (its summary, cause and steps,
/// without the heading and the context sections), as plain text, cut to
/// [`RESOLUTION_CHARS`]; a fallback note has none; text that is not a
/// Ticketflow note (a resolution from elsewhere) is kept whole.
pub fn ticket_document(
    ticket_id: &str,
    subject: Option<&str>,
    description: Option<&str>,
    note_html: Option<&str>,
    status: &str,
) -> SearchDoc {
    SearchDoc {
        doc_id: ticket_id.to_string(),
        title: subject.unwrap_or("").to_string(),
        body: description.unwrap_or("").chars().take(2000).collect(),
        extra: note_html
            .and_then(crate::stages::synthesize::prose_of)
            .map(|n| plain_text(n).chars().take(RESOLUTION_CHARS).collect())
            .unwrap_or_default(),
        url: None,
        status: Some(status.to_string()),
    }
}

/// Articles the tenant imported that match `text`, best first, with their
/// similarity (share of the best possible score).
pub async fn imported_articles(
    store: &dyn Store,
    tenant_id: &str,
    text: &str,
    limit: usize,
) -> Result<Vec<(KbArticle, f64)>, StoreError> {
    let hits = store
        .search_documents(tenant_id, DocKind::Article, text, limit, None)
        .await?;
    Ok(hits
        .into_iter()
        .filter(|h| h.similarity >= MIN_ARTICLE_SIMILARITY)
        .map(|h| {
            (
                KbArticle {
                    id: h.doc.doc_id,
                    title: h.doc.title,
                    url: h.doc.url,
                    snippet: (!h.doc.body.is_empty()).then(|| h.doc.body.chars().take(300).collect()),
                    source: "imported".to_string(),
                },
                h.similarity,
            )
        })
        .collect())
}

/// The share of the query's distinct terms an article's title (counted
/// twice) and snippet contain: how ServiceDesk Plus's answers, which come
/// without a score, are ranked against imported articles.
pub fn overlap(query: &str, article: &KbArticle) -> f64 {
    let q: HashSet<String> = analyze(query).into_iter().collect();
    if q.is_empty() {
        return 0.0;
    }
    let title: HashSet<String> = analyze(&article.title).into_iter().collect();
    let snippet: HashSet<String> = analyze(article.snippet.as_deref().unwrap_or("")).into_iter().collect();
    let score: f64 = q
        .iter()
        .map(|t| {
            if title.contains(t) {
                1.0
            } else if snippet.contains(t) {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    score / q.len() as f64
}

/// ServiceDesk Plus's articles and the imported ones in one list: best
/// first by similarity (SDP's by [`overlap`]), the same title only once
/// (SDP's copy wins a tie), at most `limit`.
pub fn merge_articles(
    query: &str,
    sdp: Vec<KbArticle>,
    imported: Vec<(KbArticle, f64)>,
    limit: usize,
) -> Vec<KbArticle> {
    let mut all: Vec<(KbArticle, f64)> = sdp
        .into_iter()
        .map(|a| {
            let s = overlap(query, &a);
            (a, s)
        })
        .chain(imported)
        .collect();
    // Stable: on equal scores SDP's (listed first) stay first.
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut seen = HashSet::new();
    all.into_iter()
        .filter(|(a, _)| seen.insert(a.title.trim().to_lowercase()))
        .map(|(a, _)| a)
        .take(limit)
        .collect()
}

/// What the inventory says about a ticket: its assets as IP references
/// (source `inventory`) and the host names the ticket mentions (every
/// fully qualified name, and each machine-like word the inventory knows).
pub async fn inventory_lookup(
    store: &dyn Store,
    tenant_id: &str,
    text: &str,
    ips: &[String],
) -> Result<(Vec<IpReference>, Vec<String>), StoreError> {
    let fqdns = hostnames(text);
    let candidates = host_candidates(text, MAX_HOST_CANDIDATES);
    let keys: Vec<String> = ips
        .iter()
        .cloned()
        .chain(fqdns.iter().cloned())
        .chain(candidates.iter().cloned())
        .collect();
    let assets = if keys.is_empty() {
        Vec::new()
    } else {
        store.find_assets(tenant_id, &keys).await?
    };
    let known: HashSet<String> = assets.iter().flat_map(InventoryAsset::lookup_keys).collect();
    let mut found = fqdns;
    for c in candidates {
        if known.contains(&c) && !found.iter().any(|f| f == &c || f.split('.').next() == Some(c.as_str())) {
            found.push(c);
        }
    }
    let refs = assets
        .into_iter()
        .map(|a| IpReference {
            ip: a.ip.unwrap_or_default(),
            asset_name: a.name,
            asset_type: a.asset_type,
            owner: a.owner,
            site: a.site,
            hostname: a.hostname,
            source: "inventory".to_string(),
        })
        .collect();
    Ok((refs, found))
}

/// SDP's assets first, then inventory assets SDP did not name.
pub fn merge_assets(sdp: Vec<IpReference>, inventory: Vec<IpReference>) -> Vec<IpReference> {
    let mut seen: HashSet<String> = sdp.iter().map(|r| r.asset_name.to_lowercase()).collect();
    let mut out = sdp;
    out.extend(
        inventory
            .into_iter()
            .filter(|r| seen.insert(r.asset_name.to_lowercase())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(id: &str, title: &str, source: &str) -> KbArticle {
        KbArticle {
            id: id.into(),
            title: title.into(),
            url: None,
            snippet: None,
            source: source.into(),
        }
    }

    #[test]
    fn articles_merge_by_score_and_title_once() {
        let q = "Outlook crashes opening shared calendar";
        let merged = merge_articles(
            q,
            vec![
                article("s1", "Printer setup", "sdp"),
                article("s2", "Outlook calendar crashes", "sdp"),
            ],
            vec![
                (article("i1", "Outlook calendar crashes", "imported"), 0.9),
                (article("i2", "Shared mailbox permissions", "imported"), 0.3),
            ],
            3,
        );
        let ids: Vec<&str> = merged.iter().map(|a| a.id.as_str()).collect();
        // i1 (0.9) > s2 (3 of 5 terms = 0.6) > i2 (0.3) > s1 (0); s2's title
        // equals i1's, so it is dropped.
        assert_eq!(ids, ["i1", "i2", "s1"]);
    }

    #[test]
    fn resolution_is_the_notes_plain_text_cut_short() {
        let long = format!(
            "<p><b>Ticketflow summary</b></p><p>Reset the VPN profile.</p>{}<p><b>Similar tickets</b></p><p>None found.</p>",
            "<li>step</li>".repeat(200)
        );
        let d = ticket_document("7", Some("VPN"), None, Some(&long), "success");
        assert!(d.extra.starts_with("Reset the VPN profile. step"), "{}", d.extra);
        assert_eq!(d.extra.chars().count(), RESOLUTION_CHARS);
        assert_eq!(d.status.as_deref(), Some("success"));
        let short = "<p><b>Ticketflow summary</b></p><p><b>Summary:</b> Re-seated the cable.</p><p><b>Similar tickets</b></p><p>#12 VPN</p>";
        let d = ticket_document("8", Some("VPN"), None, Some(short), "success");
        assert_eq!(
            d.extra, "Summary: Re-seated the cable.",
            "no heading, no context sections"
        );
        let fallback =
            "<p><b>Ticketflow context</b> (automatic summary unavailable: x)</p><p><b>Similar tickets</b></p>";
        let d = ticket_document("9", Some("VPN"), None, Some(fallback), "fallback");
        assert_eq!(d.extra, "", "a fallback note has no resolution");
        let d = ticket_document(
            "10",
            Some("VPN"),
            None,
            Some("Re-issued the client certificate."),
            "success",
        );
        assert_eq!(
            d.extra, "Re-issued the client certificate.",
            "a resolution from elsewhere is kept"
        );
    }

    #[test]
    fn sdp_assets_win_over_the_inventory_copy() {
        let r = |name: &str, source: &str| IpReference {
            ip: "10.0.0.1".into(),
            asset_name: name.into(),
            asset_type: None,
            owner: None,
            site: None,
            hostname: None,
            source: source.into(),
        };
        let m = merge_assets(
            vec![r("WEB-01", "sdp")],
            vec![r("web-01", "inventory"), r("db-02", "inventory")],
        );
        assert_eq!(
            m.iter()
                .map(|r| (r.asset_name.as_str(), r.source.as_str()))
                .collect::<Vec<_>>(),
            [("WEB-01", "sdp"), ("db-02", "inventory")]
        );
    }
}
