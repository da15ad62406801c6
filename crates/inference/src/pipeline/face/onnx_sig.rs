//! Reads the declared inputs and outputs of an ONNX model straight from its protobuf.
//!
//! The runtime's `Model` does not expose tensor shapes, and a restoration model is hundreds of
//! MB of weights: this reader walks only the few small messages it needs and seeks over the
//! rest (initializer data above all), so checking a signature costs a few reads.
//!
//! Field numbers are those of onnx.proto (ModelProto.graph = 7; GraphProto.initializer = 5,
//! input = 11, output = 12; TensorProto.name = 8; ValueInfoProto.name = 1, type = 2;
//! TypeProto.tensor_type = 1; Tensor.elem_type = 1, shape = 2; TensorShapeProto.dim = 1;
//! Dimension.dim_value = 1, dim_param = 2).

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read, Seek};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dim {
    Fixed(i64),
    /// A named (`dim_param`) or unset dimension, decided at run time.
    Free(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorSig {
    pub name: String,
    /// onnx TensorProto.DataType; 0 when the value is not a tensor.
    pub elem_type: i32,
    /// `None` when the model declares no shape at all.
    pub dims: Option<Vec<Dim>>,
}

pub(crate) const FLOAT: i32 = 1;

fn elem_name(t: i32) -> String {
    match t {
        1 => "float32".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        10 => "float16".into(),
        11 => "float64".into(),
        16 => "bfloat16".into(),
        0 => "non-tensor".into(),
        t => format!("type {t}"),
    }
}

impl fmt::Display for TensorSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ", self.name, elem_name(self.elem_type))?;
        match &self.dims {
            None => write!(f, "[unknown shape]"),
            Some(dims) => {
                let d: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => v.to_string(),
                        Dim::Free(name) if name.is_empty() => "?".into(),
                        Dim::Free(name) => name.clone(),
                    })
                    .collect();
                write!(f, "[{}]", d.join(","))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Signature {
    /// Graph inputs that are not initializers, i.e. what a caller must feed, in order.
    pub inputs: Vec<TensorSig>,
    pub outputs: Vec<TensorSig>,
}

pub(crate) fn read_signature(path: &Path) -> io::Result<Signature> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = Reader { r: BufReader::with_capacity(64 * 1024, file), pos: 0 };
    let mut sig = None;
    while r.pos < len {
        let (field, wire) = r.key()?;
        if field == 7 && wire == 2 {
            let n = r.varint()?;
            let end = r.pos + n;
            if end > len {
                return Err(invalid("graph runs past the end of the file"));
            }
            sig = Some(read_graph(&mut r, end)?);
        } else {
            r.skip(wire)?;
        }
    }
    sig.ok_or_else(|| invalid("no graph in the file"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a valid ONNX model: {msg}"))
}

/// Messages read whole (value infos, names) are small; anything bigger is a corrupt file.
const MAX_SMALL: u64 = 1 << 20;

struct Reader<R> {
    r: R,
    pos: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn byte(&mut self) -> io::Result<u8> {
        let mut b = [0u8];
        self.r.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("varint too long"))
    }

    fn key(&mut self) -> io::Result<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn advance(&mut self, n: u64) -> io::Result<()> {
        let step = i64::try_from(n).map_err(|_| invalid("length overflow"))?;
        self.r.seek_relative(step)?;
        self.pos += n;
        Ok(())
    }

    fn skip(&mut self, wire: u8) -> io::Result<()> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.advance(8),
            2 => {
                let n = self.varint()?;
                self.advance(n)
            }
            5 => self.advance(4),
            _ => Err(invalid("unsupported wire type")),
        }
    }

    fn small(&mut self) -> io::Result<Vec<u8>> {
        let n = self.varint()?;
        if n > MAX_SMALL {
            return Err(invalid("oversized field"));
        }
        let mut buf = vec![0; n as usize];
        self.r.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }

    fn string(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.small()?).into_owned())
    }

    /// Calls `f(reader, field, wire)` for each field up to `end`; `f` must consume the value.
    fn fields(&mut self, end: u64, mut f: impl FnMut(&mut Self, u64, u8) -> io::Result<()>) -> io::Result<()> {
        while self.pos < end {
            let (field, wire) = self.key()?;
            f(self, field, wire)?;
        }
        if self.pos != end {
            return Err(invalid("field runs past its message"));
        }
        Ok(())
    }

    fn sub_end(&mut self) -> io::Result<u64> {
        let n = self.varint()?;
        Ok(self.pos + n)
    }
}

fn slice_reader(bytes: Vec<u8>) -> (Reader<Cursor<Vec<u8>>>, u64) {
    let end = bytes.len() as u64;
    (Reader { r: Cursor::new(bytes), pos: 0 }, end)
}

fn read_graph<R: Read + Seek>(r: &mut Reader<R>, end: u64) -> io::Result<Signature> {
    let mut initializers = HashSet::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    r.fields(end, |r, field, wire| match (field, wire) {
        (5, 2) => {
            let tend = r.sub_end()?;
            r.fields(tend, |r, field, wire| {
                if field == 8 && wire == 2 {
                    initializers.insert(r.string()?);
                    Ok(())
                } else {
                    r.skip(wire)
                }
            })
        }
        (11, 2) => {
            inputs.push(value_info(r.small()?)?);
            Ok(())
        }
        (12, 2) => {
            outputs.push(value_info(r.small()?)?);
            Ok(())
        }
        _ => r.skip(wire),
    })?;
    // Models from before IR version 4 list their weights among the inputs too.
    inputs.retain(|i: &TensorSig| !initializers.contains(&i.name));
    Ok(Signature { inputs, outputs })
}

fn value_info(bytes: Vec<u8>) -> io::Result<TensorSig> {
    let (mut r, end) = slice_reader(bytes);
    let mut sig = TensorSig { name: String::new(), elem_type: 0, dims: None };
    r.fields(end, |r, field, wire| match (field, wire) {
        (1, 2) => {
            sig.name = r.string()?;
            Ok(())
        }
        (2, 2) => {
            let tend = r.sub_end()?;
            r.fields(tend, |r, field, wire| {
                if field != 1 || wire != 2 {
                    return r.skip(wire);
                }
                let tt_end = r.sub_end()?;
                r.fields(tt_end, |r, field, wire| match (field, wire) {
                    (1, 0) => {
                        sig.elem_type = r.varint()? as i32;
                        Ok(())
                    }
                    (2, 2) => {
                        let dims = sig.dims.insert(Vec::new());
                        let send = r.sub_end()?;
                        r.fields(send, |r, field, wire| {
                            if field != 1 || wire != 2 {
                                return r.skip(wire);
                            }
                            let dend = r.sub_end()?;
                            let mut dim = Dim::Free(String::new());
                            r.fields(dend, |r, field, wire| match (field, wire) {
                                (1, 0) => {
                                    dim = Dim::Fixed(r.varint()? as i64);
                                    Ok(())
                                }
                                (2, 2) => {
                                    dim = Dim::Free(r.string()?);
                                    Ok(())
                                }
                                _ => r.skip(wire),
                            })?;
                            dims.push(dim);
                            Ok(())
                        })
                    }
                    _ => r.skip(wire),
                })
            })
        }
        _ => r.skip(wire),
    })?;
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal protobuf writer, enough to build the messages read above.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(field: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }
    fn field_varint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }
    fn value_info_bytes(name: &str, dims: &[Result<i64, &str>]) -> Vec<u8> {
        let mut shape = vec![];
        for d in dims {
            let mut dim = vec![];
            match d {
                Ok(v) => field_varint(1, *v as u64, &mut dim),
                Err(p) => field_bytes(2, p.as_bytes(), &mut dim),
            }
            field_bytes(1, &dim, &mut shape);
        }
        let mut tensor = vec![];
        field_varint(1, 1, &mut tensor);
        field_bytes(2, &shape, &mut tensor);
        let mut ty = vec![];
        field_bytes(1, &tensor, &mut ty);
        let mut vi = vec![];
        field_bytes(1, name.as_bytes(), &mut vi);
        field_bytes(2, &ty, &mut vi);
        vi
    }

    #[test]
    fn reads_inputs_outputs_and_skips_initializers() {
        let mut graph = vec![];
        let mut init = vec![];
        field_varint(1, 3, &mut init); // dims
        field_bytes(9, &vec![7u8; 100_000], &mut init); // raw_data before the name
        field_bytes(8, b"w", &mut init);
        field_bytes(5, &init, &mut graph);
        field_bytes(11, &value_info_bytes("x", &[Ok(1), Ok(3), Err("h"), Err("w")]), &mut graph);
        field_bytes(11, &value_info_bytes("w", &[Ok(3)]), &mut graph);
        field_bytes(12, &value_info_bytes("y", &[Ok(1), Ok(3), Ok(512), Ok(512)]), &mut graph);
        let mut model = vec![];
        field_varint(1, 8, &mut model);
        field_bytes(7, &graph, &mut model);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, model).unwrap();

        let sig = read_signature(&path).unwrap();
        assert_eq!(sig.inputs.len(), 1);
        assert_eq!(sig.inputs[0].to_string(), "x: float32 [1,3,h,w]");
        assert_eq!(sig.outputs[0].to_string(), "y: float32 [1,3,512,512]");
    }

    #[test]
    fn rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert!(read_signature(&path).is_err());
        std::fs::write(&path, b"hello world, this is not a model").unwrap();
        assert!(read_signature(&path).is_err());
    }
}
