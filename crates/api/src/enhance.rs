//! The enhancement vocabulary shared by every crate that speaks about a photo's processing:
//! the parameters a job runs with and what it produced. The worker protocol
//! (`purrify_inference::protocol`) re-exports these types, the `EnhanceTask` CRD carries them,
//! and the database stores them, so there is one definition of each word.
//!
//! Serde forms: the enums are lowercase words everywhere; [`FaceRestoration`] is camelCase in
//! the CRD and snake_case on the wire and in the database ([`face_restoration_wire`]).

use serde::{Deserialize, Serialize};

/// Largest accepted `tile_size`; above this a tile's activations no longer bound memory.
pub const MAX_TILE_SIZE: u32 = 1024;
/// Smallest accepted `tile_size` other than 0.
pub const MIN_TILE_SIZE: u32 = 32;
/// Default tile size of the seed API, and what `tile_size: 0` means.
pub const DEFAULT_TILE_SIZE: u32 = 400;

/// Speed/quality trade-off of the background super-resolution.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum QualityLevel {
    /// Real-ESRGAN x4plus.
    #[default]
    High,
    /// realesr-animevideov3, seam-free tiles.
    Medium,
    /// realesr-animevideov3, less tile overlap.
    Fast,
}

impl QualityLevel {
    pub const ALL: [QualityLevel; 3] = [Self::High, Self::Medium, Self::Fast];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Fast => "fast",
        }
    }
}

impl std::str::FromStr for QualityLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            "fast" => Ok(Self::Fast),
            other => Err(format!("unknown quality level {other:?}: expected high, medium or fast")),
        }
    }
}

/// Encoding of the result image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `image/jpeg`.
    #[default]
    Jpeg,
    /// `image/png`.
    Png,
    /// `image/webp`.
    Webp,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    /// MIME type of images in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    /// Whether the format carries an alpha channel (then alpha is resized, not dropped).
    pub fn keeps_alpha(self) -> bool {
        matches!(self, Self::Png | Self::Webp)
    }

    /// Format from a file extension (`out.png`), case-insensitive.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// Outcome of face restoration on one task, as the worker reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "crd", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum FaceRestoration {
    /// Faces were detected and restored.
    Applied,
    /// The task asked for no face restoration (`params.faceEnhance: false`).
    Disabled,
    /// The worker has no restoration model: background-only enhancement.
    NotConfigured,
    /// A restoration model is configured but no face was found.
    NoFaces,
}

impl FaceRestoration {
    pub const ALL: [FaceRestoration; 4] = [Self::Applied, Self::Disabled, Self::NotConfigured, Self::NoFaces];

    /// The snake_case word of the worker protocol and the public API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Disabled => "disabled",
            Self::NotConfigured => "not_configured",
            Self::NoFaces => "no_faces",
        }
    }
}

/// Serde for [`FaceRestoration`] in its snake_case wire form (`not_configured`), for fields
/// outside the CRD: `#[serde(with = "purrify_api::enhance::face_restoration_wire")]`.
pub mod face_restoration_wire {
    use super::FaceRestoration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &FaceRestoration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FaceRestoration, D::Error> {
        let word = String::deserialize(d)?;
        FaceRestoration::ALL.into_iter().find(|f| f.as_str() == word).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown face restoration {word:?}: expected applied, disabled, not_configured or no_faces"))
        })
    }
}

fn default_tile_size() -> u32 {
    DEFAULT_TILE_SIZE
}
fn default_scale() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

/// Parameters of one enhancement (the seed's `tile_size`, `quality_level`, plus scale,
/// face restoration and output format), in the snake_case form of the worker protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnhanceParams {
    /// Tile edge in input pixels, 32..=1024; 0 means the default (400). The whole image is
    /// never run in one pass: memory is bounded by the tile, not by the image.
    #[serde(default = "default_tile_size")]
    pub tile_size: u32,
    #[serde(default)]
    pub quality_level: QualityLevel,
    /// Output scale: 2 or 4.
    #[serde(default = "default_scale")]
    pub scale: u32,
    /// Restore faces when a restoration model is configured.
    #[serde(default = "default_true")]
    pub face_enhance: bool,
    #[serde(default)]
    pub output_format: OutputFormat,
}

impl Default for EnhanceParams {
    fn default() -> Self {
        Self {
            tile_size: DEFAULT_TILE_SIZE,
            quality_level: QualityLevel::default(),
            scale: default_scale(),
            face_enhance: true,
            output_format: OutputFormat::default(),
        }
    }
}

impl EnhanceParams {
    /// Checks bounds; the message is meant for the person who sent the parameters.
    pub fn validate(&self) -> Result<(), String> {
        if self.scale != 2 && self.scale != 4 {
            return Err(format!("scale must be 2 or 4, got {}", self.scale));
        }
        if self.tile_size != 0 && !(MIN_TILE_SIZE..=MAX_TILE_SIZE).contains(&self.tile_size) {
            return Err(format!(
                "tile_size must be between {MIN_TILE_SIZE} and {MAX_TILE_SIZE} (or 0 for the default {DEFAULT_TILE_SIZE}), got {}",
                self.tile_size
            ));
        }
        Ok(())
    }

    /// The tile edge a job runs with. `tile_size: 0` is accepted (the CRD and older clients
    /// send it, once meaning "no tiling") but runs with [`DEFAULT_TILE_SIZE`]: a whole-image
    /// pass would make memory grow with the image instead of the tile.
    pub fn effective_tile_size(&self) -> std::num::NonZeroU32 {
        let t = if self.tile_size == 0 { DEFAULT_TILE_SIZE } else { self.tile_size };
        std::num::NonZeroU32::new(t).unwrap_or(std::num::NonZeroU32::MIN)
    }
}

/// Metadata of a finished enhancement job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub output_uri: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Faces detected (and restored when `face_restoration` is `applied`).
    pub faces: u32,
    #[serde(with = "face_restoration_wire")]
    pub face_restoration: FaceRestoration,
    /// Super-resolution model that ran, e.g. `realesrgan-x4plus`.
    pub model: String,
    /// Wall time of the whole job on the worker, in milliseconds.
    pub elapsed_ms: u64,
}

/// How a job's super-resolution tiles adapted to the worker's memory: planned smaller than
/// requested (the worker knew its device could not hold the request), or split in four after
/// the execution provider failed to allocate. Tile edges in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TileAdaptation {
    /// The job's tile edge (the device's default for `tile_size: 0`).
    #[serde(default)]
    pub requested: u32,
    /// The tile edge the job was planned with.
    #[serde(default)]
    pub planned: u32,
    /// The smallest tile edge it ran after splitting.
    #[serde(default)]
    pub smallest: u32,
    /// Tiles split in four after an allocation failure.
    #[serde(default)]
    pub splits: u32,
}

/// A [`JobResult`] as a worker reports it: the same fields, flat, plus `tile_adaptation` when
/// the tiles adapted. `JobResult` itself stays as it is because other crates build it field
/// by field; on the wire the two are interchangeable: a `JobResult` reader ignores the extra
/// key, and this type reads a plain `JobResult` with `tile_adaptation: None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedJobResult {
    #[serde(flatten)]
    pub result: JobResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tile_adaptation: Option<TileAdaptation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_defaults_match_the_seed_api() {
        let p: EnhanceParams = serde_json::from_str("{}").unwrap();
        assert_eq!(p.tile_size, 400);
        assert_eq!(p.quality_level, QualityLevel::High);
        assert_eq!(p.scale, 2);
        assert!(p.face_enhance);
        assert_eq!(p.output_format, OutputFormat::Jpeg);
    }

    #[test]
    fn params_validation_names_the_bad_field() {
        let mut p = EnhanceParams { scale: 3, ..Default::default() };
        assert!(p.validate().unwrap_err().contains("scale"));
        p.scale = 4;
        p.tile_size = 8;
        assert!(p.validate().unwrap_err().contains("tile_size"));
        p.tile_size = 0;
        assert!(p.validate().is_ok());
        p.tile_size = 2000;
        assert!(p.validate().unwrap_err().contains("between 32 and 1024"));
    }

    #[test]
    fn zero_tile_size_runs_with_the_default_tile() {
        let p = EnhanceParams { tile_size: 0, ..Default::default() };
        assert_eq!(p.effective_tile_size().get(), DEFAULT_TILE_SIZE);
        let p = EnhanceParams { tile_size: 64, ..Default::default() };
        assert_eq!(p.effective_tile_size().get(), 64);
    }

    #[test]
    fn face_restoration_is_camel_case_in_the_crd_and_snake_case_on_the_wire() {
        assert_eq!(serde_json::to_value(FaceRestoration::NotConfigured).unwrap(), "notConfigured");
        let r = JobResult {
            output_uri: "file:///o.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 1,
            height: 1,
            bytes: 1,
            faces: 0,
            face_restoration: FaceRestoration::NotConfigured,
            model: "m".into(),
            elapsed_ms: 0,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["face_restoration"], "not_configured");
        assert_eq!(serde_json::from_value::<JobResult>(v).unwrap(), r);
        let bad = serde_json::json!({"output_uri": "", "content_type": "", "width": 1, "height": 1, "bytes": 1, "faces": 0,
                                     "face_restoration": "notConfigured", "model": "", "elapsed_ms": 0});
        assert!(serde_json::from_value::<JobResult>(bad).is_err(), "the wire form is snake_case only");
    }

    #[test]
    fn reported_results_and_plain_results_read_each_other() {
        let result = JobResult {
            output_uri: "file:///o.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 8,
            height: 6,
            bytes: 10,
            faces: 0,
            face_restoration: FaceRestoration::Disabled,
            model: "realesrgan-x4plus".into(),
            elapsed_ms: 3,
        };
        let adaptation = TileAdaptation { requested: 400, planned: 400, smallest: 200, splits: 1 };
        let reported = ReportedJobResult { result: result.clone(), tile_adaptation: Some(adaptation) };
        let v = serde_json::to_value(&reported).unwrap();
        assert_eq!(v["tile_adaptation"], serde_json::json!({"requested": 400, "planned": 400, "smallest": 200, "splits": 1}));
        assert_eq!(v["width"], 8, "flat, like a JobResult");
        assert_eq!(serde_json::from_value::<JobResult>(v.clone()).unwrap(), result, "older readers ignore the report");
        assert_eq!(serde_json::from_value::<ReportedJobResult>(v).unwrap(), reported);
        let plain = serde_json::to_value(&result).unwrap();
        assert_eq!(serde_json::from_value::<ReportedJobResult>(plain.clone()).unwrap().tile_adaptation, None);
        let unadapted = ReportedJobResult { result, tile_adaptation: None };
        assert_eq!(serde_json::to_value(&unadapted).unwrap(), plain, "no report, no key");
        // Fields added later default, so a report from a newer worker still reads.
        let partial: TileAdaptation = serde_json::from_str(r#"{"splits": 2}"#).unwrap();
        assert_eq!(partial, TileAdaptation { splits: 2, ..Default::default() });
    }

    #[test]
    fn words_round_trip() {
        for q in QualityLevel::ALL {
            assert_eq!(q.as_str().parse::<QualityLevel>().unwrap(), q);
            assert_eq!(serde_json::to_value(q).unwrap(), q.as_str());
        }
        assert_eq!(OutputFormat::from_extension("JPG"), Some(OutputFormat::Jpeg));
        assert!(OutputFormat::Png.keeps_alpha() && !OutputFormat::Jpeg.keeps_alpha());
    }
}
