//! The key reference of `crust.toml`, made from the configuration types themselves (their doc
//! comments, types and defaults, read through their `JsonSchema` derive): the `crust.toml(5)` man page
//! and the guide's table (docs/configuration.md) both come from here, so neither lists a key the
//! types do not have, nor misses one.

use serde_json::{Map, Value};

use super::Config;

/// One key: its dotted path, its type, its default as TOML, and what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub path: String,
    pub ty: String,
    pub default: String,
    pub doc: String,
}

/// One table of the file (`""` for the top level): what it is for, and its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The table's header as written in the file: `runtime`, `registry.mirrors."<host>"`.
    pub header: String,
    pub doc: String,
    pub keys: Vec<Key>,
}

/// Every table and key, top level first, then tables in the order the types nest them (each table's
/// keys in name order: the schema's property order depends on serde_json's features, not on us).
pub fn sections() -> Vec<Section> {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null);
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    // The root's title is the type's name, not a sentence: its description alone.
    let doc = doc_of(&serde_json::json!({"description": schema.get("description")}));
    walk(&schema, "", &doc, &defs, &mut out);
    out
}

/// All dotted key paths (map tables written with `<name>` placeholders), for checks of the guide.
pub fn key_paths() -> Vec<String> {
    sections()
        .into_iter()
        .flat_map(|s| s.keys.into_iter().map(|k| k.path))
        .collect()
}

fn walk(schema: &Value, header: &str, doc: &str, defs: &Map<String, Value>, out: &mut Vec<Section>) {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = props.keys().collect();
    names.sort();
    let mut keys = Vec::new();
    let mut tables = Vec::new();
    for name in names {
        let prop = &props[name];
        let path = join(header, name);
        if let Some(def) = struct_def(prop, defs) {
            let doc = first_non_empty(&doc_of(prop), &doc_of(def));
            tables.push((path, doc, def.clone()));
        } else if let Some(def) = prop.get("additionalProperties").and_then(|a| struct_def(a, defs)) {
            let what = map_placeholder(name);
            let doc = first_non_empty(&doc_of(prop), &doc_of(def));
            let defaults = match prop.get("default").and_then(Value::as_object) {
                Some(m) if !m.is_empty() => {
                    let names: Vec<&str> = m.keys().map(String::as_str).collect();
                    format!(" Defined by default: {}.", names.join(", "))
                }
                _ => String::new(),
            };
            tables.push((format!("{path}.\"<{what}>\""), doc + &defaults, def.clone()));
        } else {
            keys.push(Key {
                path: path.replace('"', ""),
                ty: type_of(prop, defs),
                default: prop.get("default").map(toml_value).unwrap_or_default(),
                doc: doc_of(prop),
            });
        }
    }
    out.push(Section {
        header: header.to_string(),
        doc: doc.to_string(),
        keys,
    });
    for (path, doc, def) in tables {
        walk(&def, &path, &doc, defs, out);
    }
}

fn join(header: &str, name: &str) -> String {
    if header.is_empty() {
        name.to_string()
    } else {
        format!("{header}.{name}")
    }
}

/// What a map table's key names, for its header.
fn map_placeholder(field: &str) -> &'static str {
    match field {
        "handlers" => "handler",
        "mirrors" | "configs" => "host",
        _ => "name",
    }
}

/// The definition a `$ref` points to, when it is a struct (has properties).
fn struct_def<'a>(prop: &Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    let name = prop.get("$ref")?.as_str()?.strip_prefix("#/$defs/")?;
    defs.get(name).filter(|d| d.get("properties").is_some())
}

/// A doc comment as schemars splits it (first paragraph as title, the rest as description), joined.
fn doc_of(v: &Value) -> String {
    let part = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").trim().to_string();
    let (title, description) = (part("title"), part("description"));
    let text = match (title.is_empty(), description.is_empty()) {
        (false, false) => format!("{title}\n\n{description}"),
        (false, true) => title,
        _ => description,
    };
    // Unwrap the comment's lines into one paragraph per blank-line-separated block.
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn first_non_empty(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        a.to_string()
    }
}

fn type_of(prop: &Value, defs: &Map<String, Value>) -> String {
    if let Some(d) = prop
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|n| defs.get(n))
    {
        return type_of(d, defs);
    }
    match prop.get("type").and_then(Value::as_str) {
        Some("array") => {
            let item = prop.get("items").map(|i| type_of(i, defs)).unwrap_or_default();
            format!("array of {item}s")
        }
        Some(t) => t.to_string(),
        None => "value".into(),
    }
}

/// A default as it would be written in the file.
fn toml_value(v: &Value) -> String {
    match toml::Value::try_from(v) {
        Ok(t) => t.to_string(),
        Err(_) => v.to_string(),
    }
}

/// `crust.toml(5)`, in roff.
pub fn man_page() -> String {
    let mut m = String::new();
    m.push_str(&format!(
        ".TH CRUST.TOML 5 \"\" \"crust {}\" \"File Formats\"\n",
        crate::version::VERSION
    ));
    m.push_str(".SH NAME\ncrust.toml \\- configuration of crustd, the crust container runtime\n");
    m.push_str(".SH SYNOPSIS\n/etc/crust/crust.toml\n.br\n/etc/crust/crust.d/*.toml\n");
    for p in [
        "crustd(8) reads its main file (\\fB\\-\\-config\\fR, by default /etc/crust/crust.toml, which may \
         be absent), then the drop-ins \\fIcrust.d/*.toml\\fR beside it in name order: tables are merged \
         key by key and a later file wins. Command-line flags win over every file. Each file must be \
         valid on its own: an unknown key or a wrong type is refused, naming the file and the key, and \
         crustd exits with status 2.",
        "Every key has a default; \\fBcrustd config\\fR prints the effective configuration, defaults \
         filled in. SIGHUP (\\fBsystemctl reload crust\\fR) reads the files again: the log level, \
         registries and pinned images change at once; other changed keys are logged as needing a \
         restart.",
        "The file may hold registry credentials: keep it mode 0600.",
    ] {
        m.push_str(".PP\n");
        m.push_str(p);
        m.push('\n');
    }
    m.push_str(".SH KEYS\n");
    for s in sections() {
        let title = if s.header.is_empty() {
            "top level".to_string()
        } else {
            format!("[{}]", s.header)
        };
        m.push_str(&format!(".SS \"{}\"\n", roff_text(&title, true)));
        if !s.doc.is_empty() {
            m.push_str(&format!(".PP\n{}\n", roff_text(&s.doc, false)));
        }
        for k in &s.keys {
            let name = k.path.rsplit('.').next().unwrap_or(&k.path);
            m.push_str(&format!(".TP\n.B {}\n", roff_text(name, true)));
            let mut line = format!("\\fI{}\\fR", roff_text(&k.ty, true));
            if !k.default.is_empty() {
                line.push_str(&format!("; default \\fB{}\\fR", roff_text(&k.default, true)));
            }
            if crate::reload::is_live(&k.path) {
                line.push_str("; applied at reload");
            }
            m.push_str(&line);
            m.push_str(".\n");
            for para in k.doc.split("\n\n").filter(|p| !p.is_empty()) {
                m.push_str(&format!(".br\n{}\n", roff_text(para, false)));
            }
        }
    }
    m.push_str(".SH FILES\n.TP\n/etc/crust/crust.toml\nThe main file (a conffile of the Debian package).\n");
    m.push_str(".TP\n/etc/crust/crust.d/\nDrop-ins, merged in name order.\n");
    m.push_str(".SH SEE ALSO\n\\fBcrustd\\fR(8), \\fBcrustctl\\fR(8)\n");
    m
}

/// Text for roff: backslashes escaped, a leading `.` or `'` neutralised, `code` in bold (unless
/// `plain`, for text already inside a font change, where the backquotes are dropped).
fn roff_text(s: &str, plain: bool) -> String {
    let mut out = String::new();
    let mut bold = false;
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '`' if !plain => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '`' => {}
            _ => out.push(c),
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// The guide's key reference, in Markdown: one table per section.
pub fn markdown() -> String {
    let mut m = String::new();
    for s in sections() {
        let title = if s.header.is_empty() {
            "Top level".to_string()
        } else {
            format!("`[{}]`", s.header)
        };
        m.push_str(&format!("### {title}\n\n"));
        if !s.doc.is_empty() {
            m.push_str(&format!("{}\n\n", s.doc));
        }
        if s.keys.is_empty() {
            continue;
        }
        m.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        // Keys a reload (SIGHUP) applies at once are marked; the others wait for a restart.
        for k in &s.keys {
            let name = k.path.rsplit('.').next().unwrap_or(&k.path);
            let default = if k.default.is_empty() {
                String::new()
            } else {
                format!("`{}`", k.default)
            };
            let live = if crate::reload::is_live(&k.path) {
                " (applied at reload)"
            } else {
                ""
            };
            m.push_str(&format!(
                "| `{name}` | {} | {default} | {}{live} |\n",
                k.ty,
                k.doc.replace("\n\n", " ").replace('|', "\\|")
            ));
        }
        m.push('\n');
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every key `crustd config` prints (the defaults serialised) is in the reference, and the
    /// reference has no key the serialised configuration lacks (map tables aside).
    #[test]
    fn the_reference_has_exactly_the_keys_crustd_config_prints() {
        fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let path = join(prefix, k);
                match v {
                    toml::Value::Table(sub) if !["handlers", "mirrors", "configs"].contains(&k.as_str()) => {
                        flatten(&path, sub, out)
                    }
                    toml::Value::Table(_) => {}
                    _ => out.push(path),
                }
            }
        }
        let printed: toml::Table = toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
        let mut want = Vec::new();
        flatten("", &printed, &mut want);
        want.sort();
        let mut have: Vec<String> = key_paths().into_iter().filter(|p| !p.contains('<')).collect();
        have.sort();
        assert_eq!(have, want);
        let all = key_paths();
        for k in [
            "runtime.handlers.<handler>.path",
            "registry.mirrors.<host>.endpoint",
            "registry.configs.<host>.tls.ca_file",
            "registry.configs.<host>.auth.username",
        ] {
            assert!(all.contains(&k.to_string()), "{k} in {all:?}");
        }
    }

    #[test]
    fn keys_carry_their_type_default_and_doc() {
        let s = sections();
        let runtime = s.iter().find(|s| s.header == "runtime").unwrap();
        let driver = runtime
            .keys
            .iter()
            .find(|k| k.path == "runtime.cgroup_driver")
            .unwrap();
        assert_eq!(driver.ty, "string");
        assert_eq!(driver.default, "\"auto\"");
        assert!(driver.doc.contains("kubelet"), "{driver:?}");
        let dirs = s
            .iter()
            .find(|s| s.header == "cni")
            .unwrap()
            .keys
            .iter()
            .find(|k| k.path == "cni.bin_dirs")
            .unwrap();
        assert_eq!(dirs.ty, "array of strings");
        assert_eq!(dirs.default, "[\"/usr/lib/cni\", \"/opt/cni/bin\"]");
        let h = s
            .iter()
            .find(|s| s.header == "runtime.handlers.\"<handler>\"")
            .unwrap();
        assert!(h.doc.contains("runc"), "{h:?}");
    }
}
