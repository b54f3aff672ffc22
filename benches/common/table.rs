//! Reads criterion's results (`<criterion dir>/<group>/<side>/new/`) and
//! prints one markdown row per group that has both an `mmld` and a `glibc`
//! side: both medians, their ratio, and the target for that group.

use std::path::{Path, PathBuf};

/// Where criterion writes its results: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `<target>/criterion` found from this
/// executable's path (`<target>/release/deps/<bench>-<hash>`), which is what
/// criterion gets from `cargo metadata`.
pub fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.ancestors().nth(3).map(|t| t.join("criterion")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Median (ns) of one benchmark, from criterion's `estimates.json`.
fn median_ns(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// The group's name as the bench gave it (criterion's directory name is a
/// sanitized form).
fn group_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("new/benchmark.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["group_id"].as_str().map(str::to_string)
}

/// The target for a group and whether the numbers meet it.
fn target(group: &str, mmld: f64, ratio: f64) -> (String, &'static str) {
    let yes_no = |b: bool| if b { "met" } else { "not met" };
    let _ = mmld;
    if let Some(t) = group.strip_prefix("cycle-").and_then(super::cycle_target) {
        (format!("≤ {t}× glibc"), yes_no(ratio <= t))
    } else if group.starts_with("lookup") {
        let t = super::LOOKUP_TARGET;
        (format!("≤ {t}× glibc"), yes_no(ratio <= t))
    } else {
        ("—".into(), "")
    }
}

pub const HEADER: &str = "| benchmark | mmld (median) | glibc (median) | mmld/glibc | target | |\n|---|---:|---:|---:|---|---|";

/// Markdown rows for every criterion group whose name starts with one of
/// `prefixes` (all groups when empty), sorted by name.
pub fn rows(prefixes: &[&str]) -> Vec<String> {
    let root = criterion_dir();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<(String, f64, f64)> = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        let (Some(m), Some(g)) = (median_ns(&dir.join("mmld")), median_ns(&dir.join("glibc")))
        else {
            continue;
        };
        let name = group_id(&dir.join("mmld"))
            .unwrap_or_else(|| e.file_name().to_string_lossy().into_owned());
        if prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p)) {
            found.push((name, m, g));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .map(|(name, m, g)| {
            let ratio = m / g;
            let (t, met) = target(&name, m, ratio);
            format!(
                "| {name} | {} | {} | {} | {t} | {met} |",
                super::fmt_ns(m),
                super::fmt_ns(g),
                super::fmt_ratio(ratio)
            )
        })
        .collect()
}

/// Print the table for `prefixes` (after the groups ran).
pub fn print(title: &str, prefixes: &[&str]) {
    let rows = rows(prefixes);
    println!("\n### {title} (from {})\n", criterion_dir().display());
    if rows.is_empty() {
        println!("(no criterion results with both an mmld and a glibc side yet)");
        return;
    }
    println!("{HEADER}");
    for r in rows {
        println!("{r}");
    }
}
