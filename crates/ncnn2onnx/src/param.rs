//! Parser for ncnn's text `.param` graph format.
//!
//! Layout: a magic line `7767517`, a line `<layer count> <blob count>`, then one layer per
//! line: `type name n_in n_out in_blobs... out_blobs... key=value...`. Keys `0..` are
//! scalars; a key `-23300 - k` carries an array for key `k` written `len,v1,v2,...`.
//! A value is a float when its text contains `.`, `e` or `E`, exactly as ncnn decides.

use std::collections::BTreeMap;

use crate::ConvertError;

const MAGIC: &str = "7767517";
const ARRAY_KEY_BASE: i32 = -23300;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i32),
    Float(f32),
}

impl Num {
    fn parse(text: &str) -> Option<Num> {
        if text.contains(['.', 'e', 'E']) { text.parse::<f32>().ok().map(Num::Float) } else { text.parse::<i32>().ok().map(Num::Int) }
    }

    fn as_f32(self) -> f32 {
        match self {
            Num::Int(i) => i as f32,
            Num::Float(f) => f,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParamValue {
    Scalar(Num),
    Array(Vec<Num>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ParamDict {
    values: BTreeMap<i32, ParamValue>,
}

impl ParamDict {
    /// An integer parameter. A float written where ncnn expects an int is truncated the
    /// way a C cast would, rather than reinterpreting its bits.
    pub(crate) fn int(&self, key: i32, default: i32) -> i32 {
        match self.values.get(&key) {
            Some(ParamValue::Scalar(Num::Int(i))) => *i,
            Some(ParamValue::Scalar(Num::Float(f))) => *f as i32,
            _ => default,
        }
    }

    pub(crate) fn float(&self, key: i32, default: f32) -> f32 {
        match self.values.get(&key) {
            Some(ParamValue::Scalar(n)) => n.as_f32(),
            _ => default,
        }
    }

    pub(crate) fn floats(&self, key: i32) -> Vec<f32> {
        match self.values.get(&key) {
            Some(ParamValue::Array(v)) => v.iter().map(|n| n.as_f32()).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerDef {
    pub kind: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub params: ParamDict,
    /// 1-based line in the .param text, for error messages.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParamGraph {
    pub layers: Vec<LayerDef>,
}

fn err(line: usize, msg: impl Into<String>) -> ConvertError {
    ConvertError::Param { line, msg: msg.into() }
}

pub(crate) fn parse(text: &str) -> Result<ParamGraph, ConvertError> {
    // Blank lines carry nothing in ncnn's reader either (it scans whitespace-separated
    // tokens), so skip them while keeping real line numbers for messages.
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.trim().is_empty());

    let (n, magic) = lines.next().ok_or_else(|| err(1, "empty file"))?;
    if magic.trim() != MAGIC {
        return Err(err(n, format!("bad magic `{}`, expected {MAGIC} (not an ncnn text .param?)", magic.trim())));
    }
    let (n, counts) = lines.next().ok_or_else(|| err(n + 1, "missing `<layer count> <blob count>` line"))?;
    let counts: Vec<usize> = counts
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| err(n, format!("bad counts line `{}`", counts.trim())))?;
    let [layer_count, _blob_count] = counts[..] else {
        return Err(err(n, "counts line must be `<layer count> <blob count>`"));
    };

    let mut layers = Vec::with_capacity(layer_count);
    for (n, line) in lines {
        layers.push(parse_layer(n, line)?);
    }
    if layers.len() != layer_count {
        return Err(err(n, format!("header says {layer_count} layers but the file has {}", layers.len())));
    }
    Ok(ParamGraph { layers })
}

fn parse_layer(n: usize, line: &str) -> Result<LayerDef, ConvertError> {
    let mut tok = line.split_whitespace();
    let mut next = |what: &str| tok.next().ok_or_else(|| err(n, format!("missing {what}")));
    let kind = next("layer type")?.to_owned();
    let name = next("layer name")?.to_owned();
    let n_in: usize = next("input count")?.parse().map_err(|_| err(n, "bad input count"))?;
    let n_out: usize = next("output count")?.parse().map_err(|_| err(n, "bad output count"))?;
    let inputs = (0..n_in).map(|_| next("input blob name").map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
    let outputs = (0..n_out).map(|_| next("output blob name").map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;

    let mut params = ParamDict::default();
    for kv in tok {
        let (key, value) = kv.split_once('=').ok_or_else(|| err(n, format!("layer `{name}`: param `{kv}` is not key=value")))?;
        let key: i32 = key.parse().map_err(|_| err(n, format!("layer `{name}`: bad param key in `{kv}`")))?;
        let bad_value = || err(n, format!("layer `{name}`: bad value in `{kv}`"));
        let (id, parsed) = if key <= ARRAY_KEY_BASE {
            let mut parts = value.split(',');
            let len: usize = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad_value)?;
            let items = parts.map(Num::parse).collect::<Option<Vec<_>>>().ok_or_else(bad_value)?;
            if items.len() != len {
                return Err(err(n, format!("layer `{name}`: array `{kv}` declares {len} items but has {}", items.len())));
            }
            (ARRAY_KEY_BASE - key, ParamValue::Array(items))
        } else {
            (key, ParamValue::Scalar(Num::parse(value).ok_or_else(bad_value)?))
        };
        params.values.insert(id, parsed);
    }
    Ok(LayerDef { kind, name, inputs, outputs, params, line: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "7767517
3 3
Input            input.1   0 1 data
Convolution      Conv_1    1 1 data 705 0=32 1=3 4=1 5=1 6=18432 9=2 -23310=1,2.000000e-01
Eltwise          Add_16    2 1 705 data out 0=1 -23301=2,2.000000e-01,1.000000e+00
";

    #[test]
    fn parses_layers_blobs_and_params() {
        let g = parse(SAMPLE).unwrap();
        assert_eq!(g.layers.len(), 3);
        let conv = &g.layers[1];
        assert_eq!(conv.kind, "Convolution");
        assert_eq!(conv.name, "Conv_1");
        assert_eq!(conv.inputs, ["data"]);
        assert_eq!(conv.outputs, ["705"]);
        assert_eq!(conv.line, 4);
        assert_eq!(conv.params.int(0, 0), 32);
        assert_eq!(conv.params.int(11, conv.params.int(1, 0)), 3);
        assert_eq!(conv.params.int(6, 0), 18432);
        assert_eq!(conv.params.int(9, 0), 2);
        assert_eq!(conv.params.floats(10), [0.2]);
        assert!(!conv.params.values.contains_key(&7));
        let add = &g.layers[2];
        assert_eq!(add.inputs, ["705", "data"]);
        assert_eq!(add.params.floats(1), [0.2, 1.0]);
    }

    #[test]
    fn float_detection_follows_ncnn() {
        let g = parse("7767517\n1 1\nInterp r 1 1 a b 0=1 1=4.0 2=2e0 3=7 -23305=3,1,2.5,3\n").unwrap();
        let p = &g.layers[0].params;
        assert_eq!(p.values[&1], ParamValue::Scalar(Num::Float(4.0)));
        assert_eq!(p.values[&2], ParamValue::Scalar(Num::Float(2.0)));
        assert_eq!(p.values[&3], ParamValue::Scalar(Num::Int(7)));
        assert_eq!(p.values[&5], ParamValue::Array(vec![Num::Int(1), Num::Float(2.5), Num::Int(3)]));
        assert_eq!(p.float(3, 0.0), 7.0);
        assert_eq!(p.int(1, 0), 4);
    }

    #[test]
    fn rejects_malformed_input() {
        let e = parse("1234\n").unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        let e = parse("7767517\n2 2\nInput in 0 1 data\n").unwrap_err().to_string();
        assert!(e.contains("2 layers but the file has 1"), "{e}");
        let e = parse("7767517\n1 1\nConvolution c 1 1 a\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("output blob"), "{e}");
        let e = parse("7767517\n1 2\nEltwise e 1 1 a b -23301=3,1.0,2.0\n").unwrap_err().to_string();
        assert!(e.contains("declares 3 items but has 2"), "{e}");
        let e = parse("7767517\n1 2\nEltwise e 1 1 a b 0=x\n").unwrap_err().to_string();
        assert!(e.contains("bad value in `0=x`"), "{e}");
    }
}
