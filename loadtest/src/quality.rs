//! `loadtest --scenario quality`: how good the context search is, measured
//! on a labelled synthetic set.
//!
//! The set ([`corpus`]): three tenants; per tenant, for each of 40 kinds of
//! IT problem, two past tickets (the known duplicates) and two new tickets
//! phrased differently (paraphrases, details, noise such as signatures and
//! machine names), plus background tickets that match nothing; one known
//! article per kind of problem and distractor articles. Generated
//! deterministically (fixed seed): every run measures the same set.
//!
//! Past tickets are indexed and articles imported through the real
//! embedded store, and each new ticket is searched with the functions the
//! context stage calls (`processors::stages::context_search`). The old
//! search runs in the same run as the baseline: the Jaccard scan of the
//! tenant's last 500 history rows (threshold 0.25) for tickets and SDP's
//! "title contains one of the subject's 3 longest words" for articles.
//!
//! Reported per source: recall@5 (share of the known relevant items in the
//! top 5) and MRR@10 (mean of 1 / rank of the first relevant item), and the
//! query time.

pub mod corpus;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use processors::stages::context_search::{imported_articles, similar_tickets, ticket_document, ticket_text};
use serde_json::json;
use sinks::store::{
    ContextCountsRow, DocKind, EmbeddedStore, HistoryRow, HistoryStatus, LlmUsageRow, SearchDoc, Store,
};

use corpus::{Intent, APPS, BACKGROUND, INTENTS, NOISE, PLACES, WHEN, WHO};

/// SplitMix64: a tiny deterministic generator (the set must not change
/// with a dependency's version).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// How large a set to generate.
#[derive(Debug, Clone, Copy)]
pub struct SetSize {
    pub tenants: usize,
    /// Kinds of problem used (at most [`INTENTS`]'s length).
    pub intents: usize,
    pub past_per_intent: usize,
    pub new_per_intent: usize,
    /// Background tickets per tenant.
    pub background: usize,
}

impl SetSize {
    pub const FULL: SetSize = SetSize {
        tenants: 3,
        intents: 40,
        past_per_intent: 2,
        new_per_intent: 2,
        background: 600,
    };
}

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: String,
    pub subject: String,
    pub description: String,
    pub resolution: Option<String>,
}

/// One new ticket with what it should find.
#[derive(Debug, Clone)]
pub struct Query {
    pub tenant: String,
    pub ticket: Ticket,
    pub relevant_tickets: HashSet<String>,
    pub relevant_articles: HashSet<String>,
}

#[derive(Debug, Clone)]
pub struct TenantSet {
    pub tenant: String,
    /// Oldest first.
    pub past: Vec<Ticket>,
    pub articles: Vec<SearchDoc>,
}

#[derive(Debug, Clone)]
pub struct LabelledSet {
    pub tenants: Vec<TenantSet>,
    pub queries: Vec<Query>,
}

fn fill(rng: &mut Rng, template: &str) -> String {
    let mut s = template.to_string();
    while let Some(at) = s.find('{') {
        let Some(end) = s[at..].find('}') else { break };
        let slot = &s[at + 1..at + end];
        let value = match slot {
            "who" => rng.pick(WHO).to_string(),
            "place" => rng.pick(PLACES).to_string(),
            "when" => rng.pick(WHEN).to_string(),
            "app" => rng.pick(APPS).to_string(),
            "dev" => format!("{}-{:04}", rng.pick(&["PC", "LT", "SRV", "WS"]), rng.below(10_000)),
            "ip" => format!("10.{}.{}.{}", rng.below(255), rng.below(255), 1 + rng.below(254)),
            other => other.to_string(),
        };
        s.replace_range(at..at + end + 1, &value);
    }
    s
}

fn noise(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let template = rng.pick(NOISE);
            fill(rng, template)
        })
        .collect()
}

/// A ticket about `intent`: one of its phrasings, one or two of its
/// details, up to two noise sentences, in a random order of details.
fn intent_ticket(rng: &mut Rng, id: String, intent: &Intent) -> Ticket {
    let template = rng.pick(intent.subjects);
    let subject = fill(rng, template);
    let mut parts: Vec<String> = Vec::new();
    let first = rng.below(intent.details.len());
    parts.push(fill(rng, intent.details[first]));
    if rng.below(2) == 0 && intent.details.len() > 1 {
        let second = (first + 1 + rng.below(intent.details.len() - 1)) % intent.details.len();
        parts.push(fill(rng, intent.details[second]));
    }
    let n = rng.below(3);
    parts.extend(noise(rng, n));
    Ticket {
        id,
        subject,
        description: parts.join(" "),
        resolution: None,
    }
}

fn background_ticket(rng: &mut Rng, id: String) -> Ticket {
    let subject = rng.pick(BACKGROUND).to_string();
    let n = 1 + rng.below(2);
    let mut parts = vec![format!("{} for {} in {}.", subject, rng.pick(WHO), rng.pick(PLACES))];
    parts.extend(noise(rng, n));
    Ticket {
        id,
        subject,
        description: parts.join(" "),
        resolution: Some("Done as requested.".into()),
    }
}

/// The labelled set of `size`, always the same for the same size.
pub fn generate(size: SetSize) -> LabelledSet {
    let mut rng = Rng(0x7469_636b_6574_666c);
    let intents = &INTENTS[..size.intents.min(INTENTS.len())];
    let mut tenants = Vec::new();
    let mut queries = Vec::new();
    for (n, tenant) in TENANTS.iter().take(size.tenants).enumerate() {
        // Ticket numbers differ between tenants, so a result from another
        // tenant would show.
        let base = (n + 1) * 1_000_000;
        let mut past = Vec::new();
        let mut relevant: HashMap<&str, HashSet<String>> = HashMap::new();
        for (i, intent) in intents.iter().enumerate() {
            for p in 0..size.past_per_intent {
                let mut t = intent_ticket(&mut rng, format!("{}", base + 10_000 + i * 10 + p), intent);
                t.resolution = Some(intent.resolution.to_string());
                relevant.entry(intent.key).or_default().insert(t.id.clone());
                past.push(t);
            }
        }
        for b in 0..size.background {
            past.push(background_ticket(&mut rng, format!("{}", base + 50_000 + b)));
        }
        // Shuffle into one history (Fisher-Yates): duplicates are spread over time.
        for i in (1..past.len()).rev() {
            let j = rng.below(i + 1);
            past.swap(i, j);
        }
        let mut articles: Vec<SearchDoc> = intents
            .iter()
            .enumerate()
            .map(|(i, intent)| SearchDoc {
                doc_id: format!("{tenant}-KB-{i}"),
                title: intent.article.0.to_string(),
                body: intent.article.1.to_string(),
                extra: String::new(),
                url: Some(format!("https://kb.{tenant}.example/{i}")),
                status: None,
            })
            .collect();
        for (b, title) in BACKGROUND.iter().enumerate() {
            articles.push(SearchDoc {
                doc_id: format!("{tenant}-KB-BG-{b}"),
                title: format!("How to: {title}"),
                body: format!("Raise a service request for: {title}. The service desk handles it within two days."),
                extra: String::new(),
                url: None,
                status: None,
            });
        }
        for (i, intent) in intents.iter().enumerate() {
            for q in 0..size.new_per_intent {
                let t = intent_ticket(&mut rng, format!("{}", base + 90_000 + i * 10 + q), intent);
                queries.push(Query {
                    tenant: tenant.to_string(),
                    ticket: t,
                    relevant_tickets: relevant[intent.key].clone(),
                    relevant_articles: HashSet::from([format!("{tenant}-KB-{i}")]),
                });
            }
        }
        tenants.push(TenantSet {
            tenant: tenant.to_string(),
            past,
            articles,
        });
    }
    LabelledSet { tenants, queries }
}

/// Share of `relevant` in the first `k` of `ranked`.
pub fn recall_at(k: usize, ranked: &[String], relevant: &HashSet<String>) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked.iter().take(k).filter(|id| relevant.contains(*id)).count();
    found as f64 / relevant.len() as f64
}

/// 1 / rank of the first relevant item in the first `k`, else 0.
pub fn reciprocal_rank(k: usize, ranked: &[String], relevant: &HashSet<String>) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|id| relevant.contains(id))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64)
}

/// Recall@5 and MRR@10 over queries, with query times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub queries: usize,
    pub recall_at_5: f64,
    pub mrr_at_10: f64,
    /// Mean number of results in the top 3 (what a note shows) that are
    /// not relevant.
    pub false_in_top_3: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

impl Metrics {
    /// `results`: per query, the ranked ids, the relevant ids, the time taken (ms).
    pub fn of(results: &[(Vec<String>, HashSet<String>, f64)]) -> Metrics {
        let n = results.len();
        if n == 0 {
            return Metrics::default();
        }
        let mut times: Vec<f64> = results.iter().map(|r| r.2).collect();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Metrics {
            queries: n,
            recall_at_5: results.iter().map(|(r, rel, _)| recall_at(5, r, rel)).sum::<f64>() / n as f64,
            mrr_at_10: results
                .iter()
                .map(|(r, rel, _)| reciprocal_rank(10, r, rel))
                .sum::<f64>()
                / n as f64,
            false_in_top_3: results
                .iter()
                .map(|(r, rel, _)| r.iter().take(3).filter(|id| !rel.contains(*id)).count() as f64)
                .sum::<f64>()
                / n as f64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"queries": self.queries, "recall_at_5": self.recall_at_5, "mrr_at_10": self.mrr_at_10,
               "false_in_top_3": self.false_in_top_3,
               "query_ms_p50": self.p50_ms, "query_ms_p95": self.p95_ms})
    }
}

/// The four measurements of one run.
#[derive(Debug, Clone)]
pub struct QualityReport {
    pub past_tickets: usize,
    pub articles: usize,
    pub tickets: Metrics,
    pub tickets_baseline: Metrics,
    pub articles_found: Metrics,
    pub articles_baseline: Metrics,
    /// Per query: (tenant, ticket id, ranked similar ids, ranked article ids).
    pub rankings: Vec<(String, String, Vec<String>, Vec<String>)>,
}

/// The similar-ticket search before the index (frozen copy): Jaccard of
/// word sets over the tenant's last 500 history rows, at least 0.25.
mod baseline {
    use std::collections::HashSet;

    const STOPWORDS: &[&str] = &[
        "the", "and", "for", "with", "that", "this", "from", "have", "has", "not", "are", "was", "were", "can",
        "cannot", "could", "would", "should", "our", "your", "their", "its", "into", "when", "since", "after",
        "before", "about", "please", "help", "issue", "problem", "request", "user", "users", "working", "does",
        "doesn", "any", "all", "but", "you", "they", "there", "been", "being", "will", "just", "also", "today",
        "again",
    ];
    pub const HISTORY_SCAN: u32 = 500;
    pub const SIMILAR_MIN: f64 = 0.25;

    pub fn tokens(text: &str) -> HashSet<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .map(str::to_lowercase)
            .filter(|w| w.len() >= 3 && !STOPWORDS.contains(&w.as_str()) && !w.chars().all(|c| c.is_ascii_digit()))
            .collect()
    }

    pub fn similarity(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
        if a.is_empty() || b.is_empty() {
            return 0.0;
        }
        a.intersection(b).count() as f64 / (a.len() + b.len()) as f64 * 2.0
    }

    /// The 3 longest distinct words of the subject (what was sent to SDP's
    /// solutions search as "title contains", OR-ed).
    pub fn keywords(subject: &str, n: usize) -> Vec<String> {
        let mut words: Vec<String> = tokens(subject).into_iter().collect();
        words.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        words.truncate(n);
        words
    }
}

fn history_row(tenant: &str, t: &Ticket, at_ms: i64) -> HistoryRow {
    HistoryRow {
        tenant_id: tenant.to_string(),
        job_id: format!("job-{}", t.id),
        ticket_id: t.id.clone(),
        correlation_id: format!("c-{}", t.id),
        status: HistoryStatus::Success,
        method: Some("llm".into()),
        error_message: None,
        failed_stage: None,
        subject: Some(t.subject.clone()),
        description: Some(t.description.clone()),
        note_text: t.resolution.clone(),
        note_id: None,
        counts: ContextCountsRow::default(),
        timings: HashMap::new(),
        received_at_ms: at_ms,
        completed_at_ms: at_ms,
        llm: LlmUsageRow::default(),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Loads `set` into `store` (index, imported articles, and history rows
/// for the baseline) and measures every query both ways.
pub async fn measure(store: &dyn Store, set: &LabelledSet) -> anyhow::Result<QualityReport> {
    let t0 = sinks::now_ms() - 86_400_000;
    for ts in &set.tenants {
        let docs: Vec<SearchDoc> = ts
            .past
            .iter()
            .map(|t| {
                ticket_document(
                    &t.id,
                    Some(&t.subject),
                    Some(&t.description),
                    t.resolution.as_deref(),
                    "success",
                )
            })
            .collect();
        store.index_documents(&ts.tenant, DocKind::Ticket, &docs).await?;
        store
            .index_documents(&ts.tenant, DocKind::Article, &ts.articles)
            .await?;
        for (i, t) in ts.past.iter().enumerate() {
            store
                .put_history(&history_row(&ts.tenant, t, t0 + i as i64 * 1000))
                .await?;
        }
    }
    let mut tickets = Vec::new();
    let mut tickets_old = Vec::new();
    let mut articles = Vec::new();
    let mut articles_old = Vec::new();
    let mut rankings = Vec::new();
    let titles: HashMap<&str, &Vec<SearchDoc>> = set.tenants.iter().map(|t| (t.tenant.as_str(), &t.articles)).collect();
    for q in &set.queries {
        let text = ticket_text(Some(&q.ticket.subject), Some(&q.ticket.description));

        let started = Instant::now();
        let found = similar_tickets(store, &q.tenant, &q.ticket.id, &text, 10).await?;
        let ranked: Vec<String> = found.into_iter().map(|s| s.ticket_id).collect();
        tickets.push((ranked.clone(), q.relevant_tickets.clone(), ms(started)));

        let started = Instant::now();
        let kb = imported_articles(store, &q.tenant, &text, 10).await?;
        let ranked_kb: Vec<String> = kb.into_iter().map(|(a, _)| a.id).collect();
        articles.push((ranked_kb.clone(), q.relevant_articles.clone(), ms(started)));
        rankings.push((q.tenant.clone(), q.ticket.id.clone(), ranked, ranked_kb));

        // Baseline: what the context stage did before the index.
        let started = Instant::now();
        let mine = baseline::tokens(&text);
        let rows = store.recent_history(&q.tenant, baseline::HISTORY_SCAN).await?;
        let mut scored: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.ticket_id != q.ticket.id)
            .map(|r| {
                let theirs = baseline::tokens(&format!(
                    "{} {}",
                    r.subject.as_deref().unwrap_or(""),
                    r.description.as_deref().unwrap_or("")
                ));
                (r.ticket_id.clone(), baseline::similarity(&mine, &theirs))
            })
            .filter(|(_, s)| *s >= baseline::SIMILAR_MIN)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let ranked_old: Vec<String> = scored.into_iter().take(10).map(|(id, _)| id).collect();
        tickets_old.push((ranked_old, q.relevant_tickets.clone(), ms(started)));

        let started = Instant::now();
        let kws = baseline::keywords(&q.ticket.subject, 3);
        let ranked_old_kb: Vec<String> = titles[q.tenant.as_str()]
            .iter()
            .filter(|a| {
                let title = a.title.to_lowercase();
                kws.iter().any(|k| title.contains(k.as_str()))
            })
            .take(10)
            .map(|a| a.doc_id.clone())
            .collect();
        articles_old.push((ranked_old_kb, q.relevant_articles.clone(), ms(started)));
    }
    Ok(QualityReport {
        past_tickets: set.tenants.iter().map(|t| t.past.len()).sum(),
        articles: set.tenants.iter().map(|t| t.articles.len()).sum(),
        tickets: Metrics::of(&tickets),
        tickets_baseline: Metrics::of(&tickets_old),
        articles_found: Metrics::of(&articles),
        articles_baseline: Metrics::of(&articles_old),
        rankings,
    })
}

/// The scenario: generates the full set, measures it on a fresh embedded
/// store, prints the table and writes `report.json` under `out`.
pub async fn run(out: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&dir.path().join("store.db")).await?;
    let set = generate(SetSize::FULL);
    let started = Instant::now();
    let r = measure(&store, &set).await?;
    println!(
        "context quality · {} tenants · {} past tickets · {} articles · {} new tickets (each with 2 known duplicates and 1 known article) · {:.1} s",
        set.tenants.len(),
        r.past_tickets,
        r.articles,
        set.queries.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<44} {:>9} {:>8} {:>13} {:>12}",
        "source", "recall@5", "MRR@10", "false in top3", "p50/p95 ms"
    );
    for (name, m) in [
        ("similar tickets: BM25 index", &r.tickets),
        ("similar tickets: old scan of last 500 rows", &r.tickets_baseline),
        ("articles: BM25 index (imported)", &r.articles_found),
        ("articles: old title-contains-keyword", &r.articles_baseline),
    ] {
        println!(
            "{:<44} {:>9.3} {:>8.3} {:>13.2} {:>5.1}/{:<5.1}",
            name, m.recall_at_5, m.mrr_at_10, m.false_in_top_3, m.p50_ms, m.p95_ms
        );
    }
    std::fs::create_dir_all(out)?;
    let report = json!({
        "scenario": "quality",
        "tenants": set.tenants.len(),
        "past_tickets": r.past_tickets,
        "articles": r.articles,
        "new_tickets": set.queries.len(),
        "similar_tickets": {"bm25_index": r.tickets.json(), "baseline_scan_last_500": r.tickets_baseline.json()},
        "articles_found": {"bm25_index": r.articles_found.json(), "baseline_title_contains": r.articles_baseline.json()},
        "rankings": r.rankings.iter().zip(&set.queries).map(|((tenant, id, similar, articles), q)| json!({
            "tenant": tenant, "ticket": id, "subject": q.ticket.subject,
            "similar": similar, "relevant_tickets": q.relevant_tickets,
            "articles": articles, "relevant_articles": q.relevant_articles,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("report: {}", out.join("report.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Worked by hand. Query 1: relevant {a, b}; ranked [x, a, y, z, w, b]:
    /// recall@5 = 1/2 (b is 6th), RR = 1/2. Query 2: relevant {c}; ranked
    /// [c]: recall 1, RR 1. Query 3: relevant {d}; nothing found: 0, 0.
    /// Means: recall@5 = 1.5/3 = 0.5, MRR = 1.5/3 = 0.5. False in the top 3:
    /// x and y, none, none: 2/3. Times 1, 2, 30 ms: p50 = 2, p95 = 30.
    #[test]
    fn metrics_match_a_hand_computed_example() {
        let results = vec![
            (ids(&["x", "a", "y", "z", "w", "b"]), set(&["a", "b"]), 1.0),
            (ids(&["c"]), set(&["c"]), 30.0),
            (vec![], set(&["d"]), 2.0),
        ];
        assert_eq!(recall_at(5, &results[0].0, &results[0].1), 0.5);
        assert_eq!(recall_at(6, &results[0].0, &results[0].1), 1.0);
        assert_eq!(reciprocal_rank(10, &results[0].0, &results[0].1), 0.5);
        assert_eq!(reciprocal_rank(1, &results[0].0, &results[0].1), 0.0, "beyond k");
        let m = Metrics::of(&results);
        assert_eq!(m.queries, 3);
        assert!((m.recall_at_5 - 0.5).abs() < 1e-12, "{m:?}");
        assert!((m.mrr_at_10 - 0.5).abs() < 1e-12, "{m:?}");
        assert!((m.false_in_top_3 - 2.0 / 3.0).abs() < 1e-12, "{m:?}");
        assert_eq!((m.p50_ms, m.p95_ms), (2.0, 30.0));
    }

    #[test]
    fn the_set_is_deterministic_and_labelled() {
        let a = generate(SetSize::FULL);
        let b = generate(SetSize::FULL);
        assert_eq!(a.queries.len(), 240, "at least 200 labelled new tickets");
        assert_eq!(a.tenants[0].past.len(), 80 + 600);
        for (x, y) in a.queries.iter().zip(&b.queries) {
            assert_eq!(
                (&x.ticket.subject, &x.ticket.description),
                (&y.ticket.subject, &y.ticket.description)
            );
        }
        for q in &a.queries {
            assert_eq!(q.relevant_tickets.len(), 2);
            let ts = a.tenants.iter().find(|t| t.tenant == q.tenant).unwrap();
            for id in &q.relevant_tickets {
                assert!(ts.past.iter().any(|p| &p.id == id), "a duplicate of the same tenant");
            }
            assert!(!q.ticket.subject.contains('{'), "slots filled: {}", q.ticket.subject);
        }
    }

    /// A small set through the real embedded store: every query measured,
    /// and the reported metrics are exactly the metrics of the rankings the
    /// searches returned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_reports_the_metrics_of_its_rankings() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.db")).await.unwrap();
        let set = generate(SetSize {
            tenants: 2,
            intents: 6,
            past_per_intent: 2,
            new_per_intent: 1,
            background: 20,
        });
        let r = measure(&store, &set).await.unwrap();
        assert_eq!(r.tickets.queries, 12);
        assert_eq!(r.rankings.len(), 12);
        let recomputed: Vec<(Vec<String>, HashSet<String>, f64)> = r
            .rankings
            .iter()
            .zip(&set.queries)
            .map(|(rk, q)| (rk.2.clone(), q.relevant_tickets.clone(), 0.0))
            .collect();
        let m = Metrics::of(&recomputed);
        assert_eq!(
            (m.recall_at_5, m.mrr_at_10),
            (r.tickets.recall_at_5, r.tickets.mrr_at_10)
        );
        for (tenant, _, similar, articles) in &r.rankings {
            let own = set.tenants.iter().find(|t| &t.tenant == tenant).unwrap();
            assert!(
                similar.iter().all(|id| own.past.iter().any(|p| &p.id == id)),
                "same tenant only"
            );
            assert!(
                articles.iter().all(|id| id.starts_with(tenant.as_str())),
                "same tenant only"
            );
        }
    }
}
