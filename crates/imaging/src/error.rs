use crate::Format;

/// Everything that can go wrong while reading or writing an image.
///
/// `Display` is one line meant for the end user who sent the file; `reason()` is a bounded
/// category for metrics and for the task's `error.reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the file is empty")]
    Empty,

    /// `format` is what the magic bytes say, when they say anything we know.
    #[error("{}", unsupported_format_message(*.format))]
    UnsupportedFormat { format: Option<Format> },

    /// A known format using a feature this service does not handle (animation, AVIF grids).
    #[error("{0}")]
    UnsupportedFeature(String),

    #[error("the image file is damaged or incomplete ({0})")]
    Malformed(String),

    #[error("image is {width}x{height} = {pixels} pixels; the limit is {max_pixels}", pixels = u64::from(*.width) * u64::from(*.height))]
    TooLarge { width: u32, height: u32, max_pixels: u64 },

    #[error("image is {width}x{height}; neither side may exceed {max_dimension} pixels")]
    DimensionTooLarge { width: u32, height: u32, max_dimension: u32 },

    /// The result would be wider or taller than the output format can store.
    #[error(
        "the result would be {width}x{height}, but {format} images cannot be wider or taller than {max_side} pixels; use a smaller scale, a smaller image or another output format"
    )]
    OutputTooLarge { width: u64, height: u64, format: &'static str, max_side: u32 },

    /// The result would have more pixels than this service writes.
    #[error(
        "the result would be {width}x{height} = {pixels} pixels; the limit is {max_pixels}; use a smaller scale or a smaller image",
        pixels = .width.saturating_mul(*.height)
    )]
    OutputTooManyPixels { width: u64, height: u64, max_pixels: u64 },

    #[error("could not encode the image: {0}")]
    Encode(String),
}

impl ImageError {
    /// A fixed, small set of values: safe as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::Empty => "empty",
            ImageError::UnsupportedFormat { .. } => "unsupported_format",
            ImageError::UnsupportedFeature(_) => "unsupported_feature",
            ImageError::Malformed(_) => "malformed",
            ImageError::TooLarge { .. }
            | ImageError::DimensionTooLarge { .. }
            | ImageError::OutputTooLarge { .. }
            | ImageError::OutputTooManyPixels { .. } => "too_large",
            ImageError::Encode(_) => "encode",
        }
    }

    /// True when the request is at fault (answer 4xx, do not retry); false for our own
    /// failures. A result too large for its format is the request's fault: no retry helps.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, ImageError::Encode(_))
    }

    /// Decoder messages can be long, multi-line or full of debug formatting; users get one
    /// short line.
    pub(crate) fn malformed(detail: impl std::fmt::Display) -> Self {
        ImageError::Malformed(one_line(&detail.to_string(), 160))
    }
}

fn unsupported_format_message(format: Option<Format>) -> String {
    match format {
        Some(f) if !f.is_supported() => format!("{} images are not supported; upload a JPEG, PNG, WebP or AVIF image", f.name()),
        _ => "the file is not a JPEG, PNG, WebP or AVIF image".to_string(),
    }
}

pub(crate) fn one_line(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars + 3));
    let mut last_space = true;
    for (n, c) in s.chars().enumerate() {
        if n >= max_chars {
            out.push_str("...");
            break;
        }
        let c = if c.is_control() || c.is_whitespace() { ' ' } else { c };
        if c == ' ' {
            if last_space {
                continue;
            }
            last_space = true;
        } else {
            last_space = false;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.is_empty() {
        out.push_str("unknown error");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_actionable() {
        let e = ImageError::TooLarge { width: 100_000, height: 100_000, max_pixels: 50_000_000 };
        assert_eq!(e.to_string(), "image is 100000x100000 = 10000000000 pixels; the limit is 50000000");
        assert_eq!(ImageError::UnsupportedFormat { format: None }.to_string(), "the file is not a JPEG, PNG, WebP or AVIF image");
        assert_eq!(
            ImageError::UnsupportedFormat { format: Some(Format::Gif) }.to_string(),
            "GIF images are not supported; upload a JPEG, PNG, WebP or AVIF image"
        );
        let m = ImageError::malformed("line one\n\tline two\r\n");
        assert_eq!(m.to_string(), "the image file is damaged or incomplete (line one line two)");
        assert!(!ImageError::malformed("x".repeat(10_000)).to_string().contains('\n'));
        assert!(ImageError::malformed("x".repeat(10_000)).to_string().len() < 220);
    }

    #[test]
    fn reasons_are_bounded() {
        for e in [
            ImageError::Empty,
            ImageError::UnsupportedFormat { format: None },
            ImageError::UnsupportedFeature("x".into()),
            ImageError::malformed("x"),
            ImageError::TooLarge { width: 1, height: 1, max_pixels: 0 },
            ImageError::DimensionTooLarge { width: 1, height: 1, max_dimension: 0 },
            ImageError::OutputTooLarge { width: 1, height: 1, format: "JPEG", max_side: 0 },
            ImageError::OutputTooManyPixels { width: 1, height: 1, max_pixels: 0 },
            ImageError::Encode("x".into()),
        ] {
            assert!(e.reason().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
