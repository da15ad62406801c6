//! The syntax tree and a recursive-descent parser over CEL's precedence levels
//! (ternary, `||`, `&&`, relations, additive, multiplicative, unary, member access).
//! Macros are recognised here so later stages see them as one node.

use super::CVal;
use super::lex::Tok;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum BinOp {
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
pub(super) enum MacroKind {
    All,
    Exists,
    ExistsOne,
    Map,
    Filter,
}

#[derive(Debug, Clone)]
pub(super) enum Expr {
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

/// Parses a whole rule: trailing tokens are an error, not ignored.
pub(super) fn parse(tokens: Vec<Tok>) -> Result<Expr, String> {
    let mut p = Parser { tokens, pos: 0 };
    let expr = p.expr()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected token {:?}", p.tokens[p.pos]));
    }
    Ok(expr)
}

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
