//! Printing: aligned tables for people, JSON for scripts, sizes and IDs shortened for tables.

use serde::Serialize;

use crate::{CtlError, Ctx, Output};

/// Prints `rows` under `head` as a table, or `json` as JSON.
pub fn print<T: Serialize>(
    ctx: &Ctx,
    head: &[&str],
    rows: Vec<Vec<String>>,
    json: &T,
) -> Result<(), CtlError> {
    match ctx.output {
        Output::Json => print_json(json),
        Output::Table => {
            table(head, &rows);
            Ok(())
        }
    }
}

/// Prints a value as pretty JSON.
pub fn print_json<T: Serialize>(v: &T) -> Result<(), CtlError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CtlError::Rpc(format!("JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// An aligned table.
pub fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}   ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `sha256:abc…` → the first 13 hex digits.
pub fn short_id(id: &str) -> String {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    h.chars().take(13).collect()
}

/// Bytes in a unit people read.
pub fn size(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < U.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Nanoseconds since the epoch as an age ("5m", "2h").
pub fn age(ns: i64) -> String {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let s = ((now - ns) / 1_000_000_000).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
