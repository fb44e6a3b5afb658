//! Every configuration snippet in the documentation loads: each ```toml
//! block of the workspace README, the crates' READMEs and `docs/*.md` (other
//! than Cargo manifests) goes through the runtime's configuration loader
//! under each profile it names, and each `type = "..."` it sets reaches its
//! section. A snippet that drifts from the loader (a section outside a
//! profile, a key the loader refuses) fails here, naming the file and line.

use std::path::{Path, PathBuf};

use truststream_runtime::{Config, ConfigSources, Interface};

/// The workspace root (this crate lives in `crates/runtime`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The documents whose snippets must load.
fn documents() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut docs = vec![root.join("README.md")];
    for dir in ["crates", "docs"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}/: {e}"))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .map(|p| {
                if dir == "crates" {
                    p.join("README.md")
                } else {
                    p
                }
            })
            .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
            .collect();
        found.sort();
        docs.extend(found);
    }
    docs
}

/// One fenced block: where it starts and its text.
struct Snippet {
    at: String,
    text: String,
}

/// The ```toml blocks of `doc`.
fn toml_snippets(doc: &Path) -> Vec<Snippet> {
    let content =
        std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("reading {}: {e}", doc.display()));
    let shown = doc.strip_prefix(workspace_root()).unwrap_or(doc).display();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for (i, line) in content.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(lang), None) => open = Some((i + 1, lang.trim().to_string(), Vec::new())),
            (Some(_), Some((start, lang, body))) => {
                if lang == "toml" {
                    out.push(Snippet {
                        at: format!("{shown}:{start}"),
                        text: body.join("\n"),
                    });
                }
            }
            (None, Some((start, lang, mut body))) => {
                body.push(line);
                open = Some((start, lang, body));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{shown}: a fenced block is never closed");
    out
}

/// Whether the snippet is a Cargo manifest fragment rather than TrustStream
/// configuration.
fn is_cargo_manifest(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "[dependencies]"
            || l == "[package]"
            || l == "[features]"
            || l.starts_with("[workspace")
    })
}

/// The `[profile.section]` headers of a snippet, each with the `type` its
/// table sets (if any).
fn sections(text: &str) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let name = header.split(']').next().unwrap_or_default();
            let parts: Vec<&str> = name.split('.').collect();
            current = None;
            if parts.len() >= 2 {
                out.push((parts[0].to_string(), parts[1].to_string(), None));
                if parts.len() == 2 && !line.starts_with("[[") {
                    current = Some(out.len() - 1);
                }
            }
        } else if let (Some(i), Some(value)) = (current, line.strip_prefix("type")) {
            if let Some(value) = value.trim_start().strip_prefix('=') {
                let value = value.split('#').next().unwrap_or_default().trim();
                out[i].2 = Some(value.trim_matches('"').to_string());
            }
        }
    }
    out
}

fn load(snippet: &Snippet, profile: &str) -> Config {
    ConfigSources::new()
        .toml_str(snippet.text.clone())
        .profile(profile)
        .load()
        .unwrap_or_else(|e| {
            panic!(
                "{}: the snippet does not load under profile {profile:?}: {e}\n{}",
                snippet.at, snippet.text
            )
        })
}

#[test]
fn every_config_snippet_in_the_docs_loads() {
    let mut checked = 0;
    for doc in documents() {
        for snippet in toml_snippets(&doc) {
            if is_cargo_manifest(&snippet.text) {
                continue;
            }
            let sections = sections(&snippet.text);
            assert!(
                !sections.is_empty(),
                "{}: a configuration snippet must name its profile, like [default.database]:\n{}",
                snippet.at,
                snippet.text
            );
            let mut profiles: Vec<&str> = sections.iter().map(|(p, _, _)| p.as_str()).collect();
            profiles.dedup();
            for profile in profiles {
                let config = load(&snippet, profile);
                for (p, section, kind) in &sections {
                    let Some(kind) = kind.as_deref().filter(|_| p == profile) else {
                        continue;
                    };
                    let loaded = match section.as_str() {
                        "database" => config.section(Interface::Database).kind(),
                        "storage" => config.section(Interface::Storage).kind(),
                        "realtime" => config.section(Interface::Realtime).kind(),
                        "auth" => config.section(Interface::Auth).kind(),
                        "jobs" => config.jobs_section().kind(),
                        other => panic!("{}: [{p}.{other}] has a type", snippet.at),
                    };
                    assert_eq!(
                        loaded, kind,
                        "{}: [{p}.{section}] type = {kind:?} did not reach the section",
                        snippet.at
                    );
                }
            }
            checked += 1;
        }
    }
    // The workspace README, the runtime's, the providers' and layers' READMEs
    // all have configuration snippets: finding few means the walk is broken.
    assert!(checked >= 25, "only {checked} configuration snippets found");
}

#[test]
fn a_section_outside_a_profile_is_caught() {
    let snippet = Snippet {
        at: "test".into(),
        text: "[database]\ntype = \"memory\"\n".into(),
    };
    let loaded = ConfigSources::new().toml_str(snippet.text.clone()).load();
    assert!(
        loaded.is_err(),
        "[database] outside a profile must not load"
    );
    assert_eq!(
        sections("[production.database]\ntype = \"postgres\" # x\n[[default.auth.external_issuers]]\ntype = \"no\"\n"),
        vec![
            ("production".to_string(), "database".to_string(), Some("postgres".to_string())),
            ("default".to_string(), "auth".to_string(), None),
        ]
    );
}
