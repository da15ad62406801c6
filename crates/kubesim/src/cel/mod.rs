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
//!
//! A rule goes through `lex`, `parse` and `check` (names and functions against the
//! subset) when it is compiled, and through `eval` for each object.

mod check;
mod eval;
mod lex;
mod parse;

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use eval::Env;
use parse::Expr;

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
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Program {
    expr: Expr,
    uses_old_self: bool,
}

impl Program {
    pub fn compile(src: &str) -> Result<Program, String> {
        let expr = parse::parse(lex::lex(src)?)?;
        let mut scope = vec!["self".to_string(), "oldSelf".to_string()];
        let mut uses_old_self = false;
        check::check(&expr, &mut scope, &mut uses_old_self)?;
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
        eval::eval(&self.expr, &mut env)
    }
}

/// Every identifier a compiled program may reference (for documentation and tests).
pub fn supported_functions() -> HashSet<&'static str> {
    check::GLOBAL_FNS.iter().chain(check::METHODS.iter()).copied().collect()
}
