//! The JSONPath subset CRD printer columns use (`.status.phase`,
//! `.status.conditions[?(@.type=="Ready")].status`, `.spec.items[0].name`, `[*]`,
//! `['dotted.key']`), evaluated to the list of matches.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    All,
    /// `[?(@.a.b == "x")]`, `!=`, or `[?(@.a)]` (exists) when there is no comparison.
    Filter(Vec<String>, Option<(bool, Value)>),
}

fn parse_key_path(s: &str) -> Vec<String> {
    s.trim_start_matches('@').split('.').filter(|k| !k.is_empty()).map(str::to_string).collect()
}

fn parse_filter(inner: &str) -> Result<Step, String> {
    let body = inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')')).ok_or("bad filter")?;
    for (op, eq) in [("==", true), ("!=", false)] {
        if let Some((l, r)) = body.split_once(op) {
            let r = r.trim();
            let value = if let Some(s) = r.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                Value::String(s.to_string())
            } else if let Some(s) = r.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
                Value::String(s.to_string())
            } else {
                serde_json::from_str(r).map_err(|_| format!("bad filter value {r}"))?
            };
            return Ok(Step::Filter(parse_key_path(l.trim()), Some((eq, value))));
        }
    }
    Ok(Step::Filter(parse_key_path(body.trim()), None))
}

fn parse(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut j = start;
                let mut key = String::new();
                while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                    // `\.` escapes a dot inside a key (`.metadata.labels.app\.kubernetes\.io/name`).
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    key.push(chars[j]);
                    j += 1;
                }
                if key == "*" {
                    steps.push(Step::All);
                } else if !key.is_empty() {
                    steps.push(Step::Key(key));
                }
                i = j;
            }
            '[' => {
                let mut depth = 0i32;
                let mut close = None;
                for (j, c) in chars.iter().enumerate().skip(i + 1) {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        ']' if depth == 0 => {
                            close = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or("unclosed [")?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                steps.push(if inner == "*" {
                    Step::All
                } else if inner.starts_with('?') {
                    parse_filter(inner)?
                } else if let Some(k) = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                {
                    Step::Key(k.to_string())
                } else {
                    Step::Index(inner.parse().map_err(|_| format!("bad index {inner}"))?)
                });
                i = close + 1;
            }
            c => return Err(format!("unexpected {c:?} in {path}")),
        }
    }
    Ok(steps)
}

fn walk<'a>(v: &'a Value, keys: &[String]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Every value `path` selects in `v`, in document order.
pub fn find(v: &Value, path: &str) -> Result<Vec<Value>, String> {
    let mut cur = vec![v.clone()];
    for step in parse(path)? {
        let mut next = Vec::new();
        for c in &cur {
            match &step {
                Step::Key(k) => next.extend(c.get(k).cloned()),
                Step::Index(n) => {
                    if let Some(a) = c.as_array() {
                        let i = if *n < 0 { a.len() as i64 + n } else { *n };
                        next.extend(usize::try_from(i).ok().and_then(|i| a.get(i)).cloned());
                    }
                }
                Step::All => match c {
                    Value::Array(a) => next.extend(a.iter().cloned()),
                    Value::Object(m) => next.extend(m.values().cloned()),
                    _ => {}
                },
                Step::Filter(keys, cmp) => {
                    for item in c.as_array().into_iter().flatten() {
                        let got = walk(item, keys);
                        let keep = match cmp {
                            None => got.is_some(),
                            Some((eq, want)) => got.is_some_and(|g| g == want) == *eq,
                        };
                        if keep {
                            next.push(item.clone());
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn printer_column_paths() {
        let o = json!({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}, "status": {"healthyWorkers": 2,
            "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]},
            "spec": {"items": [{"n": 1}, {"n": 2}]}});
        assert_eq!(find(&o, ".status.conditions[?(@.type==\"Ready\")].status").unwrap(), vec![json!("True")]);
        assert_eq!(find(&o, ".status.conditions[?(@.type != 'Ready')].type").unwrap(), vec![json!("Progressing")]);
        assert_eq!(find(&o, ".status.healthyWorkers").unwrap(), vec![json!(2)]);
        assert_eq!(find(&o, ".spec.items[*].n").unwrap(), vec![json!(1), json!(2)]);
        assert_eq!(find(&o, ".spec.items[-1].n").unwrap(), vec![json!(2)]);
        assert_eq!(find(&o, ".metadata.labels.app\\.kubernetes\\.io/name").unwrap(), vec![json!("x")]);
        assert_eq!(find(&o, ".metadata.labels['app.kubernetes.io/name']").unwrap(), vec![json!("x")]);
        assert!(find(&o, ".status.queueDepth").unwrap().is_empty());
        assert!(find(&o, ".status.conditions[?(@.reason)]").unwrap().is_empty());
    }
}
