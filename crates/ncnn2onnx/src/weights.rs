//! Reader for ncnn's `.bin` weight file.
//!
//! The file is a plain concatenation of every layer's blobs in `.param` order, with no
//! index: the only way to know where a blob starts is to know how many elements each
//! earlier layer loaded. Blobs that ncnn loads "typed" (convolution weights) start with a
//! 4-byte storage tag; blobs loaded "raw" (biases, PReLU slopes) are bare float32.

use crate::ConvertError;

const TAG_FP16: u32 = 0x0130_6B47;
const TAG_INT8: u32 = 0x000D_4B38;
/// fp32 data written by ncnn's quantize tools with scales kept elsewhere; still plain floats.
const TAG_FP32_SCALED: u32 = 0x0002_C056;

pub(crate) struct BinReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BinReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BinReader { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, len: usize, layer: &str, blob: &str) -> Result<&'a [u8], ConvertError> {
        if self.remaining() < len {
            return Err(ConvertError::TruncatedBin {
                layer: layer.to_owned(),
                blob: blob.to_owned(),
                offset: self.pos,
                needed: len,
                len: self.data.len(),
            });
        }
        let bytes = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    /// Reads `count` untagged little-endian float32 values.
    pub(crate) fn raw_f32(&mut self, count: usize, layer: &str, blob: &str) -> Result<Vec<f32>, ConvertError> {
        let bytes = self.take(count * 4, layer, blob)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Reads a tagged blob of `count` elements and widens it to float32.
    pub(crate) fn tagged(&mut self, count: usize, layer: &str, blob: &str) -> Result<Vec<f32>, ConvertError> {
        let offset = self.pos;
        let t = self.take(4, layer, blob)?;
        let tag = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        match tag {
            TAG_FP16 => {
                // Half data is padded so that the next blob starts 4-byte aligned.
                let bytes = self.take((count * 2).next_multiple_of(4), layer, blob)?;
                Ok(bytes[..count * 2].chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect())
            }
            0 | TAG_FP32_SCALED => self.raw_f32(count, layer, blob),
            TAG_INT8 => Err(ConvertError::UnsupportedWeights {
                layer: layer.to_owned(),
                blob: blob.to_owned(),
                offset,
                what: "int8-quantised weights (tag 0x000D4B38) need per-channel scales; convert from an fp16/fp32 model instead".to_owned(),
            }),
            _ => {
                // Any other non-zero flag means ncnn's 8-bit codebook format: a 256-entry
                // float table followed by one index byte per element, padded to 4.
                let table = self.raw_f32(256, layer, blob)?;
                let idx = self.take(count.next_multiple_of(4), layer, blob)?;
                Ok(idx[..count].iter().map(|&i| table[usize::from(i)]).collect())
            }
        }
    }
}

/// IEEE 754 binary16 to binary32; exact for every input, including subnormals, infinities
/// and NaN payloads.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal half: shift the mantissa up until its leading 1 becomes implicit,
            // lowering the exponent once per shift.
            let shift = mant.leading_zeros() - 21;
            let mant = (mant << shift) & 0x3ff;
            let exp = 127 - 15 + 1 - shift;
            sign | (exp << 23) | (mant << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_decodes_exactly() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
        assert_eq!(f16_to_f32(0x8200), -(2f32.powi(-15)));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn fp16_matches_a_reference_widening_for_all_finite_values() {
        // Independent definition: value = (-1)^s * 2^(e-15) * (1 + m/1024), or the
        // subnormal form, computed in f64 and then narrowed (exact: it always fits).
        for h in 0u16..=u16::MAX {
            let e = (h >> 10) & 0x1f;
            if e == 0x1f {
                continue;
            }
            let m = f64::from(h & 0x3ff);
            let mag = if e == 0 { m / 1024.0 * 2f64.powi(-14) } else { (1.0 + m / 1024.0) * 2f64.powi(i32::from(e) - 15) };
            let want = if h >> 15 == 1 { -mag } else { mag } as f32;
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "half 0x{h:04x}");
        }
    }

    #[test]
    fn tagged_blobs_and_alignment() {
        let mut bin = Vec::new();
        bin.extend(TAG_FP16.to_le_bytes());
        bin.extend([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38]); // 1.0, -2.0, 0.5
        bin.extend([0xaa, 0xaa]); // padding up to 4 bytes
        bin.extend(0u32.to_le_bytes());
        bin.extend(3.5f32.to_le_bytes());
        bin.extend((-1.25f32).to_le_bytes()); // raw bias, no tag
        let mut r = BinReader::new(&bin);
        assert_eq!(r.tagged(3, "c", "weight").unwrap(), [1.0, -2.0, 0.5]);
        assert_eq!(r.tagged(1, "c", "weight").unwrap(), [3.5]);
        assert_eq!(r.raw_f32(1, "c", "bias").unwrap(), [-1.25]);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn codebook_blob() {
        let mut bin = Vec::new();
        bin.extend(1u32.to_le_bytes());
        for i in 0..256 {
            bin.extend((i as f32 * 0.5).to_le_bytes());
        }
        bin.extend([4, 0, 255, 0]);
        let mut r = BinReader::new(&bin);
        assert_eq!(r.tagged(3, "c", "weight").unwrap(), [2.0, 0.0, 127.5]);
    }

    #[test]
    fn truncation_names_the_blob() {
        let mut bin = TAG_FP16.to_le_bytes().to_vec();
        bin.extend([0, 0]);
        let e = BinReader::new(&bin).tagged(4, "Conv_7", "weight").unwrap_err().to_string();
        assert!(e.contains("Conv_7") && e.contains("weight") && e.contains("offset 4"), "{e}");
        let e = BinReader::new(&TAG_INT8.to_le_bytes()).tagged(4, "Conv_7", "weight").unwrap_err().to_string();
        assert!(e.contains("int8"), "{e}");
    }
}
