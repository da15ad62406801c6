//! A minimal ONNX writer: hand-declared protobuf messages plus a small graph builder.
//!
//! Only the parts of `onnx.proto` that float32 inference graphs need are declared. Field
//! numbers follow `onnx/onnx.proto`; unknown fields are simply never written, which every
//! protobuf reader accepts. The builder is also used by other crates' tests to produce
//! tiny models, so its surface is kept deliberately stable.

use prost::Message;

/// Protobuf messages from `onnx.proto` (proto2), declared by hand because `protoc` is not
/// available at build time. Scalars are `Option` to keep proto2 presence semantics, and
/// repeated scalars are unpacked, matching what the reference implementation emits.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, optional, tag = "1")]
        pub ir_version: Option<i64>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        #[prost(string, optional, tag = "2")]
        pub producer_name: Option<String>,
        #[prost(string, optional, tag = "3")]
        pub producer_version: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub domain: Option<String>,
        #[prost(int64, optional, tag = "5")]
        pub model_version: Option<i64>,
        #[prost(string, optional, tag = "6")]
        pub doc_string: Option<String>,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, optional, tag = "1")]
        pub domain: Option<String>,
        #[prost(int64, optional, tag = "2")]
        pub version: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(string, optional, tag = "10")]
        pub doc_string: Option<String>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "13")]
        pub value_info: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, optional, tag = "3")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "4")]
        pub op_type: Option<String>,
        #[prost(string, optional, tag = "7")]
        pub domain: Option<String>,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
        #[prost(string, optional, tag = "6")]
        pub doc_string: Option<String>,
    }

    /// Values of `AttributeProto.type` (the `AttributeType` enum in onnx.proto).
    pub mod attribute_type {
        pub const FLOAT: i32 = 1;
        pub const INT: i32 = 2;
        pub const STRING: i32 = 3;
        pub const TENSOR: i32 = 4;
        pub const FLOATS: i32 = 6;
        pub const INTS: i32 = 7;
        pub const STRINGS: i32 = 8;
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "13")]
        pub doc_string: Option<String>,
        /// An `AttributeType`; declared as int32 because the enum is wire-identical.
        #[prost(int32, optional, tag = "20")]
        pub r#type: Option<i32>,
        #[prost(float, optional, tag = "2")]
        pub f: Option<f32>,
        #[prost(int64, optional, tag = "3")]
        pub i: Option<i64>,
        #[prost(bytes = "vec", optional, tag = "4")]
        pub s: Option<Vec<u8>>,
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        #[prost(float, repeated, packed = "false", tag = "7")]
        pub floats: Vec<f32>,
        #[prost(int64, repeated, packed = "false", tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
    }

    /// Values of `TensorProto.data_type` (the `DataType` enum in onnx.proto).
    pub mod data_type {
        pub const FLOAT: i32 = 1;
        pub const UINT8: i32 = 2;
        pub const INT8: i32 = 3;
        pub const INT32: i32 = 6;
        pub const INT64: i32 = 7;
        pub const FLOAT16: i32 = 10;
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, optional, tag = "2")]
        pub data_type: Option<i32>,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(int64, repeated, tag = "7")]
        pub int64_data: Vec<i64>,
        #[prost(string, optional, tag = "8")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "12")]
        pub doc_string: Option<String>,
        #[prost(bytes = "vec", optional, tag = "9")]
        pub raw_data: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
        #[prost(string, optional, tag = "3")]
        pub doc_string: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(oneof = "type_proto::Value", tags = "1")]
        pub value: Option<type_proto::Value>,
        #[prost(string, optional, tag = "6")]
        pub denotation: Option<String>,
    }

    pub mod type_proto {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(message, tag = "1")]
            TensorType(Tensor),
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Tensor {
            #[prost(int32, optional, tag = "1")]
            pub elem_type: Option<i32>,
            #[prost(message, optional, tag = "2")]
            pub shape: Option<super::TensorShapeProto>,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<tensor_shape_proto::Dimension>,
    }

    pub mod tensor_shape_proto {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Dimension {
            #[prost(oneof = "dimension::Value", tags = "1, 2")]
            pub value: Option<dimension::Value>,
            #[prost(string, optional, tag = "3")]
            pub denotation: Option<String>,
        }

        pub mod dimension {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(int64, tag = "1")]
                DimValue(i64),
                #[prost(string, tag = "2")]
                DimParam(String),
            }
        }
    }
}

use proto::tensor_shape_proto::{Dimension, dimension};

/// Opset and IR version every model from this crate declares. Opset 17 keeps `Resize` and
/// `Pad` in their input-based forms, which ONNX Runtime has supported for years.
pub const OPSET_VERSION: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// A node attribute. The variants map one-to-one onto ONNX attribute types.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    Int(String, i64),
    Ints(String, Vec<i64>),
    Float(String, f32),
    Floats(String, Vec<f32>),
    String(String, String),
}

impl Attribute {
    fn to_proto(&self) -> proto::AttributeProto {
        use proto::attribute_type as t;
        let mut a = proto::AttributeProto::default();
        match self {
            Attribute::Int(name, v) => {
                a.name = Some(name.clone());
                a.r#type = Some(t::INT);
                a.i = Some(*v);
            }
            Attribute::Ints(name, v) => {
                a.name = Some(name.clone());
                a.r#type = Some(t::INTS);
                a.ints = v.clone();
            }
            Attribute::Float(name, v) => {
                a.name = Some(name.clone());
                a.r#type = Some(t::FLOAT);
                a.f = Some(*v);
            }
            Attribute::Floats(name, v) => {
                a.name = Some(name.clone());
                a.r#type = Some(t::FLOATS);
                a.floats = v.clone();
            }
            Attribute::String(name, v) => {
                a.name = Some(name.clone());
                a.r#type = Some(t::STRING);
                a.s = Some(v.as_bytes().to_vec());
            }
        }
        a
    }
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dim {
    Fixed(i64),
    Symbolic(String),
}

/// Builds a single-graph float32 ONNX model.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    doc_string: Option<String>,
    inputs: Vec<proto::ValueInfoProto>,
    outputs: Vec<proto::ValueInfoProto>,
    initializers: Vec<proto::TensorProto>,
    nodes: Vec<proto::NodeProto>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            name: name.to_owned(),
            doc_string: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            initializers: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Declares a float32 graph input. `dims`: `Some(n)` fixed, `None` symbolic; symbolic
    /// dims are named `<tensor>_d<index>` so that distinct tensors never alias by accident.
    pub fn input(&mut self, name: &str, dims: &[Option<i64>]) -> &mut Self {
        let dims = auto_dims(name, dims);
        self.inputs.push(value_info(name, &dims));
        self
    }

    /// Declares a float32 graph output; see [`GraphBuilder::input`] for `dims`.
    pub fn output(&mut self, name: &str, dims: &[Option<i64>]) -> &mut Self {
        let dims = auto_dims(name, dims);
        self.outputs.push(value_info(name, &dims));
        self
    }

    pub(crate) fn input_dims(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.inputs.push(value_info(name, dims));
        self
    }

    pub(crate) fn output_dims(&mut self, name: &str, dims: &[Dim]) -> &mut Self {
        self.outputs.push(value_info(name, dims));
        self
    }

    pub(crate) fn doc_string(&mut self, doc: &str) -> &mut Self {
        self.doc_string = Some(doc.to_owned());
        self
    }

    /// Adds a float32 constant; `dims: &[]` makes a scalar.
    pub fn initializer_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> &mut Self {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, proto::data_type::FLOAT, raw)
    }

    /// Adds an int64 constant (shapes, pads, axes); `dims: &[]` makes a scalar.
    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> &mut Self {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(name, dims, proto::data_type::INT64, raw)
    }

    fn push_initializer(&mut self, name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> &mut Self {
        self.initializers.push(proto::TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type),
            name: Some(name.to_owned()),
            raw_data: Some(raw),
            ..Default::default()
        });
        self
    }

    /// Appends a node in the default domain, named `<op_type>_<index>`. Nodes must be added
    /// in a topological order, as ONNX requires.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attribute>) -> &mut Self {
        let name = format!("{op_type}_{}", self.nodes.len());
        self.named_node(&name, op_type, inputs, outputs, attrs)
    }

    pub(crate) fn named_node(&mut self, name: &str, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attribute>) -> &mut Self {
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name: Some(name.to_owned()),
            op_type: Some(op_type.to_owned()),
            attribute: attrs.iter().map(Attribute::to_proto).collect(),
            ..Default::default()
        });
        self
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn initializer_count(&self) -> usize {
        self.initializers.len()
    }

    pub(crate) fn to_model(&self) -> proto::ModelProto {
        proto::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET_VERSION) }],
            producer_name: Some("purrify-ncnn2onnx".to_owned()),
            producer_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            doc_string: self.doc_string.clone(),
            graph: Some(proto::GraphProto {
                node: self.nodes.clone(),
                name: Some(self.name.clone()),
                initializer: self.initializers.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Serialises the model (`ModelProto`, opset 17, IR version 8).
    pub fn to_model_bytes(&self) -> Vec<u8> {
        self.to_model().encode_to_vec()
    }
}

fn auto_dims(tensor: &str, dims: &[Option<i64>]) -> Vec<Dim> {
    dims.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(n) => Dim::Fixed(*n),
            None => Dim::Symbolic(format!("{tensor}_d{i}")),
        })
        .collect()
}

fn value_info(name: &str, dims: &[Dim]) -> proto::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n),
                Dim::Symbolic(s) => dimension::Value::DimParam(s.clone()),
            }),
            denotation: None,
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(proto::data_type::FLOAT),
                shape: Some(proto::TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;

    #[test]
    fn model_round_trips_through_prost() {
        let mut g = GraphBuilder::new("tiny");
        g.input("x", &[Some(1), Some(3), None, None])
            .initializer_f32("w", &[2], &[1.5, -2.0])
            .initializer_i64("shape", &[], &[7])
            .node(
                "Foo",
                &["x", "w"],
                &["y"],
                vec![
                    Attribute::Int("i".into(), 0),
                    Attribute::Ints("is".into(), vec![1, -2]),
                    Attribute::Float("f".into(), 0.25),
                    Attribute::Floats("fs".into(), vec![0.5]),
                    Attribute::String("s".into(), "nearest".into()),
                ],
            )
            .output("y", &[Some(1), Some(3), None, None]);
        let bytes = g.to_model_bytes();
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(m, g.to_model());
        assert_eq!(m.ir_version, Some(8));
        assert_eq!(m.opset_import[0].version, Some(17));
        let graph = m.graph.unwrap();
        assert_eq!(graph.name.as_deref(), Some("tiny"));
        let w = &graph.initializer[0];
        assert_eq!(w.data_type, Some(data_type::FLOAT));
        assert_eq!(w.raw_data.as_deref(), Some(&[0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0][..]));
        let scalar = &graph.initializer[1];
        assert!(scalar.dims.is_empty());
        assert_eq!(scalar.raw_data.as_deref(), Some(&7i64.to_le_bytes()[..]));
        let node = &graph.node[0];
        assert_eq!(node.op_type.as_deref(), Some("Foo"));
        assert_eq!(node.input, ["x", "w"]);
        // A zero-valued int attribute must still be present on the wire (proto2 presence).
        assert_eq!(node.attribute[0].i, Some(0));
        assert_eq!(node.attribute[0].r#type, Some(attribute_type::INT));
        assert_eq!(node.attribute[4].s.as_deref(), Some(&b"nearest"[..]));
        let Some(type_proto::Value::TensorType(t)) = graph.input[0].r#type.as_ref().unwrap().value.clone() else {
            panic!("input is not a tensor");
        };
        let dims: Vec<_> = t.shape.unwrap().dim.into_iter().map(|d| d.value.unwrap()).collect();
        assert_eq!(
            dims,
            [
                dimension::Value::DimValue(1),
                dimension::Value::DimValue(3),
                dimension::Value::DimParam("x_d2".into()),
                dimension::Value::DimParam("x_d3".into()),
            ]
        );
    }

    #[test]
    fn wire_bytes_match_hand_encoding() {
        // Field numbers are what ONNX readers depend on, so pin a few against hand-computed
        // bytes: OperatorSetIdProto{domain="", version=17} is `0a 00 10 11`.
        let op = OperatorSetIdProto { domain: Some(String::new()), version: Some(17) };
        assert_eq!(op.encode_to_vec(), [0x0a, 0x00, 0x10, 0x11]);
        // AttributeProto{name="a", type=INT(2), i=3}: name tag 1, i tag 3, type tag 20 (0xa0 0x01).
        let a = Attribute::Int("a".into(), 3).to_proto();
        let bytes = a.encode_to_vec();
        assert_eq!(bytes, [0x0a, 0x01, b'a', 0x18, 0x03, 0xa0, 0x01, 0x02]);
        // Unpacked repeated int64 dims: each element gets its own tag-1 key.
        let t = TensorProto { dims: vec![2, 3], ..Default::default() };
        assert_eq!(t.encode_to_vec(), [0x08, 0x02, 0x08, 0x03]);
        // Dimension.dim_param is tag 2 inside TensorShapeProto.dim (tag 1).
        let s = TensorShapeProto { dim: vec![Dimension { value: Some(dimension::Value::DimParam("h".into())), denotation: None }] };
        assert_eq!(s.encode_to_vec(), [0x0a, 0x03, 0x12, 0x01, b'h']);
    }
}
