//! The check stage: every identifier must be in scope and every function in the
//! supported subset, so a rule this server cannot evaluate fails when the CRD is
//! created instead of being skipped silently. It also notes whether the rule reads
//! `oldSelf`, which makes it a transition rule.

use super::parse::Expr;

pub(super) const GLOBAL_FNS: [&str; 8] = ["size", "int", "uint", "double", "string", "bool", "dyn", "matches"];
pub(super) const METHODS: [&str; 11] =
    ["size", "startsWith", "endsWith", "contains", "matches", "lowerAscii", "upperAscii", "trim", "split", "join", "indexOf"];

pub(super) fn check(e: &Expr, scope: &mut Vec<String>, old: &mut bool) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use crate::cel::Program;

    #[test]
    fn unsupported_is_a_compile_error() {
        let e = Program::compile("self.quantity(1) > 0").unwrap_err();
        assert!(e.contains("quantity"), "{e}");
        assert!(Program::compile("foo == 1").is_err());
        assert!(Program::compile("self ==").is_err());
    }
}
