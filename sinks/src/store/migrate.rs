//! Numbered schema migrations, shared by both stores: which files the binary
//! carries, their checksums, and the decision of what to apply.
//!
//! A migration is applied once and recorded with the SHA-256 of its text.
//! A recorded migration whose file changed since is refused (a schema must
//! never silently differ from what its history says), and so is a database
//! that records a migration this binary does not know (it was migrated by a
//! newer binary). `run` refuses a database with migrations still to apply.

use sha2::{Digest, Sha256};

use super::StoreError;

/// One numbered migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The file name without extension, e.g. `0001_init`.
    pub name: &'static str,
    pub text: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        checksum(self.text)
    }
}

pub fn checksum(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The embedded store's migrations (`migrations/embedded/*.sql`), in order.
pub const EMBEDDED: &[Migration] = &[
    Migration {
        name: "0001_init",
        text: include_str!("../../../migrations/embedded/0001_init.sql"),
    },
    Migration {
        name: "0002_lifecycle_retention",
        text: include_str!("../../../migrations/embedded/0002_lifecycle_retention.sql"),
    },
    Migration {
        name: "0003_llm_usage",
        text: include_str!("../../../migrations/embedded/0003_llm_usage.sql"),
    },
    Migration {
        name: "0004_search",
        text: include_str!("../../../migrations/embedded/0004_search.sql"),
    },
    Migration {
        name: "0005_sdp",
        text: include_str!("../../../migrations/embedded/0005_sdp.sql"),
    },
];

/// ScyllaDB's migrations (`migrations/scylla/*.cql`), in order. `{keyspace}`
/// in a file is replaced by the configured keyspace.
pub const SCYLLA: &[Migration] = &[
    Migration {
        name: "0001_init",
        text: include_str!("../../../migrations/scylla/0001_init.cql"),
    },
    Migration {
        name: "0002_llm_usage",
        text: include_str!("../../../migrations/scylla/0002_llm_usage.cql"),
    },
    Migration {
        name: "0003_search",
        text: include_str!("../../../migrations/scylla/0003_search.cql"),
    },
    Migration {
        name: "0004_sdp",
        text: include_str!("../../../migrations/scylla/0004_sdp.cql"),
    },
];

/// A migration recorded as applied: its name and the checksum it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: String,
    /// `None` for rows recorded before checksums were kept; they are
    /// trusted and filled in by the next `migrate`.
    pub checksum: Option<String>,
}

/// The migrations still to apply, in order; refuses a changed or unknown
/// applied migration with the reason.
pub fn pending<'a>(available: &'a [Migration], applied: &[Applied]) -> Result<Vec<&'a Migration>, StoreError> {
    for a in applied {
        let Some(m) = available.iter().find(|m| m.name == a.name) else {
            return Err(StoreError::Rejected(format!(
                "the store records migration {} which this binary does not have: it was migrated by a newer Ticketflow; run that version",
                a.name
            )));
        };
        if let Some(sum) = &a.checksum {
            if *sum != m.checksum() {
                return Err(StoreError::Rejected(format!(
                    "migration {} was applied with checksum {} but this binary's file has {}: an applied migration must never change; add a new numbered file instead",
                    a.name,
                    short(sum),
                    short(&m.checksum())
                )));
            }
        }
    }
    Ok(available
        .iter()
        .filter(|m| !applied.iter().any(|a| a.name == m.name))
        .collect())
}

/// For `run`: the store's schema must be exactly what the binary expects.
pub fn require_current(available: &[Migration], applied: &[Applied], store: &str) -> Result<(), StoreError> {
    let todo = pending(available, applied)?;
    if todo.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = todo.iter().map(|m| m.name).collect();
    Err(StoreError::Rejected(format!(
        "{store} schema is older than this binary expects ({} not applied): run `ticketflow migrate` first",
        names.join(", ")
    )))
}

fn short(sum: &str) -> &str {
    &sum[..sum.len().min(12)]
}

/// The statements of a CQL or SQL file: split at `;` ending a line, comment
/// lines (`--`) dropped.
pub fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_string();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    let rest = current.trim().trim_end_matches(';').trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[
        Migration {
            name: "0001_a",
            text: "CREATE TABLE a (x int);",
        },
        Migration {
            name: "0002_b",
            text: "CREATE TABLE b (x int);",
        },
    ];

    fn applied(name: &str, text: Option<&str>) -> Applied {
        Applied {
            name: name.into(),
            checksum: text.map(checksum),
        }
    }

    #[test]
    fn plans_what_is_missing_and_refuses_changed_or_unknown_files() {
        assert_eq!(pending(M, &[]).unwrap().len(), 2);
        let todo = pending(M, &[applied("0001_a", Some("CREATE TABLE a (x int);"))]).unwrap();
        assert_eq!(todo.iter().map(|m| m.name).collect::<Vec<_>>(), ["0002_b"]);
        assert!(
            pending(M, &[applied("0001_a", None)]).is_ok(),
            "rows from before checksums are trusted"
        );
        let changed = pending(M, &[applied("0001_a", Some("CREATE TABLE a (y int);"))]).unwrap_err();
        assert!(
            changed
                .to_string()
                .contains("migration 0001_a was applied with checksum"),
            "{changed}"
        );
        let unknown = pending(M, &[applied("0003_c", Some("x"))]).unwrap_err();
        assert!(unknown.to_string().contains("newer Ticketflow"), "{unknown}");
        let old = require_current(M, &[applied("0001_a", None)], "store x").unwrap_err();
        assert!(old.to_string().contains("0002_b not applied"), "{old}");
        assert!(old.to_string().contains("ticketflow migrate"), "{old}");
    }

    #[test]
    fn splits_statements_and_drops_comments() {
        let s = statements("-- why\nCREATE TABLE a (\n  x int\n);\n\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s, ["CREATE TABLE a (\n  x int\n)", "CREATE INDEX i ON a (x)"]);
    }

    #[test]
    fn every_shipped_migration_file_is_listed() {
        for (dir, list, ext) in [("embedded", EMBEDDED, "sql"), ("scylla", SCYLLA, "cql")] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(&format!(".{ext}")))
                .map(|n| n.trim_end_matches(&format!(".{ext}")).to_string())
                .collect();
            files.sort();
            let names: Vec<String> = list.iter().map(|m| m.name.to_string()).collect();
            assert_eq!(files, names, "migrations/{dir} and the binary's list differ");
        }
    }
}
