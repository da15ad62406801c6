/// Image container formats we can recognise from magic bytes.
///
/// Only [`Format::is_supported`] ones decode; the others are recognised so the error can say
/// "GIF images are not supported" instead of "not an image".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    Tiff,
    Bmp,
    /// HEIF with HEVC (what iPhones produce); common enough to deserve its own message.
    Heic,
}

impl Format {
    pub fn is_supported(self) -> bool {
        matches!(self, Format::Jpeg | Format::Png | Format::Webp | Format::Avif)
    }

    /// Short user-facing name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Avif => "AVIF",
            Format::Gif => "GIF",
            Format::Tiff => "TIFF",
            Format::Bmp => "BMP",
            Format::Heic => "HEIC",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Gif => "image/gif",
            Format::Tiff => "image/tiff",
            Format::Bmp => "image/bmp",
            Format::Heic => "image/heic",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes `sniff` looks at; callers streaming an upload can stop buffering after this many.
pub const SNIFF_LEN: usize = 32;

/// Identifies the format from magic bytes only (never from a file name).
///
/// Needs at most the first [`SNIFF_LEN`] bytes; more are ignored.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    let b = &bytes[..bytes.len().min(SNIFF_LEN)];
    // Three bytes, not two: FF D8 followed by anything but a marker is not a JPEG stream.
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(Format::Webp);
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") || b.starts_with(b"II+\0") || b.starts_with(b"MM\0+") {
        return Some(Format::Tiff);
    }
    if let Some(f) = sniff_ftyp(b) {
        return Some(f);
    }
    // "BM" alone is too weak (plenty of text starts with it): also require a known DIB
    // header size.
    if b.len() >= 18 && b.starts_with(b"BM") {
        let dib = u32::from_le_bytes([b[14], b[15], b[16], b[17]]);
        if matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124) {
            return Some(Format::Bmp);
        }
    }
    None
}

/// ISOBMFF `ftyp`: the major brand and as many compatible brands as fit in the prefix.
fn sniff_ftyp(b: &[u8]) -> Option<Format> {
    if b.len() < 12 || &b[4..8] != b"ftyp" {
        return None;
    }
    let box_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if box_len < 16 {
        return None;
    }
    let end = box_len.min(b.len());
    // Major brand at 8..12, minor version at 12..16, compatible brands from 16.
    let brands = std::iter::once(&b[8..12]).chain(b.get(16..end).unwrap_or(&[]).chunks_exact(4));
    let mut heif = false;
    for brand in brands {
        match brand {
            b"avif" | b"avis" => return Some(Format::Avif),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => heif = true,
            _ => {}
        }
    }
    heif.then_some(Format::Heic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(&[0xFF, 0xD8]), None);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Some(Format::Gif));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(Format::Tiff));
        assert_eq!(sniff(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"), Some(Format::Avif));
        assert_eq!(sniff(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf"), Some(Format::Avif));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), Some(Format::Heic));
        assert_eq!(sniff(b"\0\0\0\x18ftypisom\0\0\0\0isommp42"), None);
        let mut bmp = b"BM\0\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec();
        assert_eq!(sniff(&bmp), Some(Format::Bmp));
        bmp[14] = b'x';
        assert_eq!(sniff(&bmp), None);
        assert_eq!(sniff(b"BMW is a car brand, not a bitmap"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"hello, I am a text file named photo.jpg"), None);
    }
}
