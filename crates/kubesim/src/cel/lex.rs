//! Tokens of the CEL subset: numbers (decimal, hex, unsigned, double), quoted, raw
//! and triple-quoted strings, identifiers and punctuation.

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
}

pub(super) fn lex(src: &str) -> Result<Vec<Tok>, String> {
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
