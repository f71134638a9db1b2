//! The versioned prompt (`processors/prompts/<version>/`) and its token
//! budget.
//!
//! The prompt must fit `LLM_MAX_PROMPT_TOKENS` whatever the ticket: a 2 MB
//! description must not fail the call. Tokens are estimated
//! conservatively (a token per three bytes of UTF-8: English text runs near
//! four characters a token, CJK near one character of three bytes). What
//! goes first when the budget is short: the description beyond a useful
//! head, then the least relevant context (the tail of the longest list:
//! similar tickets, articles and assets come ranked), then the rest of the
//! description. The subject always stays. The prompt then says what was
//! cut, so the model does not take a shortened ticket for the whole story.

use schemas::GatheredContext;

/// Recorded with every LLM-written note (history `llm.prompt_version`).
/// Bump it, and add `processors/prompts/<new>/`, when the templates change.
pub const PROMPT_VERSION: &str = "v1";

const SYSTEM: &str = include_str!("../../../prompts/v1/system.txt");
const USER: &str = include_str!("../../../prompts/v1/user.txt");

/// Default of `LLM_MAX_PROMPT_TOKENS`.
pub const DEFAULT_MAX_PROMPT_TOKENS: usize = 6000;
/// Bytes of description kept before context is dropped for it.
const MIN_DESCRIPTION_BYTES: usize = 1500;
/// Longest subject kept (it is never dropped, but it can be absurd).
const MAX_SUBJECT_BYTES: usize = 1000;
/// Longest text of one context item (a summary, a resolution, a snippet).
const MAX_ITEM_TEXT_BYTES: usize = 400;
/// Room kept for the line that says what was cut.
const CUT_NOTE_RESERVE: usize = 400;

/// A prompt ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
    /// What was cut to fit the budget (`None`: nothing).
    pub cut: Option<String>,
}

impl Prompt {
    pub fn estimated_tokens(&self) -> usize {
        estimate_tokens(&self.system) + estimate_tokens(&self.user)
    }
}

/// A conservative token estimate: one token per three bytes of UTF-8.
pub fn estimate_tokens(s: &str) -> usize {
    s.len().div_ceil(3)
}

/// `s` cut to at most `max` bytes on a character boundary.
fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One line of text: whitespace runs (newlines too) become one space, and
/// at most `max` bytes, marked when cut.
fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.len() <= max {
        flat
    } else {
        format!("{}…", head(&flat, max.saturating_sub(3)))
    }
}

struct Parts {
    header: String,
    description: String,
    similar: Vec<String>,
    kb: Vec<String>,
    assets: Vec<String>,
    unavailable: Option<String>,
}

fn parts(c: &GatheredContext) -> Parts {
    let r = &c.request;
    let mut header = format!("Ticket #{}\n", c.meta.ticket_id);
    for (k, v) in [
        ("Subject", &r.subject),
        ("Priority", &r.priority),
        ("Category", &r.category),
        ("Site", &r.site),
        ("Requester", &r.requester_name),
        ("Status", &r.status),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
            header.push_str(&format!("{k}: {}\n", one_line(v, MAX_SUBJECT_BYTES)));
        }
    }
    let similar = c
        .similar_tickets
        .iter()
        .map(|s| {
            let mut l = format!(
                "- #{} ({:.0}% similar, {}): {}",
                one_line(&s.ticket_id, 40),
                s.similarity * 100.0,
                one_line(&s.status, 40),
                one_line(s.subject.as_deref().unwrap_or("(no subject)"), MAX_ITEM_TEXT_BYTES)
            );
            match (&s.resolution, &s.summary) {
                (Some(res), _) => l.push_str(&format!(". Resolution: {}", one_line(res, MAX_ITEM_TEXT_BYTES))),
                (None, Some(sum)) => l.push_str(&format!(". Earlier note: {}", one_line(sum, MAX_ITEM_TEXT_BYTES))),
                (None, None) => {}
            }
            l
        })
        .collect();
    let kb = c
        .kb_articles
        .iter()
        .map(|k| {
            let mut l = format!(
                "- KB {}: {}",
                one_line(&k.id, 60),
                one_line(&k.title, MAX_ITEM_TEXT_BYTES)
            );
            if let Some(snippet) = k.snippet.as_deref().filter(|s| !s.trim().is_empty()) {
                l.push_str(&format!(" — {}", one_line(snippet, MAX_ITEM_TEXT_BYTES)));
            }
            l
        })
        .collect();
    let mut assets: Vec<String> = c
        .ip_references
        .iter()
        .map(|a| {
            let at = match a.hostname.as_deref() {
                Some(h) if !a.ip.is_empty() => format!("{} / {}", a.ip, h),
                Some(h) => h.to_string(),
                None => a.ip.clone(),
            };
            format!(
                "- Asset {} ({}) at {}, owner {}, site {}",
                one_line(&a.asset_name, 120),
                one_line(a.asset_type.as_deref().unwrap_or("unknown type"), 80),
                one_line(&at, 200),
                one_line(a.owner.as_deref().unwrap_or("unknown"), 120),
                one_line(a.site.as_deref().unwrap_or("unknown"), 120)
            )
        })
        .collect();
    for ip in &c.ips_found {
        if !c.ip_references.iter().any(|a| a.ip == *ip) {
            assets.push(format!("- IP {}: not in the asset inventory", one_line(ip, 60)));
        }
    }
    for h in &c.hostnames_found {
        if !super::note::host_known(c, h) {
            assets.push(format!("- Host {}: not in the asset inventory", one_line(h, 120)));
        }
    }
    let failed: Vec<&str> = c.sources.iter().filter(|s| !s.ok).map(|s| s.source.as_str()).collect();
    Parts {
        header,
        description: r.description.clone().unwrap_or_default(),
        similar,
        kb,
        assets,
        unavailable: (!failed.is_empty()).then(|| format!("Context sources unavailable: {}", failed.join(", "))),
    }
}

fn list(lines: &[String], total: usize, none: &str) -> String {
    if total == 0 {
        return none.to_string();
    }
    let mut s = lines.join("\n");
    if lines.len() < total {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(&format!("({} more left out for length)", total - lines.len()));
    }
    s
}

fn render(p: &Parts, description: &str, keep: [usize; 3], notes: &str) -> String {
    let description = if p.description.trim().is_empty() {
        "(none given)"
    } else if description.is_empty() {
        "(left out for length)"
    } else {
        description
    };
    let similar = list(&p.similar[..keep[0]], p.similar.len(), "(none found)");
    let kb = list(&p.kb[..keep[1]], p.kb.len(), "(none found)");
    let assets = list(
        &p.assets[..keep[2]],
        p.assets.len(),
        "(no IP address or host name mentioned)",
    );
    fill(
        USER,
        &[
            ("ticket", p.header.trim_end()),
            ("description", description.trim_end()),
            ("similar_tickets", &similar),
            ("kb_articles", &kb),
            ("assets", &assets),
            ("notes", notes),
        ],
    )
}

/// The template with each `{{name}}` replaced, in one pass over the
/// template: text put in (a ticket's own words) is never searched for
/// placeholders, so a description containing `{{notes}}` stays as written.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match values.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    out
}

fn lines_bytes(lines: &[String]) -> usize {
    lines.iter().map(|l| l.len() + 1).sum()
}

/// The system and user prompt for `c`, within `max_tokens` (estimated).
pub fn build_prompt(c: &GatheredContext, max_tokens: usize) -> Prompt {
    let p = parts(c);
    let mut notes = p.unavailable.clone().map(|u| format!("\n{u}")).unwrap_or_default();
    let all = [p.similar.len(), p.kb.len(), p.assets.len()];
    let system = SYSTEM.trim_end().to_string();
    let full = render(&p, &p.description, all, &notes);
    let budget = max_tokens.saturating_mul(3);
    if estimate_tokens(&system) + estimate_tokens(&full) <= max_tokens {
        return Prompt {
            system,
            user: full,
            cut: None,
        };
    }
    // Bytes left for the description and the context lists.
    let frame = system.len() + render(&p, "", [0, 0, 0], &notes).len() + CUT_NOTE_RESERVE;
    let available = budget.saturating_sub(frame);
    let context = |keep: [usize; 3]| {
        lines_bytes(&p.similar[..keep[0]]) + lines_bytes(&p.kb[..keep[1]]) + lines_bytes(&p.assets[..keep[2]])
    };
    let mut keep = all;
    let desc_len = p.description.len();
    let mut desc_cap = available.saturating_sub(context(keep));
    if desc_cap < desc_len.min(MIN_DESCRIPTION_BYTES) {
        // Keep a useful head of the description; drop the least relevant
        // context for it, one item at a time from the longest list.
        desc_cap = desc_len.min(MIN_DESCRIPTION_BYTES).min(available);
        while context(keep) > available - desc_cap {
            let longest = (0..3).max_by_key(|&i| (keep[i], 2 - i)).expect("three lists");
            if keep[longest] == 0 {
                break;
            }
            keep[longest] -= 1;
        }
        desc_cap = available.saturating_sub(context(keep)).min(desc_len);
    }
    let description = head(&p.description, desc_cap);
    let mut said = Vec::new();
    if description.len() < desc_len {
        said.push(format!(
            "the description was cut from {} to {} characters",
            p.description.chars().count(),
            description.chars().count()
        ));
    }
    for (i, what) in ["similar tickets", "knowledge-base articles", "assets"]
        .iter()
        .enumerate()
    {
        if keep[i] < all[i] {
            said.push(format!("{} of {} {what} were left out", all[i] - keep[i], all[i]));
        }
    }
    if said.is_empty() {
        said.push("the ticket's fields were shortened".to_string());
    }
    let cut = said.join("; ");
    notes.push_str(&format!(
        "\nNote: this prompt was shortened to fit its size budget: {cut}. Base your answer on what is shown and say when the missing part may matter."
    ));
    let mut user = render(&p, description, keep, &notes);
    // A frame alone over the budget (a tiny budget): cut the user prompt
    // itself; the header with the subject comes first and survives.
    let room = max_tokens.saturating_sub(estimate_tokens(&system)) * 3;
    if user.len() > room {
        user = head(&user, room).to_string();
    }
    Prompt {
        system,
        user,
        cut: Some(cut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::synthesize::fixtures::context;

    #[test]
    fn a_small_ticket_is_sent_whole_with_its_context() {
        let p = build_prompt(&context("It drops at :00.", 2), DEFAULT_MAX_PROMPT_TOKENS);
        assert!(p.cut.is_none());
        assert!(p.system.contains("JSON object"));
        for want in [
            "Ticket #4711",
            "Subject: VPN drops every hour",
            "It drops at :00.",
            "- #100 (90% similar, resolved): VPN disconnects 0. Resolution: Renewed the client certificate",
            "- KB KB-7: VPN client certificates — Renew yearly",
            "- Asset vpn-gw-1 (Router) at 10.0.0.5 / vpn-gw-1.corp, owner NetOps, site HQ",
            "- IP 10.0.0.9: not in the asset inventory",
        ] {
            assert!(p.user.contains(want), "{want} in\n{}", p.user);
        }
        assert!(!p.user.contains("shortened"));
    }

    #[test]
    fn a_two_megabyte_description_is_cut_to_the_budget_keeping_the_subject() {
        let huge = "The tunnel resets. ".repeat(2 * 1024 * 1024 / 19);
        let p = build_prompt(&context(&huge, 5), 2000);
        assert!(p.estimated_tokens() <= 2000, "{}", p.estimated_tokens());
        assert!(p.user.contains("Subject: VPN drops every hour"));
        assert!(p.user.contains("The tunnel resets."));
        let cut = p.cut.unwrap();
        assert!(cut.contains("description was cut from"), "{cut}");
        assert!(p.user.contains("this prompt was shortened"), "the prompt says so");
        // The budget left room for every context line: none was dropped.
        assert!(p.user.contains("- #104 "), "{}", p.user);
    }

    #[test]
    fn a_tight_budget_drops_the_least_relevant_context_first() {
        let p = build_prompt(&context(&"x".repeat(5000), 40), 1200);
        assert!(p.estimated_tokens() <= 1200, "{}", p.estimated_tokens());
        let cut = p.cut.unwrap();
        assert!(cut.contains("similar tickets were left out"), "{cut}");
        assert!(p.user.contains("- #100 "), "the most similar stays");
        assert!(!p.user.contains("- #139 "), "the least similar goes");
        assert!(p.user.contains("more left out for length"));
        assert!(p.user.contains("Subject: VPN drops every hour"));
        // Even an absurd budget yields a prompt within it, subject first.
        let tiny = build_prompt(&context(&"y".repeat(100_000), 40), 400);
        assert!(tiny.estimated_tokens() <= 400, "{}", tiny.estimated_tokens());
        assert!(tiny.user.starts_with("Ticket #4711\nSubject: VPN drops every hour"));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let p = build_prompt(&context(&"設定が消える".repeat(20_000), 1), 1500);
        assert!(p.estimated_tokens() <= 1500);
        assert!(p.user.contains("設定が消える"));
    }

    #[test]
    fn placeholders_in_ticket_text_are_not_expanded() {
        let t = "Ticket: {{ticket}}\nNotes: {{notes}}\n{{unknown}}";
        let out = fill(t, &[("ticket", "asks for {{notes}} and {{ticket}}"), ("notes", "cut")]);
        assert_eq!(
            out,
            "Ticket: asks for {{notes}} and {{ticket}}\nNotes: cut\n{{unknown}}"
        );
        assert_eq!(fill("no placeholders {{", &[]), "no placeholders {{");
    }
}
