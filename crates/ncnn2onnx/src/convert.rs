//! Lowering of a parsed ncnn graph to ONNX nodes.

use std::collections::{HashMap, HashSet};

use crate::ConvertError;
use crate::onnx::{Attribute, Dim, GraphBuilder};
use crate::param::{self, LayerDef};
use crate::weights::BinReader;

/// What a conversion produced, for the CLI's one-line report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertSummary {
    pub ncnn_layers: usize,
    pub onnx_nodes: usize,
    pub initializers: usize,
    /// Number of float weights (convolution kernels, biases, slopes).
    pub weights: usize,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub model_bytes: usize,
}

/// Converts an ncnn model to a serialised ONNX `ModelProto`.
pub fn convert(param_text: &str, bin: &[u8]) -> Result<Vec<u8>, ConvertError> {
    convert_with_summary(param_text, bin).map(|(bytes, _)| bytes)
}

/// [`convert`], also reporting what was converted.
pub fn convert_with_summary(param_text: &str, bin: &[u8]) -> Result<(Vec<u8>, ConvertSummary), ConvertError> {
    let graph = param::parse(param_text)?;
    let mut c = Converter::new(&graph.layers, bin);
    for layer in &graph.layers {
        c.layer(layer)?;
    }
    if c.bin.remaining() != 0 {
        return Err(ConvertError::TrailingBin { extra: c.bin.remaining(), len: bin.len() });
    }
    let (inputs, outputs) = c.finish(&graph.layers)?;
    let bytes = c.b.to_model_bytes();
    let summary = ConvertSummary {
        ncnn_layers: graph.layers.len(),
        onnx_nodes: c.b.node_count(),
        initializers: c.b.initializer_count(),
        weights: c.weights,
        inputs,
        outputs,
        model_bytes: bytes.len(),
    };
    Ok((bytes, summary))
}

struct Converter<'a> {
    b: GraphBuilder,
    bin: BinReader<'a>,
    /// ncnn blob -> ONNX tensor holding its value. Split outputs map to their input's
    /// tensor, since ONNX lets one tensor feed any number of consumers.
    tensors: HashMap<String, String>,
    /// Channel count per ONNX tensor, when known. Only used to give the graph input and
    /// output a concrete channel dimension.
    channels: HashMap<String, i64>,
    /// Blob names that must become something else in ONNX (the graph input/output, and
    /// any blob that would collide with those names).
    renames: HashMap<String, String>,
    /// Every name already taken by a tensor or initializer.
    used: HashSet<String>,
    input_blobs: Vec<String>,
    weights: usize,
}

impl<'a> Converter<'a> {
    fn new(layers: &[LayerDef], bin: &'a [u8]) -> Self {
        let blobs: HashSet<String> = layers.iter().flat_map(|l| l.inputs.iter().chain(&l.outputs)).cloned().collect();
        let input_blobs: Vec<String> = layers.iter().filter(|l| l.kind == "Input").flat_map(|l| &l.outputs).cloned().collect();
        let output_blobs = terminal_blobs(layers);

        let mut renames = HashMap::new();
        let mut reserved = Vec::new();
        if let [only] = &input_blobs[..] {
            renames.insert(only.clone(), "input".to_owned());
            reserved.push("input");
        }
        if let [only] = &output_blobs[..] {
            renames.insert(only.clone(), "output".to_owned());
            reserved.push("output");
        }
        let mut c = Converter {
            b: GraphBuilder::new("ncnn"),
            bin: BinReader::new(bin),
            tensors: HashMap::new(),
            channels: HashMap::new(),
            renames: HashMap::new(),
            used: blobs.clone(),
            input_blobs,
            weights: 0,
        };
        c.used.extend(reserved.iter().map(|s| (*s).to_owned()));
        // An ordinary blob that happens to be called `input`/`output` must step aside.
        for name in reserved {
            if blobs.contains(name) && !renames.contains_key(name) {
                let moved = c.fresh(&format!("{name}_ncnn"));
                renames.insert(name.to_owned(), moved);
            }
        }
        c.renames = renames;
        c
    }

    /// A name no tensor or initializer uses yet, based on `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut n = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// The ONNX name a layer output blob is written to.
    fn target(&self, blob: &str) -> String {
        self.renames.get(blob).cloned().unwrap_or_else(|| blob.to_owned())
    }

    fn source(&self, l: &LayerDef, blob: &str) -> Result<String, ConvertError> {
        self.tensors.get(blob).cloned().ok_or_else(|| {
            ConvertError::Graph(format!("layer `{}` (.param line {}) reads blob `{blob}`, which no earlier layer produces", l.name, l.line))
        })
    }

    fn produce(&mut self, blob: &str, tensor: String, channels: Option<i64>) {
        if let Some(c) = channels {
            self.channels.insert(tensor.clone(), c);
        }
        self.tensors.insert(blob.to_owned(), tensor);
    }

    fn f32_const(&mut self, base: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(base);
        self.b.initializer_f32(&name, dims, data);
        name
    }

    fn i64_const(&mut self, base: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(base);
        self.b.initializer_i64(&name, dims, data);
        name
    }

    fn layer(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        match l.kind.as_str() {
            "Input" => self.input(l),
            "Split" | "Noop" => self.alias(l),
            "Convolution" => self.convolution(l, false),
            "ConvolutionDepthWise" => self.convolution(l, true),
            "PReLU" => self.prelu(l),
            "ReLU" | "Sigmoid" | "Clip" => self.standalone_activation(l),
            "Eltwise" => self.eltwise(l),
            "BinaryOp" => self.binary_op(l),
            "Concat" => self.concat(l),
            "Interp" => self.interp(l),
            "PixelShuffle" => self.pixel_shuffle(l),
            _ => Err(ConvertError::UnsupportedLayer { layer: l.name.clone(), kind: l.kind.clone(), line: l.line }),
        }
    }

    fn input(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        arity(l, 0, Some(1))?;
        let c = l.params.int(2, 0);
        let tensor = self.target(&l.outputs[0]);
        self.produce(&l.outputs[0], tensor, (c > 0).then_some(i64::from(c)));
        Ok(())
    }

    fn alias(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        arity(l, 1, None)?;
        let src = self.source(l, &l.inputs[0])?;
        for out in &l.outputs {
            self.tensors.insert(out.clone(), src.clone());
        }
        Ok(())
    }

    fn convolution(&mut self, l: &LayerDef, depthwise: bool) -> Result<(), ConvertError> {
        arity(l, 1, Some(1))?;
        let p = &l.params;
        let num_output = p.int(0, 0);
        let kernel_w = p.int(1, 0);
        let kernel_h = p.int(11, kernel_w);
        let dilation_w = p.int(2, 1);
        let dilation_h = p.int(12, dilation_w);
        let stride_w = p.int(3, 1);
        let stride_h = p.int(13, stride_w);
        let pad_left = p.int(4, 0);
        let pad_right = p.int(15, pad_left);
        let pad_top = p.int(14, pad_left);
        let pad_bottom = p.int(16, pad_top);
        let bias_term = p.int(5, 0);
        let weight_size = p.int(6, 0);
        let group = if depthwise { p.int(7, 1) } else { 1 };
        let pad_value = p.float(18, 0.0);

        if p.int(8, 0) != 0 {
            return Err(layer_err(l, "int8 quantised convolution (8=int8_scale_term) is not supported"));
        }
        if p.int(19, 0) != 0 {
            return Err(layer_err(l, "dynamic weights (19=1) are not supported"));
        }
        let positive = [num_output, kernel_w, kernel_h, dilation_w, dilation_h, stride_w, stride_h, weight_size, group];
        if positive.iter().any(|&v| v <= 0) || num_output % group != 0 {
            return Err(layer_err(
                l,
                format!(
                    "invalid shape parameters: num_output={num_output} kernel={kernel_w}x{kernel_h} dilation={dilation_w}x{dilation_h} stride={stride_w}x{stride_h} weight_data_size={weight_size} group={group}"
                ),
            ));
        }
        let per_in_channel = i64::from(num_output) * i64::from(kernel_h) * i64::from(kernel_w);
        if i64::from(weight_size) % per_in_channel != 0 {
            return Err(layer_err(
                l,
                format!("weight_data_size {weight_size} is not a multiple of num_output*kernel_h*kernel_w = {per_in_channel}"),
            ));
        }
        let in_per_group = i64::from(weight_size) / per_in_channel;
        let in_channels = in_per_group * i64::from(group);

        let x = self.source(l, &l.inputs[0])?;
        match self.channels.get(&x) {
            Some(&c) if c != in_channels => {
                return Err(layer_err(l, format!("weights expect {in_channels} input channels but the input has {c}")));
            }
            Some(_) => {}
            // ncnn's Input layer usually carries no shape; the first convolution reveals it.
            None => {
                self.channels.insert(x.clone(), in_channels);
            }
        }

        let weight = self.bin.tagged(weight_size as usize, &l.name, "weight")?;
        let weight_name = self.f32_const(
            &format!("{}.weight", l.name),
            &[i64::from(num_output), in_per_group, i64::from(kernel_h), i64::from(kernel_w)],
            &weight,
        );
        self.weights += weight.len();
        let mut conv_inputs = vec![x.clone(), weight_name];
        if bias_term != 0 {
            let bias = self.bin.raw_f32(num_output as usize, &l.name, "bias")?;
            self.weights += bias.len();
            conv_inputs.push(self.f32_const(&format!("{}.bias", l.name), &[i64::from(num_output)], &bias));
        }

        let mut attrs = vec![
            Attribute::Ints("kernel_shape".into(), vec![i64::from(kernel_h), i64::from(kernel_w)]),
            Attribute::Ints("strides".into(), vec![i64::from(stride_h), i64::from(stride_w)]),
            Attribute::Ints("dilations".into(), vec![i64::from(dilation_h), i64::from(dilation_w)]),
            Attribute::Int("group".into(), i64::from(group)),
        ];
        let pads = [pad_top, pad_left, pad_bottom, pad_right];
        if let Some(auto) = match pads {
            [-233, -233, -233, -233] => Some("SAME_UPPER"),
            [-234, -234, -234, -234] => Some("SAME_LOWER"),
            _ => None,
        } {
            if pad_value != 0.0 {
                return Err(layer_err(l, "SAME padding with a non-zero pad_value (18=) is not supported"));
            }
            attrs.push(Attribute::String("auto_pad".into(), auto.into()));
        } else if pads.iter().any(|&v| v < 0) {
            return Err(layer_err(l, format!("unsupported padding {pads:?} (top, left, bottom, right)")));
        } else if pad_value != 0.0 && pads.iter().any(|&v| v > 0) {
            // ONNX Conv only pads with zeros, so a non-zero border becomes an explicit Pad.
            let onnx_pads = self.i64_const(
                &format!("{}.pads", l.name),
                &[8],
                &[0, 0, pad_top.into(), pad_left.into(), 0, 0, pad_bottom.into(), pad_right.into()],
            );
            let value = self.f32_const(&format!("{}.pad_value", l.name), &[], &[pad_value]);
            let padded = self.fresh(&format!("{}_padded", l.name));
            self.b.named_node(
                &format!("{}/pad", l.name),
                "Pad",
                &[&x, &onnx_pads, &value],
                &[&padded],
                vec![Attribute::String("mode".into(), "constant".into())],
            );
            conv_inputs[0] = padded;
        } else {
            attrs.push(Attribute::Ints("pads".into(), pads.iter().map(|&v| i64::from(v)).collect()));
        }

        let out = self.target(&l.outputs[0]);
        let activation = p.int(9, 0);
        let conv_out = if activation == 0 { out.clone() } else { self.fresh(&format!("{}_preact", l.name)) };
        let inputs: Vec<&str> = conv_inputs.iter().map(String::as_str).collect();
        self.b.named_node(&l.name, "Conv", &inputs, &[&conv_out], attrs);
        if activation != 0 {
            self.activation(l, activation, &p.floats(10), &conv_out, &out)?;
        }
        self.produce(&l.outputs[0], out, Some(i64::from(num_output)));
        Ok(())
    }

    /// ncnn's fused activations (`9=activation_type`, `10=activation_params`), which are
    /// the same set its `create_activation_layer` builds.
    fn activation(&mut self, l: &LayerDef, kind: i32, params: &[f32], x: &str, y: &str) -> Result<(), ConvertError> {
        let name = format!("{}/act", l.name);
        let param = |i: usize| {
            params
                .get(i)
                .copied()
                .ok_or_else(|| layer_err(l, format!("activation type {kind} needs {} activation params, got {}", i + 1, params.len())))
        };
        match kind {
            1 => {
                self.b.named_node(&name, "Relu", &[x], &[y], vec![]);
            }
            2 => {
                let alpha = param(0)?;
                self.b.named_node(&name, "LeakyRelu", &[x], &[y], vec![Attribute::Float("alpha".into(), alpha)]);
            }
            3 => {
                let (min, max) = (param(0)?, param(1)?);
                self.clip(l, &name, x, y, min, max);
            }
            4 => {
                self.b.named_node(&name, "Sigmoid", &[x], &[y], vec![]);
            }
            5 => {
                // Mish(x) = x * tanh(softplus(x)); ONNX only has a Mish op from opset 18.
                let sp = self.fresh(&format!("{}_softplus", l.name));
                let th = self.fresh(&format!("{}_tanh", l.name));
                self.b.named_node(&format!("{name}/softplus"), "Softplus", &[x], &[&sp], vec![]);
                self.b.named_node(&format!("{name}/tanh"), "Tanh", &[&sp], &[&th], vec![]);
                self.b.named_node(&name, "Mul", &[x, &th], &[y], vec![]);
            }
            6 => {
                // ncnn HardSwish(alpha, beta) = x * clamp(alpha*x + beta, 0, 1).
                let (alpha, beta) = (param(0)?, param(1)?);
                let hs = self.fresh(&format!("{}_hardsigmoid", l.name));
                self.b.named_node(
                    &format!("{name}/hardsigmoid"),
                    "HardSigmoid",
                    &[x],
                    &[&hs],
                    vec![Attribute::Float("alpha".into(), alpha), Attribute::Float("beta".into(), beta)],
                );
                self.b.named_node(&name, "Mul", &[x, &hs], &[y], vec![]);
            }
            _ => {
                return Err(layer_err(l, format!("unknown fused activation type {kind}")));
            }
        }
        Ok(())
    }

    fn clip(&mut self, l: &LayerDef, name: &str, x: &str, y: &str, min: f32, max: f32) {
        let lo = self.f32_const(&format!("{}.min", l.name), &[], &[min]);
        let hi = self.f32_const(&format!("{}.max", l.name), &[], &[max]);
        self.b.named_node(name, "Clip", &[x, &lo, &hi], &[y], vec![]);
    }

    fn standalone_activation(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        arity(l, 1, Some(1))?;
        let x = self.source(l, &l.inputs[0])?;
        let y = self.target(&l.outputs[0]);
        let p = &l.params;
        match l.kind.as_str() {
            "ReLU" => match p.float(0, 0.0) {
                0.0 => self.activation(l, 1, &[], &x, &y)?,
                slope => self.activation(l, 2, &[slope], &x, &y)?,
            },
            "Sigmoid" => self.activation(l, 4, &[], &x, &y)?,
            "Clip" => {
                let name = l.name.clone();
                self.clip(l, &name, &x, &y, p.float(0, -f32::MAX), p.float(1, f32::MAX));
            }
            other => unreachable!("not an activation layer: {other}"),
        }
        let c = self.channels.get(&x).copied();
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    fn prelu(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        arity(l, 1, Some(1))?;
        let num_slope = l.params.int(0, 0);
        if num_slope <= 0 {
            return Err(layer_err(l, format!("invalid num_slope {num_slope}")));
        }
        let x = self.source(l, &l.inputs[0])?;
        let slope = self.bin.raw_f32(num_slope as usize, &l.name, "slope")?;
        self.weights += slope.len();
        // Per-channel slopes must broadcast over [N,C,H,W] from the channel axis.
        let dims: &[i64] = if num_slope == 1 { &[1] } else { &[i64::from(num_slope), 1, 1] };
        let slope_name = self.f32_const(&format!("{}.slope", l.name), dims, &slope);
        let y = self.target(&l.outputs[0]);
        self.b.named_node(&l.name, "PRelu", &[&x, &slope_name], &[&y], vec![]);
        let c = self.channels.get(&x).copied().or((num_slope > 1).then_some(i64::from(num_slope)));
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    fn eltwise(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        if l.inputs.len() < 2 {
            return Err(layer_err(l, "Eltwise needs at least two inputs"));
        }
        arity(l, l.inputs.len(), Some(1))?;
        let op = l.params.int(0, 0);
        let coeffs = l.params.floats(1);
        let xs = l.inputs.iter().map(|b| self.source(l, b)).collect::<Result<Vec<_>, _>>()?;
        let y = self.target(&l.outputs[0]);
        match op {
            0 => self.fold(l, "Mul", &xs, &y),
            1 => {
                let terms = if coeffs.is_empty() {
                    xs.clone()
                } else if coeffs.len() != xs.len() {
                    return Err(layer_err(l, format!("{} coefficients for {} inputs", coeffs.len(), xs.len())));
                } else {
                    let mut terms = Vec::with_capacity(xs.len());
                    for (i, (x, &k)) in xs.iter().zip(&coeffs).enumerate() {
                        if k == 1.0 {
                            terms.push(x.clone());
                            continue;
                        }
                        let kc = self.f32_const(&format!("{}.coeff{i}", l.name), &[], &[k]);
                        let scaled = self.fresh(&format!("{}_scaled{i}", l.name));
                        self.b.named_node(&format!("{}/scale{i}", l.name), "Mul", &[x, &kc], &[&scaled], vec![]);
                        terms.push(scaled);
                    }
                    terms
                };
                self.fold(l, "Add", &terms, &y);
            }
            2 => {
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                self.b.named_node(&l.name, "Max", &refs, &[&y], vec![]);
            }
            _ => {
                return Err(layer_err(l, format!("unknown Eltwise op_type {op} (0=prod, 1=sum, 2=max)")));
            }
        }
        let c = xs.iter().find_map(|x| self.channels.get(x).copied());
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    /// Applies a binary op left to right over `xs`, so the rounding order matches ncnn's
    /// accumulation over its inputs.
    fn fold(&mut self, l: &LayerDef, op: &str, xs: &[String], y: &str) {
        let mut acc = xs[0].clone();
        for (i, x) in xs.iter().enumerate().skip(1) {
            let out = if i + 1 == xs.len() { y.to_owned() } else { self.fresh(&format!("{}_acc{i}", l.name)) };
            let name = if i + 1 == xs.len() { l.name.clone() } else { format!("{}/acc{i}", l.name) };
            self.b.named_node(&name, op, &[&acc, x], &[&out], vec![]);
            acc = out;
        }
    }

    fn binary_op(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        let p = &l.params;
        let op_type = p.int(0, 0);
        let with_scalar = p.int(1, 0) != 0;
        let (op, reversed) = match op_type {
            0 => ("Add", false),
            1 => ("Sub", false),
            2 => ("Mul", false),
            3 => ("Div", false),
            4 => ("Max", false),
            5 => ("Min", false),
            6 => ("Pow", false),
            7 => ("Sub", true),
            8 => ("Div", true),
            9 => ("Pow", true),
            10 | 11 => return Err(layer_err(l, "atan2 BinaryOp has no ONNX equivalent")),
            _ => return Err(layer_err(l, format!("unknown BinaryOp op_type {op_type}"))),
        };
        arity(l, if with_scalar { 1 } else { 2 }, Some(1))?;
        let a = self.source(l, &l.inputs[0])?;
        // Two-blob operands are assumed to broadcast the numpy way, which holds when both
        // are [C,H,W] (all graphs this crate targets); ncnn's own rules differ for 1-D/2-D.
        let b = if with_scalar { self.f32_const(&format!("{}.b", l.name), &[], &[p.float(2, 0.0)]) } else { self.source(l, &l.inputs[1])? };
        let (lhs, rhs) = if reversed { (&b, &a) } else { (&a, &b) };
        let y = self.target(&l.outputs[0]);
        self.b.named_node(&l.name, op, &[lhs, rhs], &[&y], vec![]);
        let c = [&a, &b].into_iter().find_map(|x| self.channels.get(x).copied());
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    fn concat(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        if l.inputs.is_empty() {
            return Err(layer_err(l, "Concat needs inputs"));
        }
        arity(l, l.inputs.len(), Some(1))?;
        let axis = l.params.int(0, 0);
        // ncnn axes count from the first non-batch axis; negative ones already line up.
        let onnx_axis = if axis >= 0 { i64::from(axis) + 1 } else { i64::from(axis) };
        let xs = l.inputs.iter().map(|b| self.source(l, b)).collect::<Result<Vec<_>, _>>()?;
        let y = self.target(&l.outputs[0]);
        let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.b.named_node(&l.name, "Concat", &refs, &[&y], vec![Attribute::Int("axis".into(), onnx_axis)]);
        let known: Option<Vec<i64>> = xs.iter().map(|x| self.channels.get(x).copied()).collect();
        let c = match (onnx_axis, known) {
            (1 | -3, Some(cs)) => Some(cs.iter().sum()),
            (1 | -3, None) => None,
            _ => xs.iter().find_map(|x| self.channels.get(x).copied()),
        };
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    fn interp(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        let p = &l.params;
        if p.int(5, 0) != 0 || l.inputs.len() != 1 {
            return Err(layer_err(l, "Interp with a dynamic target size (5=1, second input) is not supported"));
        }
        arity(l, 1, Some(1))?;
        let resize_type = p.int(0, 0);
        let height_scale = p.float(1, 1.0);
        let width_scale = p.float(2, 1.0);
        let out_h = p.int(3, 0);
        let out_w = p.int(4, 0);
        let align_corner = p.int(6, 0) != 0;
        let sampling = if align_corner { "align_corners" } else { "half_pixel" };
        let mut attrs = match resize_type {
            // ncnn nearest: src = floor(dst / scale), i.e. ONNX `asymmetric` + floor (for
            // power-of-two scales; see below); ncnn ignores align_corner for nearest.
            1 => vec![
                Attribute::String("mode".into(), "nearest".into()),
                Attribute::String("coordinate_transformation_mode".into(), "asymmetric".into()),
                Attribute::String("nearest_mode".into(), "floor".into()),
            ],
            2 => vec![
                Attribute::String("mode".into(), "linear".into()),
                Attribute::String("coordinate_transformation_mode".into(), sampling.into()),
            ],
            // ncnn bicubic: Keys kernel with A = -0.75 and edge-replicated taps; ONNX's
            // default exclude_outside=0 with clamped taps is the same.
            3 => vec![
                Attribute::String("mode".into(), "cubic".into()),
                Attribute::String("coordinate_transformation_mode".into(), sampling.into()),
                Attribute::Float("cubic_coeff_a".into(), -0.75),
            ],
            _ => {
                return Err(layer_err(l, format!("unsupported resize_type {resize_type} (1=nearest, 2=bilinear, 3=bicubic)")));
            }
        };
        attrs.push(Attribute::Int("exclude_outside".into(), 0));
        let x = self.source(l, &l.inputs[0])?;
        let y = self.target(&l.outputs[0]);
        let empty = String::new();
        let fixed = out_h != 0 && out_w != 0;

        if resize_type == 1 && (fixed || !is_power_of_two(height_scale) || !is_power_of_two(width_scale)) {
            // ncnn picks src = int(dst * ratio) with ratio = 1/scale or in/out, a float
            // product; ONNX Resize divides instead, and the two land on different sides of
            // an integer for some positions (9 * (1/0.6f) = 15 but 9 / 0.6f < 15). Only
            // exact gathers reproduce ncnn then. Power-of-two scales divide exactly.
            let shape = self.fresh(&format!("{}_shape", l.name));
            self.b.named_node(&format!("{}/shape", l.name), "Shape", &[&x], &[&shape], vec![]);
            let (th, tw) =
                if fixed { (Target::Size(out_h), Target::Size(out_w)) } else { (Target::Scale(height_scale), Target::Scale(width_scale)) };
            let rows = self.fresh(&format!("{}_rows", l.name));
            self.nearest_axis(l, &x, &shape, 2, th, &rows);
            self.nearest_axis(l, &rows, &shape, 3, tw, &y);
        } else if fixed {
            // Fixed output size: ncnn then samples at in/out, as ONNX does with `sizes`.
            // Keep N and C from the input, replace H and W.
            let shape = self.fresh(&format!("{}_shape", l.name));
            let nc = self.fresh(&format!("{}_nc", l.name));
            let sizes = self.fresh(&format!("{}_sizes", l.name));
            let starts = self.i64_const(&format!("{}.starts", l.name), &[1], &[0]);
            let ends = self.i64_const(&format!("{}.ends", l.name), &[1], &[2]);
            let hw = self.i64_const(&format!("{}.hw", l.name), &[2], &[out_h.into(), out_w.into()]);
            self.b.named_node(&format!("{}/shape", l.name), "Shape", &[&x], &[&shape], vec![]);
            self.b.named_node(&format!("{}/nc", l.name), "Slice", &[&shape, &starts, &ends], &[&nc], vec![]);
            self.b.named_node(&format!("{}/sizes", l.name), "Concat", &[&nc, &hw], &[&sizes], vec![Attribute::Int("axis".into(), 0)]);
            self.b.named_node(&l.name, "Resize", &[&x, &empty, &empty, &sizes], &[&y], attrs);
        } else {
            // With scale factors ncnn makes out = int(in * scale) and samples at
            // dst / scale (half-pixel for bilinear/bicubic), which is ONNX `scales`
            // semantics; sampling at in/out instead would differ whenever in * scale is
            // not an integer. Linear and cubic weights are continuous in the sample
            // position, so float rounding differences there stay far below tolerance.
            let scales = self.f32_const(&format!("{}.scales", l.name), &[4], &[1.0, 1.0, height_scale, width_scale]);
            self.b.named_node(&l.name, "Resize", &[&x, &empty, &scales], &[&y], attrs);
        }
        let c = self.channels.get(&x).copied();
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    /// Nearest resize along one axis exactly as ncnn computes it:
    /// `src = min(int(float(dst) * ratio), len - 1)`, gathered from `x` into `out`.
    fn nearest_axis(&mut self, l: &LayerDef, x: &str, shape: &str, axis: i64, target: Target, out: &str) {
        use crate::onnx::proto::data_type::{FLOAT, INT64};
        let tag = if axis == 2 { "h" } else { "w" };
        let name = |what: &str| format!("{}/{tag}_{what}", l.name);
        let to_float = vec![Attribute::Int("to".into(), FLOAT.into())];
        let to_int = vec![Attribute::Int("to".into(), INT64.into())];

        let axis_index = self.i64_const(&format!("{}.{tag}_axis", l.name), &[], &[axis]);
        let len = self.fresh(&format!("{}_{tag}_len", l.name));
        let len_f = self.fresh(&format!("{}_{tag}_len_f", l.name));
        self.b.named_node(&name("len"), "Gather", &[shape, &axis_index], &[&len], vec![Attribute::Int("axis".into(), 0)]);
        self.b.named_node(&name("len_f"), "Cast", &[&len], &[&len_f], to_float.clone());
        let (out_len, ratio) = match target {
            Target::Scale(s) => {
                let s_c = self.f32_const(&format!("{}.{tag}_scale", l.name), &[], &[s]);
                let scaled = self.fresh(&format!("{}_{tag}_scaled_len", l.name));
                let out_len = self.fresh(&format!("{}_{tag}_out_len", l.name));
                self.b.named_node(&name("scaled_len"), "Mul", &[&len_f, &s_c], &[&scaled], vec![]);
                self.b.named_node(&name("out_len"), "Cast", &[&scaled], &[&out_len], to_int.clone());
                (out_len, self.f32_const(&format!("{}.{tag}_ratio", l.name), &[], &[1.0 / s]))
            }
            Target::Size(n) => {
                let out_len = self.i64_const(&format!("{}.{tag}_out_len", l.name), &[], &[n.into()]);
                let n_f = self.f32_const(&format!("{}.{tag}_out_len_f", l.name), &[], &[n as f32]);
                let ratio = self.fresh(&format!("{}_{tag}_ratio", l.name));
                self.b.named_node(&name("ratio"), "Div", &[&len_f, &n_f], &[&ratio], vec![]);
                (out_len, ratio)
            }
        };
        let zero = self.i64_const(&format!("{}.{tag}_zero", l.name), &[], &[0]);
        let one = self.i64_const(&format!("{}.{tag}_one", l.name), &[], &[1]);
        let [dst, dst_f, src_f, src, last, src_clamped] =
            ["dst", "dst_f", "src_f", "src", "last", "src_clamped"].map(|what| self.fresh(&format!("{}_{tag}_{what}", l.name)));
        self.b.named_node(&name("dst"), "Range", &[&zero, &out_len, &one], &[&dst], vec![]);
        self.b.named_node(&name("dst_f"), "Cast", &[&dst], &[&dst_f], to_float);
        self.b.named_node(&name("src_f"), "Mul", &[&dst_f, &ratio], &[&src_f], vec![]);
        // Cast truncates toward zero, like C's (int) on these non-negative positions.
        self.b.named_node(&name("src"), "Cast", &[&src_f], &[&src], to_int);
        self.b.named_node(&name("last"), "Sub", &[&len, &one], &[&last], vec![]);
        self.b.named_node(&name("clamp"), "Min", &[&src, &last], &[&src_clamped], vec![]);
        self.b.named_node(&name("gather"), "Gather", &[x, &src_clamped], &[out], vec![Attribute::Int("axis".into(), axis)]);
    }

    fn pixel_shuffle(&mut self, l: &LayerDef) -> Result<(), ConvertError> {
        arity(l, 1, Some(1))?;
        let r = l.params.int(0, 1);
        let mode = l.params.int(1, 0);
        if r <= 0 {
            return Err(layer_err(l, format!("invalid upscale_factor {r}")));
        }
        // ncnn mode 0 reads input channel c*r*r + i*r + j (PyTorch's pixel_shuffle), which
        // is ONNX CRD; mode 1 reads (i*r + j)*C + c, which is DCR.
        let onnx_mode = match mode {
            0 => "CRD",
            1 => "DCR",
            _ => return Err(layer_err(l, format!("unknown PixelShuffle mode {mode}"))),
        };
        let x = self.source(l, &l.inputs[0])?;
        let y = self.target(&l.outputs[0]);
        self.b.named_node(
            &l.name,
            "DepthToSpace",
            &[&x],
            &[&y],
            vec![Attribute::Int("blocksize".into(), r.into()), Attribute::String("mode".into(), onnx_mode.into())],
        );
        let rr = i64::from(r) * i64::from(r);
        let c = match self.channels.get(&x) {
            Some(&c) if c % rr != 0 => {
                return Err(layer_err(l, format!("{c} channels do not divide by upscale_factor^2 = {rr}")));
            }
            Some(&c) => Some(c / rr),
            None => None,
        };
        self.produce(&l.outputs[0], y, c);
        Ok(())
    }

    /// Declares graph inputs and outputs. Returns their ONNX names.
    fn finish(&mut self, layers: &[LayerDef]) -> Result<(Vec<String>, Vec<String>), ConvertError> {
        if self.input_blobs.is_empty() {
            return Err(ConvertError::Graph("no Input layer".into()));
        }
        let outputs = terminal_blobs(layers);
        if outputs.is_empty() {
            return Err(ConvertError::Graph("no output: every blob is consumed by another layer".into()));
        }
        let dims = |c: Option<i64>, prefix: &str| {
            vec![
                Dim::Fixed(1),
                c.map_or_else(|| Dim::Symbolic(format!("{prefix}channels")), Dim::Fixed),
                Dim::Symbolic(format!("{prefix}height")),
                Dim::Symbolic(format!("{prefix}width")),
            ]
        };
        let single_input = self.input_blobs.len() == 1;
        let mut input_names = Vec::new();
        for blob in self.input_blobs.clone() {
            let name = self.target(&blob);
            let prefix = if single_input { String::new() } else { format!("{name}_") };
            self.b.input_dims(&name, &dims(self.channels.get(&name).copied(), &prefix));
            input_names.push(name);
        }
        let single_output = outputs.len() == 1;
        let mut output_names = Vec::new();
        for blob in &outputs {
            let have = self.tensors[blob].clone();
            let want = self.target(blob);
            if have != want {
                self.b.named_node(&format!("{want}/identity"), "Identity", &[&have], &[&want], vec![]);
            }
            let prefix = if single_output { "out_".to_owned() } else { format!("{want}_") };
            self.b.output_dims(&want, &dims(self.channels.get(&have).copied(), &prefix));
            output_names.push(want);
        }
        self.b.doc_string("Converted from ncnn by purrify-ncnn2onnx. Input and output are float32 NCHW.");
        Ok((input_names, output_names))
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Scale(f32),
    Size(i32),
}

/// True for 2^k: then 1/scale is exact and ncnn's multiply equals ONNX's divide.
fn is_power_of_two(v: f32) -> bool {
    v.is_normal() && v > 0.0 && v.to_bits() & 0x007f_ffff == 0
}

/// Blobs no layer consumes, in production order: the graph outputs. Unused Split
/// branches are just copies and are not outputs.
fn terminal_blobs(layers: &[LayerDef]) -> Vec<String> {
    let consumed: HashSet<&str> = layers.iter().flat_map(|l| l.inputs.iter().map(String::as_str)).collect();
    layers
        .iter()
        .filter(|l| !matches!(l.kind.as_str(), "Input" | "Split"))
        .flat_map(|l| &l.outputs)
        .filter(|b| !consumed.contains(b.as_str()))
        .cloned()
        .collect()
}

fn arity(l: &LayerDef, inputs: usize, outputs: Option<usize>) -> Result<(), ConvertError> {
    let outputs_ok = match outputs {
        Some(n) => l.outputs.len() == n,
        None => !l.outputs.is_empty(),
    };
    if l.inputs.len() != inputs || !outputs_ok {
        let want_out = outputs.map_or_else(|| "at least 1".to_owned(), |n| n.to_string());
        return Err(layer_err(
            l,
            format!("expected {inputs} inputs and {want_out} outputs, got {} and {}", l.inputs.len(), l.outputs.len()),
        ));
    }
    Ok(())
}

fn layer_err(l: &LayerDef, msg: impl Into<String>) -> ConvertError {
    ConvertError::Layer { layer: l.name.clone(), kind: l.kind.clone(), line: l.line, msg: msg.into() }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::onnx::proto::{ModelProto, NodeProto, tensor_shape_proto::dimension::Value as DimValue, type_proto};

    const FP16: u32 = 0x0130_6B47;

    /// Input -> 3x3 conv (fp16, bias, leaky ReLU) -> Split -> PReLU / PixelShuffle -> Concat.
    fn tiny() -> (String, Vec<u8>) {
        let param = "7767517
7 8
Input        in      0 1 data
Convolution  conv    1 1 data c 0=4 1=3 4=1 5=1 6=108 9=2 -23310=1,1.000000e-01
Split        split   1 2 c c0 c1
PReLU        prelu   1 1 c0 p 0=4
Interp       up      1 1 p u 0=1 1=2.000000e+00 2=2.000000e+00
PixelShuffle ps      1 1 c1 s 0=2
Concat       cat     2 1 u s out 0=0
"
        .to_owned();
        let mut bin = FP16.to_le_bytes().to_vec();
        bin.extend((0..108).flat_map(|i| (0x3c00u16 + i).to_le_bytes())); // 108 halves, already 4-aligned
        bin.extend((0..4).flat_map(|i| (i as f32).to_le_bytes())); // bias
        bin.extend((0..4).flat_map(|_| 0.25f32.to_le_bytes())); // slopes
        (param, bin)
    }

    fn decode(bytes: &[u8]) -> ModelProto {
        ModelProto::decode(bytes).unwrap()
    }

    fn dims(v: &crate::onnx::proto::ValueInfoProto) -> Vec<DimValue> {
        let Some(type_proto::Value::TensorType(t)) = v.r#type.clone().unwrap().value else { panic!("not a tensor") };
        t.shape.unwrap().dim.into_iter().map(|d| d.value.unwrap()).collect()
    }

    fn node<'m>(m: &'m ModelProto, name: &str) -> &'m NodeProto {
        m.graph.as_ref().unwrap().node.iter().find(|n| n.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("no node {name}"))
    }

    #[test]
    fn lowers_a_small_graph() {
        let (param, bin) = tiny();
        let (bytes, summary) = convert_with_summary(&param, &bin).unwrap();
        let m = decode(&bytes);
        let g = m.graph.as_ref().unwrap();
        assert_eq!(summary.inputs, ["input"]);
        assert_eq!(summary.outputs, ["output"]);
        assert_eq!(summary.weights, 108 + 4 + 4);

        // Channel counts are inferred: 3 in (from the conv weights), 4 + 4/4 = 5 out.
        let sym = |s: &str| DimValue::DimParam(s.into());
        assert_eq!(dims(&g.input[0]), [DimValue::DimValue(1), DimValue::DimValue(3), sym("height"), sym("width")]);
        assert_eq!(dims(&g.output[0]), [DimValue::DimValue(1), DimValue::DimValue(5), sym("out_height"), sym("out_width")]);

        let conv = node(&m, "conv");
        assert_eq!(conv.op_type.as_deref(), Some("Conv"));
        assert_eq!(conv.input[0], "input");
        let w = g.initializer.iter().find(|t| Some(t.name.as_deref().unwrap()) == conv.input.get(1).map(String::as_str)).unwrap();
        assert_eq!(w.dims, [4, 3, 3, 3]);
        let raw = w.raw_data.as_ref().unwrap();
        assert_eq!(f32::from_le_bytes(raw[4..8].try_into().unwrap()), crate::weights::f16_to_f32(0x3c01));
        let pads = conv.attribute.iter().find(|a| a.name.as_deref() == Some("pads")).unwrap();
        assert_eq!(pads.ints, [1, 1, 1, 1]);
        let act = node(&m, "conv/act");
        assert_eq!(act.op_type.as_deref(), Some("LeakyRelu"));
        assert_eq!(act.attribute[0].f, Some(0.1));

        // The Split disappears: both branches read the activation's output directly.
        assert_eq!(node(&m, "prelu").input[0], act.output[0]);
        assert_eq!(node(&m, "ps").input[0], act.output[0]);
        let slope = g.initializer.iter().find(|t| t.name.as_deref() == Some("prelu.slope")).unwrap();
        assert_eq!(slope.dims, [4, 1, 1]);

        let ps = node(&m, "ps");
        assert_eq!(ps.op_type.as_deref(), Some("DepthToSpace"));
        assert!(ps.attribute.iter().any(|a| a.name.as_deref() == Some("mode") && a.s.as_deref() == Some(&b"CRD"[..])));
        let up = node(&m, "up");
        assert_eq!(up.op_type.as_deref(), Some("Resize"));
        assert!(up.attribute.iter().any(|a| a.s.as_deref() == Some(&b"asymmetric"[..])));
        let cat = node(&m, "cat");
        assert_eq!(cat.attribute[0].i, Some(1), "ncnn axis 0 is the channel axis");
        assert_eq!(cat.output, ["output"]);
    }

    #[test]
    fn unknown_layer_is_named() {
        let (param, bin) = tiny();
        let param = param.replace("PReLU        prelu", "Swish        prelu");
        let e = convert(&param, &bin).unwrap_err().to_string();
        assert!(e.contains("`prelu`") && e.contains("`Swish`") && e.contains("line 6"), "{e}");
    }

    #[test]
    fn truncated_bin_names_blob_and_layer() {
        let (param, bin) = tiny();
        let e = convert(&param, &bin[..bin.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("slope of layer `prelu`") && e.contains("truncated"), "{e}");
        let e = convert(&param, &bin[..50]).unwrap_err().to_string();
        assert!(e.contains("weight of layer `conv`"), "{e}");
    }

    #[test]
    fn trailing_bin_bytes_are_an_error() {
        let (param, mut bin) = tiny();
        bin.extend([0; 8]);
        let e = convert(&param, &bin).unwrap_err().to_string();
        assert!(e.contains("8 bytes left"), "{e}");
    }

    #[test]
    fn dangling_blob_is_reported() {
        let (param, bin) = tiny();
        let param = param.replace("Split        split   1 2 c c0 c1", "Split        split   1 2 nope c0 c1");
        let e = convert(&param, &bin).unwrap_err().to_string();
        assert!(e.contains("`split`") && e.contains("`nope`"), "{e}");
    }

    #[test]
    fn blob_already_named_output_steps_aside() {
        // The ncnn blob `output` is internal here; the real graph output is `z`.
        let param = "7767517\n3 3\nInput in 0 1 output\nBinaryOp a 1 1 output y 0=2 1=1 2=2.0\nBinaryOp b 1 1 y z 0=7 1=1 2=1.0\n";
        let m = decode(&convert(param, &[]).unwrap());
        let g = m.graph.unwrap();
        assert_eq!(g.input[0].name.as_deref(), Some("input"));
        assert_eq!(g.output[0].name.as_deref(), Some("output"));
        let b = g.node.iter().find(|n| n.name.as_deref() == Some("b")).unwrap();
        // Reversed subtraction: 1.0 - y.
        assert_eq!(b.input[1], "y");
        assert_eq!(b.output, ["output"]);
    }

    #[test]
    fn power_of_two_detection() {
        assert!(is_power_of_two(2.0) && is_power_of_two(4.0) && is_power_of_two(0.5));
        assert!(!is_power_of_two(3.0) && !is_power_of_two(0.75) && !is_power_of_two(0.0) && !is_power_of_two(-2.0));
    }
}
