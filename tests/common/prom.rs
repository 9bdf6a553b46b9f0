//! A strict parser of the Prometheus text exposition format 0.0.4, written
//! from the format's specification for tests: it shares no code with the
//! server's renderer, and rejects what a scraper would reject or what the
//! format says must not happen.
//!
//! Checked: every line ends in `\n`; `# HELP` and `# TYPE` at most once per
//! family and before its first sample; a family's lines are contiguous;
//! sample lines are `name{label="value",...} value [timestamp]` with valid
//! names and only `\\`, `\"`, `\n` escapes; no series appears twice; a
//! histogram's series are `_bucket` (with `le`), `_sum` and `_count`, its
//! buckets ascend in `le` with non-decreasing counts and end at `+Inf`,
//! whose count equals `_count`. Samples are returned as
//! (name, labels, value).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, Kind>,
    pub help: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample named `name`.
    pub fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// Parses and validates `text`; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the last line does not end in a line feed".into());
    }
    let mut exp = Exposition::default();
    let mut current: Option<String> = None;
    let mut closed: HashSet<String> = HashSet::new();
    let mut with_samples: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (n, line) in text.split_terminator('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        let family = if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "HELP" => {
                    let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
                    check_metric_name(name).map_err(at)?;
                    let doc = unescape(doc).map_err(at)?;
                    if exp.help.insert(name.to_string(), doc).is_some() {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    if with_samples.contains(name) {
                        return Err(at(format!("HELP for {name} after its samples")));
                    }
                    name.to_string()
                }
                "TYPE" => {
                    let (name, kind) = rest
                        .split_once(' ')
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    check_metric_name(name).map_err(at)?;
                    let kind = match kind {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        "summary" => Kind::Summary,
                        "untyped" => Kind::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    if exp.types.insert(name.to_string(), kind).is_some() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if with_samples.contains(name) {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    name.to_string()
                }
                _ => continue, // a plain comment
            }
        } else {
            let sample = parse_sample(line).map_err(at)?;
            let family = family_of(&sample, &exp.types).map_err(at)?;
            if !exp.help.contains_key(&family) {
                return Err(at(format!("sample of {family} before its HELP")));
            }
            if !series.insert((sample.name.clone(), sample.labels.clone())) {
                return Err(at("the same series twice".into()));
            }
            if exp.types.get(&family) == Some(&Kind::Counter)
                && (sample.value.is_nan() || sample.value < 0.0)
            {
                return Err(at("a counter below zero".into()));
            }
            with_samples.insert(family.clone());
            exp.samples.push(sample);
            family
        };
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return Err(at(format!("lines of {family} are not contiguous")));
            }
            if let Some(prev) = current.replace(family) {
                closed.insert(prev);
            }
        }
    }
    check_histograms(&exp)?;
    Ok(exp)
}

/// The family a sample belongs to: its own name when typed, else the
/// histogram or summary whose suffixed series it is.
fn family_of(s: &Sample, types: &BTreeMap<String, Kind>) -> Result<String, String> {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(stem) = s.name.strip_suffix(suffix) {
            match types.get(stem) {
                Some(Kind::Histogram) => {
                    if suffix == "_bucket" && !s.labels.contains_key("le") {
                        return Err("histogram bucket without le".into());
                    }
                    if suffix != "_bucket" && s.labels.contains_key("le") {
                        return Err(format!("{suffix} series with an le label"));
                    }
                    return Ok(stem.to_string());
                }
                Some(Kind::Summary) if suffix != "_bucket" => return Ok(stem.to_string()),
                _ => {}
            }
        }
    }
    match types.get(&s.name) {
        Some(Kind::Histogram) => Err("a histogram's own name used as a sample".into()),
        Some(_) => Ok(s.name.clone()),
        None => Err(format!("sample of {} before its TYPE", s.name)),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' ', '\t'])
        .ok_or("sample without a value")?;
    let (name, mut rest) = line.split_at(name_end);
    check_metric_name(name)?;
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let lname = rest[..eq].trim_end_matches([' ', '\t']);
            check_label_name(lname)?;
            rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
            rest = rest.strip_prefix('"').ok_or("label value not quoted")?;
            let (value, r) = take_quoted(rest)?;
            rest = r.trim_start_matches([' ', '\t']);
            if labels.insert(lname.to_string(), value).is_some() {
                return Err(format!("label {lname} twice"));
            }
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = parse_value(fields.next().ok_or("sample without a value")?)?;
    if let Some(ts) = fields.next() {
        let digits = ts.strip_prefix('-').unwrap_or(ts);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("timestamp {ts:?} is not an integer"));
        }
    }
    if fields.next().is_some() {
        return Err("junk after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => {
                    return Err(format!(
                        "invalid escape \\{:?} in a label value",
                        other.map(|o| o.1)
                    ))
                }
            },
            '\n' => return Err("raw line feed in a label value".into()),
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

/// HELP text: `\\` and `\n` are its only escapes.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            other => return Err(format!("invalid escape \\{other:?}")),
        }
    }
    Ok(out)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return Err(format!("value {v:?} is not a number"));
    }
    v.parse()
        .map_err(|_| format!("value {v:?} is not a number"))
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !ok {
        return Err(format!("invalid metric name {name:?}"));
    }
    Ok(())
}

fn check_label_name(name: &str) -> Result<(), String> {
    let ok = name
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !ok || name.starts_with("__") {
        return Err(format!("invalid label name {name:?}"));
    }
    Ok(())
}

/// Per histogram and label set: ascending `le`, non-decreasing counts,
/// `+Inf` last and equal to `_count`, `_sum` present.
fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, kind) in &exp.types {
        if *kind != Kind::Histogram {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut sets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp.named(&bucket) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").unwrap_or_default();
            let le = parse_value(&le).map_err(|e| format!("{bucket}: le: {e}"))?;
            sets.entry(labels).or_default().push((le, s.value));
        }
        for (labels, buckets) in &sets {
            let what = format!("{family}{labels:?}");
            for w in buckets.windows(2) {
                if w[1].0 <= w[0].0 {
                    return Err(format!(
                        "{what}: le not ascending ({} then {})",
                        w[0].0, w[1].0
                    ));
                }
                if w[1].1 < w[0].1 {
                    return Err(format!("{what}: bucket counts decrease at le={}", w[1].0));
                }
            }
            let Some(&(le, inf)) = buckets.last() else {
                continue;
            };
            if le != f64::INFINITY {
                return Err(format!("{what}: no +Inf bucket"));
            }
            let label_pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = exp
                .get(&format!("{family}_count"), &label_pairs)
                .ok_or_else(|| format!("{what}: no _count"))?;
            if count != inf {
                return Err(format!("{what}: +Inf bucket {inf} != _count {count}"));
            }
            exp.get(&format!("{family}_sum"), &label_pairs)
                .ok_or_else(|| format!("{what}: no _sum"))?;
        }
        // _count or _sum without buckets
        for suffix in ["_count", "_sum"] {
            for s in exp.named(&format!("{family}{suffix}")) {
                if !sets.contains_key(&s.labels) {
                    return Err(format!("{family}{suffix}{:?} without buckets", s.labels));
                }
            }
        }
    }
    Ok(())
}
