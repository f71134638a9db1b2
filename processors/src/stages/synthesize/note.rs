//! The note a technician reads, as HTML that ServiceDesk Plus renders
//! (`<p>`, `<b>`, `<br>`, `<ol>`/`<ul>`/`<li>`, `<a href>`, `<table>`).
//!
//! The LLM writes only the prose (summary, likely cause, steps). The
//! similar tickets, articles and assets come from the gathered context, so
//! ids and links are exactly what was found, and the fallback note shows
//! the same sections. Every piece of text is escaped; only http(s) links
//! become links.

use schemas::GatheredContext;
use serde_json::Value;

/// Most items shown per section (the context stage ranks them).
const MAX_ROWS: usize = 10;
/// Longest text shown in one table cell or list item.
const MAX_CELL_CHARS: usize = 300;

/// What the LLM answered, read leniently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmAnswer {
    pub summary: String,
    pub likely_cause: Option<String>,
    pub steps: Vec<String>,
    /// Whether the answer was the JSON object asked for (else prose shown
    /// as the summary).
    pub structured: bool,
}

fn text_of(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Object(o) => ["step", "text", "action", "description", "title"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str))
            .map(|s| s.trim().to_string())?,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// A step without the numbering or bullet the model may have added (the
/// note numbers them).
fn bare_step(s: &str) -> String {
    let t = s.trim_start_matches(|c: char| c == '-' || c == '*' || c == '•' || c.is_whitespace());
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits < 3 {
        if let Some(rest) = t[digits..].strip_prefix(['.', ')', ':']) {
            return rest.trim().to_string();
        }
    }
    t.trim().to_string()
}

fn field<'a>(o: &'a serde_json::Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
        .map(|(_, v)| v)
}

/// Reads the model's answer: the JSON object `{summary, likely_cause,
/// steps}` (also inside a code fence or surrounding prose), or else the
/// whole text as the summary — the answer is never lost.
pub fn parse_answer(text: &str) -> LlmAnswer {
    let prose = || LlmAnswer {
        summary: text.trim().to_string(),
        likely_cause: None,
        steps: Vec::new(),
        structured: false,
    };
    let (Some(start), Some(end)) = (text.find('{'), text.rfind('}')) else {
        return prose();
    };
    if end <= start {
        return prose();
    }
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&text[start..=end]) else {
        return prose();
    };
    let summary = field(&o, &["summary"]).and_then(text_of);
    let likely_cause = field(&o, &["likely_cause", "likelyCause", "likely cause", "cause"]).and_then(text_of);
    let steps: Vec<String> = match field(&o, &["steps", "suggested_steps", "next_steps"]) {
        Some(Value::Array(a)) => a.iter().filter_map(text_of).map(|s| bare_step(&s)).collect(),
        Some(Value::String(s)) => s.lines().map(bare_step).collect(),
        _ => Vec::new(),
    };
    let steps: Vec<String> = steps.into_iter().filter(|s| !s.is_empty()).collect();
    if summary.is_none() && likely_cause.is_none() && steps.is_empty() {
        return prose();
    }
    LlmAnswer {
        summary: summary.unwrap_or_default(),
        likely_cause,
        steps,
        structured: true,
    }
}

/// Whether host name `h` from the ticket is one of the assets found: its
/// host name (full, or the short name of a fully qualified one) or its
/// asset name, ignoring case.
pub(super) fn host_known(c: &GatheredContext, h: &str) -> bool {
    let h = h.trim_end_matches('.');
    c.ip_references.iter().any(|a| {
        a.asset_name.eq_ignore_ascii_case(h)
            || a.hostname.as_deref().is_some_and(|n| {
                let n = n.trim_end_matches('.');
                n.eq_ignore_ascii_case(h)
                    || n.split('.').next().is_some_and(|short| short.eq_ignore_ascii_case(h))
                    || h.split('.').next().is_some_and(|short| short.eq_ignore_ascii_case(n))
            })
    })
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped, at most [`MAX_CELL_CHARS`], line breaks kept as `<br>`.
fn cell(s: &str) -> String {
    let s = s.trim();
    let short: String = if s.chars().count() > MAX_CELL_CHARS {
        format!("{}…", s.chars().take(MAX_CELL_CHARS).collect::<String>())
    } else {
        s.to_string()
    };
    multiline(&short)
}

fn multiline(s: &str) -> String {
    escape(s.trim()).replace("\r\n", "\n").replace('\n', "<br>")
}

/// An `href` value for `url` when it is an absolute http(s) URL.
fn href(url: &str) -> Option<String> {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    let ok = (lower.starts_with("https://") || lower.starts_with("http://"))
        && u.len() > "http://".len()
        && !u.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| escape(u))
}

fn heading(n: &mut String, title: &str) {
    n.push_str(&format!("<p><b>{title}</b></p>"));
}

const TABLE: &str = r#"<table border="1" cellpadding="4" cellspacing="0">"#;

fn row(n: &mut String, tag: &str, cells: &[String]) {
    n.push_str("<tr>");
    for c in cells {
        n.push_str(&format!("<{tag}>{c}</{tag}>"));
    }
    n.push_str("</tr>");
}

/// The sections built from the context: similar tickets, articles, assets,
/// and the sources that failed.
pub fn context_sections(c: &GatheredContext) -> String {
    let mut n = String::new();
    heading(&mut n, "Similar tickets");
    if c.similar_tickets.is_empty() {
        n.push_str("<p>None found.</p>");
    } else {
        n.push_str(TABLE);
        row(
            &mut n,
            "th",
            &["Ticket", "Subject", "How it was resolved", "Match"].map(String::from),
        );
        for s in c.similar_tickets.iter().take(MAX_ROWS) {
            let resolved = match s.resolution.as_deref().filter(|r| !r.trim().is_empty()) {
                Some(r) => cell(r),
                None => format!("<i>{}, no resolution recorded</i>", escape(&s.status)),
            };
            row(
                &mut n,
                "td",
                &[
                    format!("#{}", escape(&s.ticket_id)),
                    cell(s.subject.as_deref().unwrap_or("(no subject)")),
                    resolved,
                    format!("{:.0}%", (s.similarity * 100.0).clamp(0.0, 100.0)),
                ],
            );
        }
        n.push_str("</table>");
    }
    heading(&mut n, "Knowledge-base articles");
    if c.kb_articles.is_empty() {
        n.push_str("<p>None found.</p>");
    } else {
        n.push_str("<ul>");
        for k in c.kb_articles.iter().take(MAX_ROWS) {
            let title = cell(&k.title);
            let linked = match k.url.as_deref().and_then(href) {
                Some(h) => format!(r#"<a href="{h}" target="_blank">{title}</a>"#),
                None => title,
            };
            let source = if k.source == "imported" { ", imported" } else { "" };
            n.push_str(&format!("<li>{linked} ({}{source})", escape(&k.id)));
            if let Some(snippet) = k.snippet.as_deref().filter(|s| !s.trim().is_empty()) {
                n.push_str(&format!("<br>{}", cell(snippet)));
            }
            n.push_str("</li>");
        }
        n.push_str("</ul>");
    }
    heading(&mut n, "Affected assets");
    let unknown_ips: Vec<&String> = c
        .ips_found
        .iter()
        .filter(|ip| !c.ip_references.iter().any(|a| a.ip == **ip))
        .collect();
    let unknown_hosts: Vec<&String> = c.hostnames_found.iter().filter(|h| !host_known(c, h)).collect();
    if c.ip_references.is_empty() && unknown_ips.is_empty() && unknown_hosts.is_empty() {
        n.push_str("<p>No IP address or host name mentioned in the ticket.</p>");
    }
    if !c.ip_references.is_empty() {
        n.push_str(TABLE);
        row(
            &mut n,
            "th",
            &["Asset", "IP / host name", "Type", "Owner", "Site"].map(String::from),
        );
        for a in c.ip_references.iter().take(MAX_ROWS) {
            let address = match a.hostname.as_deref().filter(|h| !h.is_empty()) {
                Some(h) if !a.ip.is_empty() => format!("{} / {}", escape(&a.ip), escape(h)),
                Some(h) => escape(h),
                None => escape(&a.ip),
            };
            let dash = |v: &Option<String>| cell(v.as_deref().unwrap_or("—"));
            row(
                &mut n,
                "td",
                &[
                    cell(&a.asset_name),
                    address,
                    dash(&a.asset_type),
                    dash(&a.owner),
                    dash(&a.site),
                ],
            );
        }
        n.push_str("</table>");
    }
    if !unknown_ips.is_empty() || !unknown_hosts.is_empty() {
        let names: Vec<String> = unknown_ips
            .iter()
            .chain(&unknown_hosts)
            .take(MAX_ROWS)
            .map(|s| escape(s))
            .collect();
        n.push_str(&format!("<p>Not in the asset inventory: {}</p>", names.join(", ")));
    }
    let failed: Vec<String> = c
        .sources
        .iter()
        .filter(|s| !s.ok)
        .map(|s| match &s.error {
            Some(e) => format!("{} ({})", escape(&s.source), cell(e)),
            None => escape(&s.source),
        })
        .collect();
    if !failed.is_empty() {
        n.push_str(&format!(
            "<p><i>Context incomplete — sources unavailable: {}</i></p>",
            failed.join(", ")
        ));
    }
    n
}

/// How an LLM note was made, for its footer.
#[derive(Debug, Clone)]
pub struct Provenance<'a> {
    pub model: &'a str,
    pub prompt_version: &'a str,
    /// The stage attempt that got the answer (1 = first try).
    pub attempt: u32,
    /// What was cut from the prompt for its budget.
    pub cut: Option<&'a str>,
}

/// How an LLM note begins.
const LLM_HEADING: &str = "<p><b>Ticketflow summary</b></p>";
/// How a fallback note begins.
const FALLBACK_HEADING: &str = "<p><b>Ticketflow context</b>";
/// Where the context sections begin.
const CONTEXT_HEADING: &str = "<p><b>Similar tickets</b></p>";

/// What of a ticket's note the similar-ticket search keeps as the ticket's
/// resolution: of a note [`llm_note`] wrote, the LLM's prose (summary,
/// likely cause, steps) without the heading and the context sections;
/// nothing of a fallback note (it holds only context, which would echo
/// into every later note); any other text whole (a resolution written
/// elsewhere).
pub fn prose_of(note: &str) -> Option<&str> {
    let text = if let Some(rest) = note.strip_prefix(LLM_HEADING) {
        &rest[..rest.find(CONTEXT_HEADING).unwrap_or(rest.len())]
    } else if note.starts_with(FALLBACK_HEADING) {
        return None;
    } else {
        note
    };
    let text = text.trim();
    (!text.is_empty()).then_some(text)
}

/// The note with the LLM's answer and the context sections.
pub fn llm_note(c: &GatheredContext, a: &LlmAnswer, how: &Provenance<'_>) -> String {
    let mut n = String::from(LLM_HEADING);
    if !a.summary.is_empty() {
        n.push_str(&format!("<p><b>Summary:</b> {}</p>", multiline(&a.summary)));
    }
    if let Some(cause) = &a.likely_cause {
        n.push_str(&format!("<p><b>Likely cause:</b> {}</p>", multiline(cause)));
    }
    if !a.steps.is_empty() {
        n.push_str("<p><b>Suggested steps:</b></p><ol>");
        for s in &a.steps {
            n.push_str(&format!("<li>{}</li>", multiline(s)));
        }
        n.push_str("</ol>");
    }
    n.push_str(&context_sections(c));
    let mut footer = format!(
        "Written by {} (prompt {})",
        escape(how.model),
        escape(how.prompt_version)
    );
    if how.attempt > 1 {
        footer.push_str(&format!(" on attempt {}", how.attempt));
    }
    footer.push_str(" from the context above; check it before acting.");
    if let Some(cut) = how.cut {
        footer.push_str(&format!(" The ticket was shortened for the model: {}.", escape(cut)));
    }
    n.push_str(&format!("<p><small>{footer}</small></p>"));
    n
}

/// The note without the LLM: the ticket's key fields and the same context
/// sections, saying why there is no summary.
pub fn fallback_note(c: &GatheredContext, reason: &str) -> String {
    let mut n = format!(
        "<p><b>Ticketflow context</b> (automatic summary unavailable: {})</p>",
        cell(reason)
    );
    let r = &c.request;
    let fields: Vec<String> = [
        ("Subject", &r.subject),
        ("Priority", &r.priority),
        ("Category", &r.category),
        ("Requester", &r.requester_name),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("<b>{k}:</b> {}", cell(v))))
    .collect();
    if !fields.is_empty() {
        n.push_str(&format!("<p>{}</p>", fields.join("<br>")));
    }
    n.push_str(&context_sections(c));
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::synthesize::fixtures::context;

    fn how() -> Provenance<'static> {
        Provenance {
            model: "sim/model-b",
            prompt_version: "v1",
            attempt: 1,
            cut: None,
        }
    }

    #[test]
    fn json_answers_are_read_leniently() {
        let a = parse_answer(
            "```json\n{\"summary\": \"VPN drops.\", \"likely_cause\": \"Expired cert\", \"steps\": [\"1. Renew it\", {\"step\": \"Reconnect\"}, \"\"]}\n```",
        );
        assert!(a.structured);
        assert_eq!(a.summary, "VPN drops.");
        assert_eq!(a.likely_cause.as_deref(), Some("Expired cert"));
        assert_eq!(a.steps, vec!["Renew it", "Reconnect"]);
        let b = parse_answer(r#"{"Summary": "x", "steps": "- one\n2) two"}"#);
        assert_eq!(
            (b.summary.as_str(), b.steps.clone()),
            ("x", vec!["one".into(), "two".into()])
        );
    }

    #[test]
    fn prose_is_kept_as_the_summary() {
        for text in [
            "Summary: it is the printer.\n1. Restart it",
            "{not json at all}",
            r#"{"unrelated": 1}"#,
        ] {
            let a = parse_answer(text);
            assert!(!a.structured, "{text}");
            assert_eq!(a.summary, text.trim());
        }
        let c = context("d", 1);
        let note = llm_note(&c, &parse_answer("Line one\nLine <two>"), &how());
        assert!(note.contains("Line one<br>Line &lt;two&gt;"), "{note}");
    }

    #[test]
    fn the_note_shows_answer_and_context_sections() {
        let c = context("d", 2);
        let a = parse_answer(r#"{"summary":"S","likely_cause":"C","steps":["A","B"]}"#);
        let note = llm_note(&c, &a, &how());
        for want in [
            "<p><b>Summary:</b> S</p>",
            "<p><b>Likely cause:</b> C</p>",
            "<ol><li>A</li><li>B</li></ol>",
            "<td>#100</td><td>VPN disconnects 0</td><td>Renewed the client certificate</td><td>90%</td>",
            r#"<a href="https://kb.example.test/7" target="_blank">VPN client certificates</a> (KB-7)"#,
            "<td>vpn-gw-1</td><td>10.0.0.5 / vpn-gw-1.corp</td><td>Router</td><td>NetOps</td><td>HQ</td>",
            "Not in the asset inventory: 10.0.0.9",
            "Written by sim/model-b (prompt v1)",
        ] {
            assert!(note.contains(want), "{want} in\n{note}");
        }
        let prose = prose_of(&note).expect("an LLM note has prose");
        assert!(prose.starts_with("<p><b>Summary:</b> S</p>"), "{prose}");
        assert!(!prose.contains("Similar tickets") && !prose.contains("#100"), "{prose}");
        assert_eq!(prose_of(&fallback_note(&c, "LLM down")), None);
        assert_eq!(prose_of(" Replaced the toner. "), Some("Replaced the toner."));
    }

    #[test]
    fn hostile_text_is_escaped_and_only_http_links_are_links() {
        let mut c = context("d", 1);
        c.similar_tickets[0].subject = Some("<script>alert(1)</script>".into());
        c.kb_articles[0].title = "Fix \"quotes\" & <b>tags</b>".into();
        c.kb_articles[0].url = Some("javascript:alert(1)".into());
        c.ip_references[0].asset_name = "<img src=x onerror=alert(1)>".into();
        let mut second = c.kb_articles[0].clone();
        second.url = Some("https://kb.example.test/a?b=1&c=\"x\"".into());
        second.id = "KB-8".into();
        second.source = "imported".into();
        c.kb_articles.push(second);
        let a = parse_answer(r#"{"summary":"<script>x</script>","steps":["<a href='evil'>click</a>"]}"#);
        for note in [
            llm_note(&c, &a, &how()),
            fallback_note(&c, "LLM answered HTTP 401: <bad key>"),
        ] {
            assert!(!note.contains("<script"), "{note}");
            assert!(!note.contains("<img"), "{note}");
            assert!(!note.contains("javascript:"), "{note}");
            assert!(!note.contains("<a href='evil'>"), "{note}");
            assert!(note.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
            assert!(note.contains("Fix &quot;quotes&quot; &amp; &lt;b&gt;tags&lt;/b&gt;"));
            assert!(note.contains(r#"<a href="https://kb.example.test/a?b=1&amp;c=&quot;x&quot;" target="_blank">"#));
            assert!(note.contains("(KB-8, imported)"));
        }
    }

    #[test]
    fn the_fallback_note_carries_the_same_context_and_says_why() {
        let c = context("d", 3);
        let fb = fallback_note(&c, "LLM answered HTTP 401: invalid key");
        assert!(fb.contains("automatic summary unavailable: LLM answered HTTP 401: invalid key"));
        assert!(fb.contains("<b>Subject:</b> VPN drops every hour"));
        assert!(!fb.contains("Summary:") && !fb.contains("Suggested steps"));
        let llm = llm_note(&c, &parse_answer(r#"{"summary":"S"}"#), &how());
        assert!(fb.contains(&context_sections(&c)));
        assert!(llm.contains(&context_sections(&c)));
        let mut empty = context("d", 0);
        empty.kb_articles.clear();
        empty.ip_references.clear();
        empty.ips_found.clear();
        empty.sources.push(schemas::SourceOutcome {
            source: "kb".into(),
            ok: false,
            duration_ms: 5000,
            items: 0,
            error: Some("timed out".into()),
        });
        let s = context_sections(&empty);
        assert_eq!(s.matches("None found.").count(), 2, "{s}");
        assert!(s.contains("No IP address or host name mentioned"));
        assert!(s.contains("sources unavailable: kb (timed out)"));
    }

    #[test]
    fn host_names_match_assets_by_full_or_short_name() {
        let mut c = context("d", 0);
        c.hostnames_found = vec!["VPN-GW-1".into(), "vpn-gw-1.corp".into(), "db-7".into()];
        let s = context_sections(&c);
        assert!(s.contains("Not in the asset inventory: 10.0.0.9, db-7</p>"), "{s}");
    }
}
