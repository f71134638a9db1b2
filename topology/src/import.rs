//! `ticketflow kb import` and `ticketflow assets import`: a tenant's
//! knowledge-base articles and asset inventory, read from a file, checked
//! whole, and written to the store's search index and inventory.
//!
//! A file with any bad entry is refused whole, with every problem listed as
//! `line N: ...` (up to [`MAX_ERRORS`]), so nothing is half-imported.
//! Importing an article id or asset name again replaces it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;
use sinks::store::{DocKind, InventoryAsset, SearchDoc, Store};

/// Problems listed before the rest are summarised.
pub const MAX_ERRORS: usize = 20;

/// Why a file was refused: every bad line found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.problems.iter().take(MAX_ERRORS).map(String::as_str).collect();
        write!(f, "{}", shown.join("; "))?;
        if self.problems.len() > MAX_ERRORS {
            write!(f, "; and {} more", self.problems.len() - MAX_ERRORS)?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportError {}

fn refuse(problem: impl Into<String>) -> ImportError {
    ImportError {
        problems: vec![problem.into()],
    }
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The byte offsets where the elements of a top-level JSON array start
/// (the text must be a valid array).
fn element_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut want) = (0usize, false, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if want && !c.is_whitespace() && c != ']' {
            starts.push(i);
            want = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    want = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => want = true,
            _ => {}
        }
    }
    starts
}

/// A string field (a number is taken as its text).
fn text_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("\"{key}\" must be a string, not {}", kind_of(other))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One article from a JSON object.
fn article_of(v: &Value) -> Result<SearchDoc, String> {
    let Value::Object(obj) = v else {
        return Err(format!(
            "expected an object with id, title and content, found {}",
            kind_of(v)
        ));
    };
    let id = text_field(obj, "id")?.ok_or("missing \"id\"")?;
    let title = text_field(obj, "title")?.ok_or("missing \"title\"")?;
    let content = match text_field(obj, "content")? {
        Some(c) => c,
        None => text_field(obj, "description")?.ok_or("missing \"content\" (or \"description\")")?,
    };
    let url = text_field(obj, "url")?;
    if let Some(u) = &url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(format!("\"url\" must start with http:// or https://, got {u:?}"));
        }
    }
    let keywords = match obj.get("keywords") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.replace(',', " "),
        Some(Value::Array(items)) => {
            let mut words = Vec::new();
            for k in items {
                match k {
                    Value::String(s) => words.push(s.as_str()),
                    other => return Err(format!("\"keywords\" must hold strings, found {}", kind_of(other))),
                }
            }
            words.join(" ")
        }
        Some(other) => {
            return Err(format!(
                "\"keywords\" must be an array of strings or a string, not {}",
                kind_of(other)
            ))
        }
    };
    Ok(SearchDoc {
        doc_id: id,
        title,
        body: content,
        extra: keywords,
        url,
        status: None,
    })
}

/// Refuses ids given twice in one file (`what`: "article id", "asset name").
fn no_duplicates<T>(items: &[(usize, T)], key: impl Fn(&T) -> String, what: &str) -> Vec<String> {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (line, item) in items {
        let k = key(item);
        if let Some(earlier) = first.get(&k.to_lowercase()) {
            problems.push(format!("line {line}: {what} {k:?} is also on line {earlier}"));
        } else {
            first.insert(k.to_lowercase(), *line);
        }
    }
    problems
}

/// Articles from a JSON array, JSON lines, or (name ending `.csv`) CSV with
/// a header `id,title,content,url,keywords`.
pub fn parse_articles(name: &str, text: &str) -> Result<Vec<SearchDoc>, ImportError> {
    let mut parsed: Vec<(usize, SearchDoc)> = Vec::new();
    let mut problems = Vec::new();
    if name.to_lowercase().ends_with(".csv") {
        let (rows, bad_rows) = csv_rows(text, &["id", "title", "content", "url", "keywords"], &["id", "title"])?;
        problems.extend(bad_rows);
        for (line, row) in rows {
            let obj: serde_json::Map<String, Value> = row
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v)))
                .collect();
            match article_of(&Value::Object(obj)) {
                Ok(a) => parsed.push((line, a)),
                Err(e) => problems.push(format!("line {line}: {e}")),
            }
        }
    } else if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|e| refuse(format!("line {}: not a JSON array of articles: {e}", e.line())))?;
        for (v, start) in items.iter().zip(element_starts(text)) {
            let line = line_at(text, start);
            match article_of(v) {
                Ok(a) => parsed.push((line, a)),
                Err(e) => problems.push(format!("line {line}: {e}")),
            }
        }
    } else {
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(l) {
                Ok(v) => match article_of(&v) {
                    Ok(a) => parsed.push((i + 1, a)),
                    Err(e) => problems.push(format!("line {}: {e}", i + 1)),
                },
                Err(e) => problems.push(format!("line {}: not JSON: {e}", i + 1)),
            }
        }
    }
    problems.extend(no_duplicates(&parsed, |a| a.doc_id.clone(), "article id"));
    if !problems.is_empty() {
        return Err(by_line(problems));
    }
    if parsed.is_empty() {
        return Err(refuse("no articles in the file"));
    }
    Ok(parsed.into_iter().map(|(_, a)| a).collect())
}

/// Problems in line order (a file's reader sees them that way).
fn by_line(mut problems: Vec<String>) -> ImportError {
    let line = |p: &String| {
        p.strip_prefix("line ")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    problems.sort_by_key(line);
    ImportError { problems }
}

/// A CSV row: its line and `(column, value)` pairs.
type CsvRow<'k> = (usize, Vec<(&'k str, String)>);

/// The rows of a CSV file with a header, and the rows that could not be
/// read (`line N: ...`); the header must name only `known` columns and all
/// `required` ones, else the file is refused at once.
fn csv_rows<'k>(
    text: &str,
    known: &[&'k str],
    required: &[&str],
) -> Result<(Vec<CsvRow<'k>>, Vec<String>), ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| refuse(format!("line 1: unreadable header: {e}")))?
        .clone();
    let mut columns = Vec::new();
    let mut problems = Vec::new();
    for h in headers.iter() {
        let h = h.trim().to_lowercase();
        match known.iter().find(|k| **k == h) {
            Some(k) if columns.contains(k) => problems.push(format!("line 1: column {h:?} is named twice")),
            Some(k) => columns.push(*k),
            None => problems.push(format!("line 1: unknown column {h:?} (expected {})", known.join(", "))),
        }
    }
    for r in required {
        if !columns.contains(r) {
            problems.push(format!(
                "line 1: the header has no {r:?} column (expected {})",
                known.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ImportError { problems });
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                if r.iter().all(|f| f.is_empty()) {
                    continue;
                }
                rows.push((
                    line,
                    columns.iter().copied().zip(r.iter().map(str::to_string)).collect(),
                ));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                let why = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("{len} fields where the header has {expected_len}")
                    }
                    _ => e.to_string(),
                };
                problems.push(format!("line {line}: {why}"));
            }
        }
    }
    Ok((rows, problems))
}

fn is_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// An asset inventory: CSV with a header naming (in any order) `name`
/// (required), `ip`, `hostname`, `type`, `owner`, `site`.
pub fn parse_assets(text: &str) -> Result<Vec<InventoryAsset>, ImportError> {
    let (rows, mut problems) = csv_rows(text, &["name", "ip", "hostname", "type", "owner", "site"], &["name"])?;
    let mut parsed = Vec::new();
    for (line, row) in rows {
        let get = |c: &str| {
            row.iter()
                .find(|(k, _)| *k == c)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let mut asset = InventoryAsset {
            name: get("name").unwrap_or_default(),
            ip: get("ip"),
            hostname: get("hostname"),
            asset_type: get("type"),
            owner: get("owner"),
            site: get("site"),
        };
        let mut bad = Vec::new();
        if asset.name.is_empty() {
            bad.push("empty name".to_string());
        }
        if let Some(ip) = &asset.ip {
            match ip.parse::<IpAddr>() {
                Ok(a) => asset.ip = Some(a.to_string()),
                Err(_) => bad.push(format!("ip {ip:?} is not an IP address")),
            }
        }
        if let Some(h) = &asset.hostname {
            if !is_hostname(h) {
                bad.push(format!(
                    "hostname {h:?} is not a host name (letters, digits, dashes and dots)"
                ));
            }
        }
        if bad.is_empty() {
            parsed.push((line, asset));
        } else {
            problems.push(format!("line {line}: {}", bad.join(", ")));
        }
    }
    problems.extend(no_duplicates(&parsed, |a| a.name.clone(), "asset name"));
    if !problems.is_empty() {
        return Err(by_line(problems));
    }
    if parsed.is_empty() {
        return Err(refuse("no assets in the file (only a header?)"));
    }
    Ok(parsed.into_iter().map(|(_, a)| a).collect())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

async fn known_tenant(store: &dyn Store, tenant_id: &str) -> anyhow::Result<()> {
    if store.get_tenant(tenant_id).await?.is_none() {
        anyhow::bail!("tenant '{tenant_id}' does not exist (add it with `ticketflow tenants add`)");
    }
    Ok(())
}

/// `ticketflow kb import`: returns how many articles were written.
pub async fn import_articles(store: &dyn Store, tenant_id: &str, path: &Path) -> anyhow::Result<usize> {
    known_tenant(store, tenant_id).await?;
    let name = path.display().to_string();
    let articles = parse_articles(&name, &read(path)?).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    store.index_documents(tenant_id, DocKind::Article, &articles).await?;
    Ok(articles.len())
}

/// `ticketflow assets import`: returns how many assets were written.
pub async fn import_assets(store: &dyn Store, tenant_id: &str, path: &Path) -> anyhow::Result<usize> {
    known_tenant(store, tenant_id).await?;
    let name = path.display().to_string();
    let assets = parse_assets(&read(path)?).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    store.put_assets(tenant_id, &assets).await?;
    Ok(assets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems<T: std::fmt::Debug>(r: Result<T, ImportError>) -> Vec<String> {
        r.unwrap_err().problems
    }

    #[test]
    fn articles_from_a_json_array_json_lines_and_csv() {
        let array = r#"[
  {"id": "KB-1", "title": "VPN drops", "content": "Raise keep-alive", "url": "https://kb.example/1",
   "keywords": ["vpn", "globalprotect"]},
  {"id": 2, "title": "Printer jam", "description": "Open tray 2"}
]"#;
        let a = parse_articles("kb.json", array).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].doc_id, "KB-1");
        assert_eq!(a[0].extra, "vpn globalprotect");
        assert_eq!(a[0].url.as_deref(), Some("https://kb.example/1"));
        assert_eq!(a[1].doc_id, "2");
        assert_eq!(a[1].body, "Open tray 2");

        let lines = "{\"id\":\"a\",\"title\":\"T\",\"content\":\"C\",\"keywords\":\"x, y\"}\n\n{\"id\":\"b\",\"title\":\"T2\",\"content\":\"C2\"}\n";
        let a = parse_articles("kb.jsonl", lines).unwrap();
        assert_eq!(a.iter().map(|a| a.doc_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(a[0].extra, "x  y");

        let csv = "id,title,content,url\nKB-9,\"Reset, then retry\",Do it,https://kb/9\n";
        let a = parse_articles("kb.CSV", csv).unwrap();
        assert_eq!(a[0].title, "Reset, then retry");
    }

    #[test]
    fn each_kind_of_bad_article_is_named_with_its_line() {
        let array = "[\n  {\"id\": \"1\", \"title\": \"ok\", \"content\": \"c\"},\n  {\"title\": \"no id\", \"content\": \"c\"},\n  {\"id\": \"3\", \"content\": \"c\"},\n  {\"id\": \"4\", \"title\": \"t\"},\n  {\"id\": \"5\", \"title\": [\"t\"], \"content\": \"c\"},\n  {\"id\": \"6\", \"title\": \"t\", \"content\": \"c\", \"url\": \"ftp://x\"},\n  {\"id\": \"7\", \"title\": \"t\", \"content\": \"c\", \"keywords\": [1]},\n  \"just a string\",\n  {\"id\": \"1\", \"title\": \"again\", \"content\": \"c\"}\n]";
        assert_eq!(
            problems(parse_articles("kb.json", array)),
            [
                "line 3: missing \"id\"",
                "line 4: missing \"title\"",
                "line 5: missing \"content\" (or \"description\")",
                "line 6: \"title\" must be a string, not an array",
                "line 7: \"url\" must start with http:// or https://, got \"ftp://x\"",
                "line 8: \"keywords\" must hold strings, found a number",
                "line 9: expected an object with id, title and content, found a string",
                "line 10: article id \"1\" is also on line 2",
            ]
        );
        let broken = problems(parse_articles("kb.json", "[\n {\"id\": \"1\",\n  \"title\": }\n]"));
        assert!(
            broken[0].starts_with("line 3: not a JSON array of articles"),
            "{broken:?}"
        );
        let lines = problems(parse_articles(
            "kb.jsonl",
            "{\"id\":\"a\",\"title\":\"t\",\"content\":\"c\"}\n{oops\n",
        ));
        assert!(lines[0].starts_with("line 2: not JSON"), "{lines:?}");
        assert_eq!(problems(parse_articles("kb.json", "[]")), ["no articles in the file"]);
        assert_eq!(
            problems(parse_articles("kb.csv", "id,name\n1,x\n")),
            [
                "line 1: unknown column \"name\" (expected id, title, content, url, keywords)",
                "line 1: the header has no \"title\" column (expected id, title, content, url, keywords)"
            ]
        );
    }

    #[test]
    fn assets_from_csv_in_any_column_order() {
        let csv = "Hostname,Name,IP,type,owner,site\nweb-01.corp.example,WEB-01,10.0.0.1,server,ops,HQ\n,printer-3f,,printer,,\n";
        let a = parse_assets(csv).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].name, "WEB-01");
        assert_eq!(a[0].hostname.as_deref(), Some("web-01.corp.example"));
        assert_eq!(a[0].ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(a[1].ip, None);
        assert_eq!(a[1].asset_type.as_deref(), Some("printer"));
    }

    #[test]
    fn each_kind_of_bad_asset_row_is_named_with_its_line() {
        let csv = "name,ip,hostname\nok,10.0.0.1,ok.example\n,10.0.0.2,\nbad-ip,10.0.0.300,\nbad-host,,under_score.example\nshort,1.2.3.4\nok,10.0.0.9,\n";
        assert_eq!(
            problems(parse_assets(csv)),
            [
                "line 3: empty name",
                "line 4: ip \"10.0.0.300\" is not an IP address",
                "line 5: hostname \"under_score.example\" is not a host name (letters, digits, dashes and dots)",
                "line 6: 2 fields where the header has 3",
                "line 7: asset name \"ok\" is also on line 2",
            ]
        );
        assert_eq!(
            problems(parse_assets("name,ip\nok,10.0.0.1\nOK,10.0.0.2\n")),
            ["line 3: asset name \"OK\" is also on line 2"]
        );
        assert_eq!(
            problems(parse_assets("ip,hostname,color\n")),
            [
                "line 1: unknown column \"color\" (expected name, ip, hostname, type, owner, site)",
                "line 1: the header has no \"name\" column (expected name, ip, hostname, type, owner, site)"
            ]
        );
        assert_eq!(
            problems(parse_assets("name,ip\n")),
            ["no assets in the file (only a header?)"]
        );
    }
}
