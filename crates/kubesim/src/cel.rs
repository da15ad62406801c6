//! A small CEL evaluator for `x-kubernetes-validations`.
//!
//! Supported: literals (int, uint, double, string, bool, null, lists, maps), `self`,
//! `oldSelf`, field selection, indexing, `has()`, `size()`, arithmetic, comparisons,
//! `in`, `&&`/`||`/`!`, the ternary operator, the string functions `startsWith`,
//! `endsWith`, `contains`, `matches`, `lowerAscii`, `upperAscii`, `trim`, `split`,
//! `join`, `indexOf`, conversions `int`, `uint`, `double`, `string`, `bool`, `dyn`,
//! and the macros `all`, `exists`, `exists_one`, `map`, `filter`.
//! Anything else is rejected when the CRD is created, so a rule is never silently
//! skipped. Numbers compare across int/double (heterogeneous equality, as newer CEL).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum CVal {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    List(Vec<CVal>),
    Map(BTreeMap<String, CVal>),
}

impl CVal {
    pub fn from_json(v: &Value) -> CVal {
        match v {
            Value::Null => CVal::Null,
            Value::Bool(b) => CVal::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    CVal::Int(i)
                } else if let Some(u) = n.as_u64() {
                    CVal::UInt(u)
                } else {
                    CVal::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => CVal::Str(s.clone()),
            Value::Array(a) => CVal::List(a.iter().map(CVal::from_json).collect()),
            Value::Object(m) => CVal::Map(m.iter().map(|(k, v)| (k.clone(), CVal::from_json(v))).collect()),
        }
    }

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

#[derive(Debug, Clone, Copy, PartialEq)]
enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MacroKind {
    All,
    Exists,
    ExistsOne,
    Map,
    Filter,
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(CVal),
    Ident(String),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call { target: Option<Box<Expr>>, name: String, args: Vec<Expr> },
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Has(Box<Expr>, String),
    Macro { kind: MacroKind, range: Box<Expr>, var: String, body: Box<Expr> },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Program {
    expr: Expr,
    uses_old_self: bool,
}

impl Program {
    pub fn compile(src: &str) -> Result<Program, String> {
        let tokens = lex(src)?;
        let mut p = Parser { tokens, pos: 0 };
        let expr = p.expr()?;
        if p.pos != p.tokens.len() {
            return Err(format!("unexpected token {:?}", p.tokens[p.pos]));
        }
        let mut scope = vec!["self".to_string(), "oldSelf".to_string()];
        let mut uses_old_self = false;
        check(&expr, &mut scope, &mut uses_old_self)?;
        Ok(Program { expr, uses_old_self })
    }

    /// Transition rules only run on updates where the old value exists.
    pub fn is_transition(&self) -> bool {
        self.uses_old_self
    }

    pub fn eval(&self, self_val: &Value, old_self: Option<&Value>) -> Result<CVal, String> {
        let mut env = Env { vars: Vec::new() };
        env.vars.push(("self".into(), CVal::from_json(self_val)));
        if let Some(o) = old_self {
            env.vars.push(("oldSelf".into(), CVal::from_json(o)));
        }
        eval(&self.expr, &mut env)
    }
}

// ---------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    const PUNCTS: [&str; 23] =
        ["==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", "{", "}", ".", ",", "?", ":", "!", "-", "+", "*", "/", "%", "<"];
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            if c == '0' && i + 1 < chars.len() && (chars[i + 1] == 'x' || chars[i + 1] == 'X') {
                i += 2;
                let hs = i;
                while i < chars.len() && chars[i].is_ascii_hexdigit() {
                    i += 1;
                }
                let s: String = chars[hs..i].iter().collect();
                let v = i64::from_str_radix(&s, 16).map_err(|e| e.to_string())?;
                out.push(Tok::Int(v));
                continue;
            }
            let mut is_double = false;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                is_double = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                is_double = true;
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s: String = chars[start..i].iter().collect();
            if is_double {
                out.push(Tok::Double(s.parse().map_err(|_| format!("bad number {s}"))?));
            } else if i < chars.len() && (chars[i] == 'u' || chars[i] == 'U') {
                i += 1;
                out.push(Tok::UInt(s.parse().map_err(|_| format!("bad number {s}"))?));
            } else {
                out.push(Tok::Int(s.parse().map_err(|_| format!("bad number {s}"))?));
            }
            continue;
        }
        let raw = (c == 'r' || c == 'R') && i + 1 < chars.len() && (chars[i + 1] == '"' || chars[i + 1] == '\'');
        if c == '"' || c == '\'' || raw {
            if raw {
                i += 1;
            }
            let q = chars[i];
            let triple = i + 2 < chars.len() && chars[i + 1] == q && chars[i + 2] == q;
            i += if triple { 3 } else { 1 };
            let mut s = String::new();
            loop {
                if i >= chars.len() {
                    return Err("unterminated string literal".into());
                }
                if triple {
                    if i + 2 < chars.len() && chars[i] == q && chars[i + 1] == q && chars[i + 2] == q {
                        i += 3;
                        break;
                    }
                } else if chars[i] == q {
                    i += 1;
                    break;
                }
                if chars[i] == '\\' && !raw {
                    i += 1;
                    let e = *chars.get(i).ok_or("unterminated escape")?;
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' => '\\',
                        '"' => '"',
                        '\'' => '\'',
                        '`' => '`',
                        '?' => '?',
                        other => return Err(format!("unsupported escape \\{other}")),
                    });
                    i += 1;
                    continue;
                }
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Str(s));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let mut matched = false;
        for p in PUNCTS.iter().chain([">"].iter()) {
            if rest.starts_with(p) {
                out.push(Tok::Punct(p));
                i += p.chars().count();
                matched = true;
                break;
            }
        }
        if !matched {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_punct(&self, p: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Tok::Punct(q)) if *q == p)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.peek_punct(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.eat_punct(p) { Ok(()) } else { Err(format!("expected {p:?}, found {:?}", self.tokens.get(self.pos))) }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let c = self.or()?;
        if self.eat_punct("?") {
            let a = self.or()?;
            self.expect(":")?;
            let b = self.expr()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.eat_punct("||") {
            let r = self.and()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.rel()?;
        while self.eat_punct("&&") {
            let r = self.rel()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn rel(&mut self) -> Result<Expr, String> {
        let mut l = self.add()?;
        loop {
            let op = match self.tokens.get(self.pos) {
                Some(Tok::Punct("==")) => BinOp::Eq,
                Some(Tok::Punct("!=")) => BinOp::Ne,
                Some(Tok::Punct("<")) => BinOp::Lt,
                Some(Tok::Punct("<=")) => BinOp::Le,
                Some(Tok::Punct(">")) => BinOp::Gt,
                Some(Tok::Punct(">=")) => BinOp::Ge,
                Some(Tok::Ident(s)) if s == "in" => BinOp::In,
                _ => return Ok(l),
            };
            self.pos += 1;
            let r = self.add()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
    }

    fn add(&mut self) -> Result<Expr, String> {
        let mut l = self.mul()?;
        loop {
            let op = if self.eat_punct("+") {
                BinOp::Add
            } else if self.eat_punct("-") {
                BinOp::Sub
            } else {
                return Ok(l);
            };
            let r = self.mul()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
    }

    fn mul(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_punct("*") {
                BinOp::Mul
            } else if self.eat_punct("/") {
                BinOp::Div
            } else if self.eat_punct("%") {
                BinOp::Mod
            } else {
                return Ok(l);
            };
            let r = self.unary()?;
            l = Expr::Bin(op, Box::new(l), Box::new(r));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_punct("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat_punct("-") {
            return Ok(match self.unary()? {
                Expr::Lit(CVal::Int(i)) => Expr::Lit(CVal::Int(-i)),
                Expr::Lit(CVal::Double(d)) => Expr::Lit(CVal::Double(-d)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        self.member()
    }

    fn args(&mut self) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat_punct(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_punct(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat_punct(".") {
                let name = match self.tokens.get(self.pos) {
                    Some(Tok::Ident(s)) => s.clone(),
                    other => return Err(format!("expected field name, found {other:?}")),
                };
                self.pos += 1;
                if self.eat_punct("(") {
                    let args = self.args()?;
                    e = make_method(e, name, args)?;
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat_punct("[") {
                let idx = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let t = self.tokens.get(self.pos).cloned().ok_or("unexpected end of expression")?;
        self.pos += 1;
        match t {
            Tok::Int(i) => Ok(Expr::Lit(CVal::Int(i))),
            Tok::UInt(u) => Ok(Expr::Lit(CVal::UInt(u))),
            Tok::Double(d) => Ok(Expr::Lit(CVal::Double(d))),
            Tok::Str(s) => Ok(Expr::Lit(CVal::Str(s))),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Lit(CVal::Bool(true))),
                "false" => Ok(Expr::Lit(CVal::Bool(false))),
                "null" => Ok(Expr::Lit(CVal::Null)),
                _ => {
                    if self.eat_punct("(") {
                        let args = self.args()?;
                        if name == "has" {
                            return match args.as_slice() {
                                [Expr::Select(t, f)] => Ok(Expr::Has(t.clone(), f.clone())),
                                _ => Err("has() takes a single field selection".into()),
                            };
                        }
                        Ok(Expr::Call { target: None, name, args })
                    } else {
                        Ok(Expr::Ident(name))
                    }
                }
            },
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => {
                let mut items = Vec::new();
                if !self.eat_punct("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat_punct("]") {
                            break;
                        }
                        self.expect(",")?;
                        if self.eat_punct("]") {
                            break;
                        }
                    }
                }
                Ok(Expr::List(items))
            }
            Tok::Punct("{") => {
                let mut entries = Vec::new();
                if !self.eat_punct("}") {
                    loop {
                        let k = self.expr()?;
                        self.expect(":")?;
                        let v = self.expr()?;
                        entries.push((k, v));
                        if self.eat_punct("}") {
                            break;
                        }
                        self.expect(",")?;
                        if self.eat_punct("}") {
                            break;
                        }
                    }
                }
                Ok(Expr::Map(entries))
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }
}

fn make_method(target: Expr, name: String, args: Vec<Expr>) -> Result<Expr, String> {
    let kind = match name.as_str() {
        "all" => Some(MacroKind::All),
        "exists" => Some(MacroKind::Exists),
        "exists_one" => Some(MacroKind::ExistsOne),
        "map" => Some(MacroKind::Map),
        "filter" => Some(MacroKind::Filter),
        _ => None,
    };
    if let Some(kind) = kind {
        let mut args = args.into_iter();
        let var = match args.next() {
            Some(Expr::Ident(v)) => v,
            _ => {
                return Err(format!("{name}() needs a variable name as its first argument"));
            }
        };
        let body = args.next().ok_or_else(|| format!("{name}() needs a predicate"))?;
        if args.next().is_some() {
            return Err(format!("{name}() with a filter argument is not supported"));
        }
        return Ok(Expr::Macro { kind, range: Box::new(target), var, body: Box::new(body) });
    }
    Ok(Expr::Call { target: Some(Box::new(target)), name, args })
}

const GLOBAL_FNS: [&str; 8] = ["size", "int", "uint", "double", "string", "bool", "dyn", "matches"];
const METHODS: [&str; 11] =
    ["size", "startsWith", "endsWith", "contains", "matches", "lowerAscii", "upperAscii", "trim", "split", "join", "indexOf"];

fn check(e: &Expr, scope: &mut Vec<String>, old: &mut bool) -> Result<(), String> {
    match e {
        Expr::Lit(_) => Ok(()),
        Expr::Ident(n) => {
            if n == "oldSelf" {
                *old = true;
            }
            if scope.iter().any(|s| s == n) { Ok(()) } else { Err(format!("undeclared reference to '{n}'")) }
        }
        Expr::Select(t, _) | Expr::Has(t, _) | Expr::Not(t) | Expr::Neg(t) => check(t, scope, old),
        Expr::Index(a, b) | Expr::Bin(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
            check(a, scope, old)?;
            check(b, scope, old)
        }
        Expr::Cond(a, b, c) => {
            check(a, scope, old)?;
            check(b, scope, old)?;
            check(c, scope, old)
        }
        Expr::List(items) => items.iter().try_for_each(|i| check(i, scope, old)),
        Expr::Map(entries) => entries.iter().try_for_each(|(k, v)| {
            check(k, scope, old)?;
            check(v, scope, old)
        }),
        Expr::Call { target, name, args } => {
            let known = if target.is_some() { METHODS.contains(&name.as_str()) } else { GLOBAL_FNS.contains(&name.as_str()) };
            if !known {
                return Err(format!("function '{name}' is not supported by this server's CEL subset"));
            }
            if let Some(t) = target {
                check(t, scope, old)?;
            }
            args.iter().try_for_each(|a| check(a, scope, old))
        }
        Expr::Macro { range, var, body, .. } => {
            check(range, scope, old)?;
            scope.push(var.clone());
            let r = check(body, scope, old);
            scope.pop();
            r
        }
    }
}

// ---------------------------------------------------------------- evaluation

struct Env {
    vars: Vec<(String, CVal)>,
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

fn eval(e: &Expr, env: &mut Env) -> Result<CVal, String> {
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

/// Every identifier a compiled program may reference (for documentation and tests).
pub fn supported_functions() -> HashSet<&'static str> {
    GLOBAL_FNS.iter().chain(METHODS.iter()).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn unsupported_is_a_compile_error() {
        let e = Program::compile("self.quantity(1) > 0").unwrap_err();
        assert!(e.contains("quantity"), "{e}");
        assert!(Program::compile("foo == 1").is_err());
        assert!(Program::compile("self ==").is_err());
    }
}
