//! Evaluation over JSON-derived values, with CEL's error semantics for `&&`, `||` and
//! the macros, heterogeneous numeric equality, and the supported functions.

use std::collections::BTreeMap;

use super::CVal;
use super::parse::{BinOp, Expr, MacroKind};

impl CVal {
    fn type_name(&self) -> &'static str {
        match self {
            CVal::Null => "null_type",
            CVal::Bool(_) => "bool",
            CVal::Int(_) => "int",
            CVal::UInt(_) => "uint",
            CVal::Double(_) => "double",
            CVal::Str(_) => "string",
            CVal::List(_) => "list",
            CVal::Map(_) => "map",
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            CVal::Int(i) => Some(*i as f64),
            CVal::UInt(u) => Some(*u as f64),
            CVal::Double(d) => Some(*d),
            _ => None,
        }
    }

    fn display(&self) -> String {
        match self {
            CVal::Null => "null".into(),
            CVal::Bool(b) => b.to_string(),
            CVal::Int(i) => i.to_string(),
            CVal::UInt(u) => format!("{u}u"),
            CVal::Double(d) => d.to_string(),
            CVal::Str(s) => s.clone(),
            CVal::List(_) => "list".into(),
            CVal::Map(_) => "map".into(),
        }
    }
}

pub(super) struct Env {
    pub(super) vars: Vec<(String, CVal)>,
}

impl Env {
    fn lookup(&self, n: &str) -> Result<CVal, String> {
        self.vars.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone()).ok_or_else(|| format!("no such variable '{n}'"))
    }
}

fn as_bool(v: CVal) -> Result<bool, String> {
    match v {
        CVal::Bool(b) => Ok(b),
        other => Err(format!("expected bool, got {}", other.type_name())),
    }
}

pub(super) fn eval(e: &Expr, env: &mut Env) -> Result<CVal, String> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ident(n) => env.lookup(n),
        Expr::Select(t, f) => match eval(t, env)? {
            CVal::Map(m) => m.get(f).cloned().ok_or_else(|| format!("no such key: {f}")),
            other => Err(format!("cannot select field '{f}' from {}", other.type_name())),
        },
        Expr::Has(t, f) => match eval(t, env)? {
            CVal::Map(m) => Ok(CVal::Bool(m.contains_key(f))),
            other => Err(format!("has() on {}", other.type_name())),
        },
        Expr::Index(t, i) => {
            let t = eval(t, env)?;
            let i = eval(i, env)?;
            match (t, i) {
                (CVal::List(l), idx) => {
                    let n = match idx {
                        CVal::Int(n) => n,
                        CVal::UInt(n) => n as i64,
                        CVal::Double(d) if d.fract() == 0.0 => d as i64,
                        other => return Err(format!("bad list index {}", other.type_name())),
                    };
                    if n < 0 || n as usize >= l.len() {
                        return Err(format!("index out of range: {n}"));
                    }
                    Ok(l[n as usize].clone())
                }
                (CVal::Map(m), CVal::Str(k)) => m.get(&k).cloned().ok_or_else(|| format!("no such key: {k}")),
                (t, i) => Err(format!("cannot index {} with {}", t.type_name(), i.type_name())),
            }
        }
        Expr::Not(x) => Ok(CVal::Bool(!as_bool(eval(x, env)?)?)),
        Expr::Neg(x) => match eval(x, env)? {
            CVal::Int(i) => i.checked_neg().map(CVal::Int).ok_or("int overflow".into()),
            CVal::Double(d) => Ok(CVal::Double(-d)),
            other => Err(format!("cannot negate {}", other.type_name())),
        },
        // CEL's logical operators are commutative with respect to errors: a definite
        // answer from either side wins over an error on the other.
        Expr::And(a, b) => {
            let l = eval(a, env).and_then(as_bool);
            if let Ok(false) = l {
                return Ok(CVal::Bool(false));
            }
            let r = eval(b, env).and_then(as_bool);
            match (l, r) {
                (_, Ok(false)) => Ok(CVal::Bool(false)),
                (Ok(true), Ok(true)) => Ok(CVal::Bool(true)),
                (Err(e), _) | (_, Err(e)) => Err(e),
                _ => unreachable!("all combinations handled"),
            }
        }
        Expr::Or(a, b) => {
            let l = eval(a, env).and_then(as_bool);
            if let Ok(true) = l {
                return Ok(CVal::Bool(true));
            }
            let r = eval(b, env).and_then(as_bool);
            match (l, r) {
                (_, Ok(true)) => Ok(CVal::Bool(true)),
                (Ok(false), Ok(false)) => Ok(CVal::Bool(false)),
                (Err(e), _) | (_, Err(e)) => Err(e),
                _ => unreachable!("all combinations handled"),
            }
        }
        Expr::Cond(c, a, b) => {
            if as_bool(eval(c, env)?)? {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
        Expr::List(items) => Ok(CVal::List(items.iter().map(|i| eval(i, env)).collect::<Result<_, _>>()?)),
        Expr::Map(entries) => {
            let mut m = BTreeMap::new();
            for (k, v) in entries {
                let k = match eval(k, env)? {
                    CVal::Str(s) => s,
                    other => return Err(format!("unsupported map key type {}", other.type_name())),
                };
                m.insert(k, eval(v, env)?);
            }
            Ok(CVal::Map(m))
        }
        Expr::Bin(op, a, b) => {
            let l = eval(a, env)?;
            let r = eval(b, env)?;
            binary(*op, l, r)
        }
        Expr::Call { target, name, args } => {
            let target = match target {
                Some(t) => Some(eval(t, env)?),
                None => None,
            };
            let args: Vec<CVal> = args.iter().map(|a| eval(a, env)).collect::<Result<_, _>>()?;
            call(target, name, args)
        }
        Expr::Macro { kind, range, var, body } => {
            let items: Vec<CVal> = match eval(range, env)? {
                CVal::List(l) => l,
                CVal::Map(m) => m.into_keys().map(CVal::Str).collect(),
                other => return Err(format!("cannot iterate over {}", other.type_name())),
            };
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                env.vars.push((var.clone(), item.clone()));
                let r = eval(body, env);
                env.vars.pop();
                results.push((item, r));
            }
            match kind {
                MacroKind::All => {
                    let mut err = None;
                    for (_, r) in results {
                        match r.and_then(as_bool) {
                            Ok(false) => return Ok(CVal::Bool(false)),
                            Ok(true) => {}
                            Err(e) => err = Some(e),
                        }
                    }
                    err.map_or(Ok(CVal::Bool(true)), Err)
                }
                MacroKind::Exists => {
                    let mut err = None;
                    for (_, r) in results {
                        match r.and_then(as_bool) {
                            Ok(true) => return Ok(CVal::Bool(true)),
                            Ok(false) => {}
                            Err(e) => err = Some(e),
                        }
                    }
                    err.map_or(Ok(CVal::Bool(false)), Err)
                }
                MacroKind::ExistsOne => {
                    let mut n = 0;
                    for (_, r) in results {
                        if as_bool(r?)? {
                            n += 1;
                        }
                    }
                    Ok(CVal::Bool(n == 1))
                }
                MacroKind::Map => Ok(CVal::List(results.into_iter().map(|(_, r)| r).collect::<Result<_, _>>()?)),
                MacroKind::Filter => {
                    let mut out = Vec::new();
                    for (item, r) in results {
                        if as_bool(r?)? {
                            out.push(item);
                        }
                    }
                    Ok(CVal::List(out))
                }
            }
        }
    }
}

fn values_equal(a: &CVal, b: &CVal) -> bool {
    match (a, b) {
        (CVal::List(x), CVal::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q)),
        (CVal::Map(x), CVal::Map(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w))),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn compare(a: &CVal, b: &CVal) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (CVal::Str(x), CVal::Str(y)) => Ok(x.cmp(y)),
        (CVal::Bool(x), CVal::Bool(y)) => Ok(x.cmp(y)),
        (CVal::Int(x), CVal::Int(y)) => Ok(x.cmp(y)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).ok_or_else(|| "comparison with NaN".to_string()),
            _ => Err(format!("no such overload: {} < {}", a.type_name(), b.type_name())),
        },
    }
}

fn binary(op: BinOp, l: CVal, r: CVal) -> Result<CVal, String> {
    use std::cmp::Ordering::*;
    Ok(match op {
        BinOp::Eq => CVal::Bool(values_equal(&l, &r)),
        BinOp::Ne => CVal::Bool(!values_equal(&l, &r)),
        BinOp::Lt => CVal::Bool(compare(&l, &r)? == Less),
        BinOp::Le => CVal::Bool(compare(&l, &r)? != Greater),
        BinOp::Gt => CVal::Bool(compare(&l, &r)? == Greater),
        BinOp::Ge => CVal::Bool(compare(&l, &r)? != Less),
        BinOp::In => match r {
            CVal::List(items) => CVal::Bool(items.iter().any(|i| values_equal(i, &l))),
            CVal::Map(m) => match l {
                CVal::Str(k) => CVal::Bool(m.contains_key(&k)),
                _ => CVal::Bool(false),
            },
            other => return Err(format!("'in' on {}", other.type_name())),
        },
        BinOp::Add => match (l, r) {
            (CVal::Int(a), CVal::Int(b)) => CVal::Int(a.checked_add(b).ok_or("int overflow")?),
            (CVal::UInt(a), CVal::UInt(b)) => CVal::UInt(a.checked_add(b).ok_or("uint overflow")?),
            (CVal::Str(a), CVal::Str(b)) => CVal::Str(a + &b),
            (CVal::List(mut a), CVal::List(b)) => {
                a.extend(b);
                CVal::List(a)
            }
            (a, b) => CVal::Double(num(&a)? + num(&b)?),
        },
        BinOp::Sub => match (l, r) {
            (CVal::Int(a), CVal::Int(b)) => CVal::Int(a.checked_sub(b).ok_or("int overflow")?),
            (CVal::UInt(a), CVal::UInt(b)) => CVal::UInt(a.checked_sub(b).ok_or("uint overflow")?),
            (a, b) => CVal::Double(num(&a)? - num(&b)?),
        },
        BinOp::Mul => match (l, r) {
            (CVal::Int(a), CVal::Int(b)) => CVal::Int(a.checked_mul(b).ok_or("int overflow")?),
            (CVal::UInt(a), CVal::UInt(b)) => CVal::UInt(a.checked_mul(b).ok_or("uint overflow")?),
            (a, b) => CVal::Double(num(&a)? * num(&b)?),
        },
        BinOp::Div => match (l, r) {
            (CVal::Int(_), CVal::Int(0)) | (CVal::UInt(_), CVal::UInt(0)) => {
                return Err("division by zero".into());
            }
            (CVal::Int(a), CVal::Int(b)) => CVal::Int(a.checked_div(b).ok_or("int overflow")?),
            (CVal::UInt(a), CVal::UInt(b)) => CVal::UInt(a / b),
            (a, b) => CVal::Double(num(&a)? / num(&b)?),
        },
        BinOp::Mod => match (l, r) {
            (CVal::Int(_), CVal::Int(0)) | (CVal::UInt(_), CVal::UInt(0)) => {
                return Err("modulus by zero".into());
            }
            (CVal::Int(a), CVal::Int(b)) => CVal::Int(a.checked_rem(b).ok_or("int overflow")?),
            (CVal::UInt(a), CVal::UInt(b)) => CVal::UInt(a % b),
            (a, b) => {
                return Err(format!("no such overload: {} % {}", a.type_name(), b.type_name()));
            }
        },
    })
}

fn num(v: &CVal) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("expected a number, got {}", v.type_name()))
}

fn string_arg(args: &[CVal], i: usize, f: &str) -> Result<String, String> {
    match args.get(i) {
        Some(CVal::Str(s)) => Ok(s.clone()),
        _ => Err(format!("{f}() expects a string argument")),
    }
}

fn call(target: Option<CVal>, name: &str, args: Vec<CVal>) -> Result<CVal, String> {
    // Global functions take the receiver as the first argument.
    let (recv, args) = match target {
        Some(t) => (t, args),
        None => {
            let mut it = args.into_iter();
            let first = it.next().ok_or_else(|| format!("{name}() needs an argument"))?;
            (first, it.collect())
        }
    };
    match name {
        "size" => Ok(CVal::Int(match &recv {
            CVal::Str(s) => s.chars().count() as i64,
            CVal::List(l) => l.len() as i64,
            CVal::Map(m) => m.len() as i64,
            other => return Err(format!("size() of {}", other.type_name())),
        })),
        "dyn" => Ok(recv),
        "int" => match recv {
            CVal::Int(i) => Ok(CVal::Int(i)),
            CVal::UInt(u) => i64::try_from(u).map(CVal::Int).map_err(|e| e.to_string()),
            CVal::Double(d) => Ok(CVal::Int(d.trunc() as i64)),
            CVal::Str(s) => s.parse().map(CVal::Int).map_err(|_| format!("int({s:?})")),
            other => Err(format!("int() of {}", other.type_name())),
        },
        "uint" => match recv {
            CVal::Int(i) => u64::try_from(i).map(CVal::UInt).map_err(|e| e.to_string()),
            CVal::UInt(u) => Ok(CVal::UInt(u)),
            CVal::Double(d) if d >= 0.0 => Ok(CVal::UInt(d.trunc() as u64)),
            CVal::Str(s) => s.parse().map(CVal::UInt).map_err(|_| format!("uint({s:?})")),
            other => Err(format!("uint() of {}", other.type_name())),
        },
        "double" => match recv {
            CVal::Str(s) => s.parse().map(CVal::Double).map_err(|_| format!("double({s:?})")),
            other => Ok(CVal::Double(num(&other)?)),
        },
        "string" => Ok(CVal::Str(recv.display())),
        "bool" => match recv {
            CVal::Bool(b) => Ok(CVal::Bool(b)),
            CVal::Str(s) => match s.as_str() {
                "true" | "True" | "TRUE" | "t" | "1" => Ok(CVal::Bool(true)),
                "false" | "False" | "FALSE" | "f" | "0" => Ok(CVal::Bool(false)),
                _ => Err(format!("bool({s:?})")),
            },
            other => Err(format!("bool() of {}", other.type_name())),
        },
        "startsWith" | "endsWith" | "contains" | "matches" | "indexOf" => {
            let s = match &recv {
                CVal::Str(s) => s.clone(),
                other => return Err(format!("{name}() on {}", other.type_name())),
            };
            let a = string_arg(&args, 0, name)?;
            Ok(match name {
                "startsWith" => CVal::Bool(s.starts_with(&a)),
                "endsWith" => CVal::Bool(s.ends_with(&a)),
                "contains" => CVal::Bool(s.contains(&a)),
                "indexOf" => CVal::Int(s.find(&a).map(|byte| s[..byte].chars().count() as i64).unwrap_or(-1)),
                _ => {
                    let re = regex::Regex::new(&a).map_err(|e| e.to_string())?;
                    CVal::Bool(re.is_match(&s))
                }
            })
        }
        "lowerAscii" | "upperAscii" | "trim" => match recv {
            CVal::Str(s) => Ok(CVal::Str(match name {
                "lowerAscii" => s.to_ascii_lowercase(),
                "upperAscii" => s.to_ascii_uppercase(),
                _ => s.trim().to_string(),
            })),
            other => Err(format!("{name}() on {}", other.type_name())),
        },
        "split" => match recv {
            CVal::Str(s) => {
                let sep = string_arg(&args, 0, name)?;
                Ok(CVal::List(s.split(sep.as_str()).map(|p| CVal::Str(p.to_string())).collect()))
            }
            other => Err(format!("split() on {}", other.type_name())),
        },
        "join" => match recv {
            CVal::List(items) => {
                let sep = if args.is_empty() { String::new() } else { string_arg(&args, 0, name)? };
                let parts: Result<Vec<String>, String> = items
                    .into_iter()
                    .map(|i| match i {
                        CVal::Str(s) => Ok(s),
                        other => Err(format!("join() of {}", other.type_name())),
                    })
                    .collect();
                Ok(CVal::Str(parts?.join(&sep)))
            }
            other => Err(format!("join() on {}", other.type_name())),
        },
        other => Err(format!("unknown function {other}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::cel::{CVal, Program};

    fn run(rule: &str, s: Value, old: Option<Value>) -> Result<CVal, String> {
        Program::compile(rule)?.eval(&s, old.as_ref())
    }

    #[test]
    fn immutability_and_comparisons() {
        assert_eq!(run("self == oldSelf", json!({"a": 1}), Some(json!({"a": 1}))), Ok(CVal::Bool(true)));
        assert_eq!(run("self == oldSelf", json!({"a": 1}), Some(json!({"a": 2}))), Ok(CVal::Bool(false)));
        assert!(Program::compile("self == oldSelf").unwrap().is_transition());
        assert_eq!(run("self.min <= self.max", json!({"min": 1, "max": 3}), None), Ok(CVal::Bool(true)));
        assert_eq!(run("self.min <= self.max", json!({"min": 4, "max": 3.5}), None), Ok(CVal::Bool(false)));
    }

    #[test]
    fn functions_and_macros() {
        let v = json!({"name": "gpu-a", "items": [1, 2, 3], "tags": {"x": "y"}});
        for (rule, want) in [
            ("self.name.startsWith('gpu-') && size(self.items) == 3", true),
            ("self.items.all(i, i > 0) && self.items.exists(i, i == 2)", true),
            ("self.items.exists_one(i, i > 2)", true),
            ("self.items.map(i, i * 2) == [2, 4, 6]", true),
            ("self.items.filter(i, i % 2 == 1).size() == 2", true),
            ("has(self.tags) && !has(self.missing)", true),
            ("'x' in self.tags && 2 in self.items", true),
            ("self.name.matches('^gpu-[a-z]$')", true),
            ("self.items[0] == 1 ? self.tags['x'] == 'y' : false", true),
            ("(self.items[1] + 1) * 2 == 6 && -1 < 0", true),
            ("self.missing == 1 || true", true),
        ] {
            assert_eq!(run(rule, v.clone(), None), Ok(CVal::Bool(want)), "{rule}");
        }
    }
}
