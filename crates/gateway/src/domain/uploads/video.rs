//! What can be honestly learnt about a video without a video decoder: its container by magic
//! bytes, its completeness by box/element sizes (see `purrify_imaging::Completeness`), and for
//! MP4/MOV the duration (`mvhd`) and display size (`tkhd` of the first visual track, turned
//! by its matrix). Codecs, frame rate and bit rate are not read; nor is anything inside WebM
//! beyond the element sizes.

use purrify_imaging::{BoxPos, Container};
use purrify_inference::storage::Storage;

/// Containers accepted as videos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    Mp4,
    Mov,
    Webm,
}

impl VideoFormat {
    pub fn mime_type(self) -> &'static str {
        match self {
            VideoFormat::Mp4 => "video/mp4",
            VideoFormat::Mov => "video/quicktime",
            VideoFormat::Webm => "video/webm",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            VideoFormat::Mp4 => "mp4",
            VideoFormat::Mov => "mov",
            VideoFormat::Webm => "webm",
        }
    }

    pub fn container(self) -> Container {
        match self {
            VideoFormat::Mp4 | VideoFormat::Mov => Container::IsoBmff,
            VideoFormat::Webm => Container::Ebml,
        }
    }
}

/// Identifies an MP4, MOV or WebM file from its first bytes. Image (AVIF/HEIC) and audio-only
/// (M4A/M4B) brands are not videos.
pub fn sniff(b: &[u8]) -> Option<VideoFormat> {
    if b.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // The EBML header names the DocType within its first few dozen bytes.
        return b.windows(4).any(|w| w == b"webm").then_some(VideoFormat::Webm);
    }
    if b.len() < 12 {
        return None;
    }
    match &b[4..8] {
        b"ftyp" => {
            if purrify_imaging::sniff(b).is_some() {
                return None;
            }
            match &b[8..12] {
                b"qt  " => Some(VideoFormat::Mov),
                b"M4A " | b"M4B " | b"M4P " => None,
                _ => Some(VideoFormat::Mp4),
            }
        }
        // QuickTime files from before `ftyp` start with one of these.
        b"moov" | b"mdat" | b"wide" | b"free" | b"skip" | b"pnot" => Some(VideoFormat::Mov),
        _ => None,
    }
}

/// What `moov` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VideoInfo {
    /// Displayed width and height of the first visual track.
    pub size: Option<(u32, u32)>,
    pub duration_ms: Option<u64>,
}

/// Largest `moov` read back; real ones are kilobytes to a few megabytes.
const MAX_MOOV: u64 = 8 << 20;

/// Reads the `moov` box at `moov` back from storage and parses it. Anything unreadable
/// yields no information rather than an error: the file's completeness is already known.
pub async fn read_moov(storage: &Storage, uri: &str, moov: BoxPos) -> VideoInfo {
    let Some(size) = moov.size.filter(|s| *s <= MAX_MOOV) else {
        return VideoInfo::default();
    };
    match storage.get_range(uri, moov.offset..moov.offset + size).await {
        Ok(bytes) => parse_moov(&bytes),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a video's moov box back");
            VideoInfo::default()
        }
    }
}

/// The child boxes of `data` (a box's content): `(type, content)`.
fn children(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let h = data.get(at..at + 8)?;
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let (header, size) = match size {
            1 => {
                let l = data.get(at + 8..at + 16)?;
                (16, usize::try_from(u64::from_be_bytes(l.try_into().ok()?)).ok()?)
            }
            0 => (8, data.len() - at),
            n => (8, n),
        };
        if size < header {
            return None;
        }
        let content = data.get(at + header..at.checked_add(size)?)?;
        let kind = &h[4..8];
        at += size;
        Some((kind, content))
    })
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be64(d: &[u8], at: usize) -> Option<u64> {
    d.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

/// What a whole MP4/MOV file held in memory states (a provider's result): its top-level
/// `moov` parsed; `None` when it has none.
pub fn probe(file: &[u8]) -> Option<VideoInfo> {
    let (_, content) = children(file).find(|(kind, _)| *kind == b"moov")?;
    // The content's place in the file, less its 8-byte header (a `moov` never needs the
    // 64-bit size form).
    let start = (content.as_ptr() as usize - file.as_ptr() as usize).checked_sub(8)?;
    Some(parse_moov(file.get(start..start + 8 + content.len())?))
}

/// Parses a whole `moov` box (header included).
pub fn parse_moov(moov: &[u8]) -> VideoInfo {
    let Some((_, content)) = children(moov).next() else {
        return VideoInfo::default();
    };
    let mut info = VideoInfo::default();
    for (kind, body) in children(content) {
        match kind {
            b"mvhd" => info.duration_ms = mvhd_duration(body),
            b"trak" if info.size.is_none() => info.size = trak_size(body),
            _ => {}
        }
    }
    info
}

fn mvhd_duration(b: &[u8]) -> Option<u64> {
    let (timescale, duration) = match b.first()? {
        0 => (be32(b, 12)?, u64::from(be32(b, 16)?)),
        1 => (be32(b, 20)?, be64(b, 24)?),
        _ => return None,
    };
    (timescale > 0 && duration != u64::MAX && duration != u64::from(u32::MAX))
        .then(|| u64::try_from(u128::from(duration) * 1000 / u128::from(timescale)).unwrap_or(u64::MAX))
}

/// The displayed size of a track whose handler is `vide`.
fn trak_size(trak: &[u8]) -> Option<(u32, u32)> {
    let visual = children(trak)
        .filter(|(k, _)| *k == b"mdia")
        .flat_map(|(_, m)| children(m))
        .any(|(k, hdlr)| k == b"hdlr" && hdlr.get(8..12) == Some(b"vide"));
    if !visual {
        return None;
    }
    let (_, tkhd) = children(trak).find(|(k, _)| *k == b"tkhd")?;
    let matrix_at = match tkhd.first()? {
        0 => 40,
        1 => 52,
        _ => return None,
    };
    // 16.16 fixed point.
    let width = be32(tkhd, matrix_at + 36)? >> 16;
    let height = be32(tkhd, matrix_at + 40)? >> 16;
    if width == 0 || height == 0 {
        return None;
    }
    // Matrix {a b u; c d v; x y w}: a = d = 0 is a quarter turn, so the display swaps sides.
    let quarter = be32(tkhd, matrix_at)? == 0 && be32(tkhd, matrix_at + 16)? == 0;
    Some(if quarter { (height, width) } else { (width, height) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    /// A minimal MP4: ftyp, moov (mvhd, one video trak with tkhd and hdlr), mdat.
    pub(crate) fn tiny_mp4(width: u32, height: u32, rotated: bool, mdat: &[u8]) -> Vec<u8> {
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        mvhd[16..20].copy_from_slice(&2500u32.to_be_bytes());
        let mut tkhd = vec![0u8; 84];
        let (a, b, c, d): (u32, u32, u32, u32) = if rotated { (0, 0x10000, 0xFFFF_0000, 0) } else { (0x10000, 0, 0, 0x10000) };
        tkhd[40..44].copy_from_slice(&a.to_be_bytes());
        tkhd[44..48].copy_from_slice(&b.to_be_bytes());
        tkhd[52..56].copy_from_slice(&c.to_be_bytes());
        tkhd[56..60].copy_from_slice(&d.to_be_bytes());
        tkhd[76..80].copy_from_slice(&(width << 16).to_be_bytes());
        tkhd[80..84].copy_from_slice(&(height << 16).to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"vide");
        let mdia = boxed(b"mdia", &boxed(b"hdlr", &hdlr));
        let mut trak = boxed(b"tkhd", &tkhd);
        trak.extend(mdia);
        let mut moov = boxed(b"mvhd", &mvhd);
        moov.extend(boxed(b"trak", &trak));
        let mut file = boxed(b"ftyp", b"isom\0\0\x02\0isomiso2mp41");
        file.extend(boxed(b"moov", &moov));
        file.extend(boxed(b"mdat", mdat));
        file
    }

    #[test]
    fn sniffs_videos_not_images() {
        assert_eq!(sniff(&tiny_mp4(4, 4, false, b"")), Some(VideoFormat::Mp4));
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  \0\0\0\0qt  "), Some(VideoFormat::Mov));
        assert_eq!(sniff(b"\0\0\0\x08wide\0\0\0\x10mdat"), Some(VideoFormat::Mov));
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"), None);
        assert_eq!(sniff(b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom"), None);
        let webm = [&[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0x82, 0x84][..], b"webm"].concat();
        assert_eq!(sniff(&webm), Some(VideoFormat::Webm));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x88, b'm', b'a', b't', b'r']), None);
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn reads_size_and_duration_from_moov() {
        let file = tiny_mp4(1920, 1080, false, b"frames");
        let mut c = purrify_imaging::Completeness::new(Container::IsoBmff);
        c.update(&file).unwrap();
        c.finish().unwrap();
        let moov = c.top_box(b"moov").unwrap();
        let bytes = &file[moov.offset as usize..(moov.offset + moov.size.unwrap()) as usize];
        assert_eq!(parse_moov(bytes), VideoInfo { size: Some((1920, 1080)), duration_ms: Some(2500) });
        let turned = tiny_mp4(1920, 1080, true, b"");
        let mut c = purrify_imaging::Completeness::new(Container::IsoBmff);
        c.update(&turned).unwrap();
        let moov = c.top_box(b"moov").unwrap();
        let bytes = &turned[moov.offset as usize..(moov.offset + moov.size.unwrap()) as usize];
        assert_eq!(parse_moov(bytes).size, Some((1080, 1920)));
        assert_eq!(parse_moov(b"\0\0\0\x08moov"), VideoInfo::default());
        assert_eq!(parse_moov(b"garbage"), VideoInfo::default());
    }
}
