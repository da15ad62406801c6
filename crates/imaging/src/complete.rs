//! Cheap completeness checks on streamed bytes: is this file whole, or was it cut short?
//!
//! A mobile upload cut off mid-way is the commonest corruption. Decoding finds it late and
//! costs a full decode; the containers say it for free: a JPEG ends with its EOI marker after
//! the scan, a PNG with its IEND chunk, a RIFF (WebP) file is as long as its header says, and
//! the top-level boxes of an ISOBMFF file (AVIF, HEIC, MP4, MOV) or the top-level elements of
//! an EBML file (WebM) add up to its length.
//!
//! [`Completeness`] is fed the file chunk by chunk as it streams and keeps only what it needs:
//! the last bytes, the position of the next segment/box header, and (ISOBMFF) where the first
//! few top-level boxes sit, so callers can read e.g. `moov` back without a second pass.

use crate::{Format, ImageError};

/// The container structures the checker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// Marker segments up to the scan, then EOI (`FF D9`) after it. The bytes after EOI are
    /// not looked at: zero or whitespace padding some phones write, Samsung's trailer, and
    /// the MP4 of a Google "motion photo" all follow a complete image.
    Jpeg,
    /// Ends with the IEND chunk.
    Png,
    /// `RIFF` + little-endian size: the file is exactly `size + 8` bytes (WebP).
    Riff,
    /// Top-level boxes whose sizes add up to the length (AVIF, HEIC, MP4, MOV).
    IsoBmff,
    /// Top-level EBML elements whose sizes add up to the length (WebM, Matroska). A segment
    /// of unknown size (live recordings) extends to the end and cannot be checked.
    Ebml,
}

impl Container {
    /// The container of an image format, for the formats whose ending can be checked.
    pub fn of(format: Format) -> Option<Container> {
        match format {
            Format::Jpeg => Some(Container::Jpeg),
            Format::Png => Some(Container::Png),
            Format::Webp => Some(Container::Riff),
            Format::Avif | Format::Heic => Some(Container::IsoBmff),
            Format::Gif | Format::Tiff | Format::Bmp => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Container::Jpeg => "JPEG",
            Container::Png => "PNG",
            Container::Riff => "RIFF",
            Container::IsoBmff => "ISO media",
            Container::Ebml => "WebM",
        }
    }
}

/// Where a top-level ISOBMFF box sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxPos {
    pub kind: [u8; 4],
    /// Offset of the box header.
    pub offset: u64,
    /// Whole box, header included; `None` when the box extends to the end of the file.
    pub size: Option<u64>,
}

/// First occurrences of distinct top-level box types remembered; real files have a handful.
const MAX_BOXES: usize = 32;
const PNG_IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// What a header parser says about the bytes collected at a header position.
enum Step {
    /// Needs more header bytes.
    More,
    /// The unit (segment, box, element) starting here is this many bytes long.
    Next(u64),
    /// No more headers to follow: the JPEG scan started, or a box/element extends to the end.
    Stop,
    Bad(String),
}

/// Streaming completeness checker. Feed every chunk to [`Completeness::update`], then call
/// [`Completeness::finish`] with the whole file seen.
#[derive(Debug, Clone)]
pub struct Completeness {
    container: Container,
    len: u64,
    /// PNG: the last (up to 12) bytes seen.
    tail: Vec<u8>,
    /// Absolute offset of the next header, while headers are being walked.
    next: u64,
    /// Bytes of the header at `next` collected so far.
    header: Vec<u8>,
    /// The walk reached a point past which no header follows.
    stopped: bool,
    /// JPEG only: the scan (SOS) was reached; the EOI search starts at `eoi_from`.
    scan: bool,
    eoi_from: u64,
    /// JPEG: the previous byte of the scan was FF.
    after_ff: bool,
    /// JPEG: EOI was found after the scan.
    eoi: bool,
    boxes: Vec<BoxPos>,
    error: Option<ImageError>,
}

fn incomplete(what: impl std::fmt::Display) -> ImageError {
    ImageError::Malformed(format!("the file is incomplete: {what}"))
}

impl Completeness {
    pub fn new(container: Container) -> Self {
        Completeness {
            container,
            len: 0,
            tail: Vec::with_capacity(12),
            next: 0,
            header: Vec::with_capacity(16),
            stopped: matches!(container, Container::Png),
            scan: false,
            eoi_from: 0,
            after_ff: false,
            eoi: false,
            boxes: Vec::new(),
            error: None,
        }
    }

    /// A checker for an image format, when its ending can be checked (see [`Container::of`]).
    pub fn for_format(format: Format) -> Option<Self> {
        Container::of(format).map(Self::new)
    }

    pub fn container(&self) -> Container {
        self.container
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// ISOBMFF: the first box of type `kind` at the top level, if one was seen.
    pub fn top_box(&self, kind: &[u8; 4]) -> Option<BoxPos> {
        self.boxes.iter().find(|b| &b.kind == kind).copied()
    }

    /// Takes the next chunk. Fails early when the structure is already broken (a box
    /// smaller than its header, data past the declared RIFF size); once failed, stays failed.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let base = self.len;
        self.len += chunk.len() as u64;
        if self.container == Container::Png {
            self.keep_tail(chunk);
        }
        if let Err(e) = self.walk(base, chunk) {
            self.error = Some(e.clone());
            return Err(e);
        }
        if self.scan && !self.eoi {
            self.find_eoi(base, chunk);
        }
        Ok(())
    }

    /// Looks for `FF D9` in the scan data. Entropy-coded data never holds it (an FF byte
    /// there is followed by 00 or a restart marker), so the first one ends the image.
    fn find_eoi(&mut self, base: u64, chunk: &[u8]) {
        let start = usize::try_from(self.eoi_from.saturating_sub(base)).unwrap_or(usize::MAX).min(chunk.len());
        for &b in &chunk[start..] {
            if self.after_ff && b == 0xD9 {
                self.eoi = true;
                return;
            }
            self.after_ff = b == 0xFF;
        }
    }

    fn keep_tail(&mut self, chunk: &[u8]) {
        let keep = PNG_IEND.len();
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    /// Walks the headers that start inside `chunk` (which begins at offset `base`).
    fn walk(&mut self, base: u64, chunk: &[u8]) -> Result<(), ImageError> {
        let end = base + chunk.len() as u64;
        while !self.stopped && self.next < end {
            // The next header byte to collect; earlier ones came with earlier chunks.
            let mut at = (self.next + self.header.len() as u64 - base) as usize;
            let step = loop {
                if at >= chunk.len() {
                    return Ok(());
                }
                self.header.push(chunk[at]);
                at += 1;
                match self.parse_header() {
                    Step::More => continue,
                    Step::Next(size) => break Ok(size),
                    Step::Stop => break Err(None),
                    Step::Bad(why) => break Err(Some(why)),
                }
            };
            match step {
                Ok(size) => {
                    self.next = self.next.checked_add(size).ok_or_else(|| incomplete("a size field overflows"))?;
                    self.header.clear();
                }
                Err(None) => {
                    self.header.clear();
                    self.stopped = true;
                }
                Err(Some(why)) => return Err(ImageError::Malformed(format!("the {} structure is broken: {why}", self.container.name()))),
            }
        }
        Ok(())
    }

    fn parse_header(&mut self) -> Step {
        let h = &self.header;
        match self.container {
            Container::Png => Step::Stop,
            Container::Riff => {
                if self.next > 0 {
                    return Step::Bad(format!("data continues after the {} bytes the header declares", self.next));
                }
                if h.len() < 8 {
                    return Step::More;
                }
                Step::Next(8 + u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]])))
            }
            Container::Jpeg => {
                if h[0] != 0xFF {
                    return Step::Bad(format!("expected a marker at byte {}", self.next));
                }
                if h.len() < 2 {
                    return Step::More;
                }
                match h[1] {
                    // Fill byte before a marker.
                    0xFF => Step::Next(1),
                    0xD8 if self.next == 0 => Step::Next(2),
                    0x01 | 0xD0..=0xD7 => Step::Next(2),
                    0xDA => {
                        self.scan = true;
                        self.eoi_from = self.next + 2;
                        Step::Stop
                    }
                    0xD8 | 0xD9 | 0x00 => Step::Bad(format!("unexpected marker FF {:02X} before the image data", h[1])),
                    _ if h.len() < 4 => Step::More,
                    _ => match u16::from_be_bytes([h[2], h[3]]) {
                        len @ 2.. => Step::Next(2 + u64::from(len)),
                        _ => Step::Bad("a segment shorter than its length field".into()),
                    },
                }
            }
            Container::IsoBmff => {
                if h.len() < 8 {
                    return Step::More;
                }
                let kind = [h[4], h[5], h[6], h[7]];
                let (size, header_len) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
                    0 => {
                        self.remember_box(kind, None);
                        return Step::Stop;
                    }
                    1 if h.len() < 16 => return Step::More,
                    1 => (u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]), 16),
                    n => (u64::from(n), 8),
                };
                if size < header_len {
                    return Step::Bad(format!("a box of {size} bytes is smaller than its header"));
                }
                self.remember_box(kind, Some(size));
                Step::Next(size)
            }
            Container::Ebml => ebml_header(h),
        }
    }

    fn remember_box(&mut self, kind: [u8; 4], size: Option<u64>) {
        if self.boxes.len() < MAX_BOXES && self.top_box(&kind).is_none() {
            self.boxes.push(BoxPos { kind, offset: self.next, size });
        }
    }

    /// Whether the bytes seen form a whole file.
    pub fn finish(&self) -> Result<(), ImageError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.len == 0 {
            return Err(ImageError::Empty);
        }
        let len = self.len;
        match self.container {
            Container::Jpeg => {
                if !self.scan {
                    return Err(incomplete(format!("the JPEG ends after {len} bytes, before its image data")));
                }
                if !self.eoi {
                    return Err(incomplete(format!("the JPEG ends after {len} bytes without its end-of-image marker")));
                }
            }
            Container::Png => {
                if self.tail != PNG_IEND {
                    return Err(incomplete(format!("the PNG ends after {len} bytes without its IEND chunk")));
                }
            }
            Container::Riff | Container::IsoBmff | Container::Ebml => {
                if !self.header.is_empty() || (!self.stopped && self.next != len) {
                    let expected = if self.header.is_empty() { format!("{}", self.next) } else { "more".into() };
                    return Err(incomplete(format!("the {} container declares {expected} bytes but {len} arrived", self.container.name())));
                }
            }
        }
        Ok(())
    }
}

/// Reads an EBML variable-length integer: (length in bytes, value with the marker bit
/// cleared, all value bits set).
fn vint(bytes: &[u8], max_len: usize) -> Option<Result<(usize, u64, bool), String>> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > max_len {
        return Some(Err(format!("an EBML number of {len} bytes (at most {max_len})")));
    }
    if bytes.len() < len {
        return None;
    }
    let mask = if len == 8 { 0 } else { 0xFFu8 >> len };
    let mut value = u64::from(first & mask);
    for &b in &bytes[1..len] {
        value = (value << 8) | u64::from(b);
    }
    let all_ones = value == (1u64 << (7 * len)) - 1;
    Some(Ok((len, value, all_ones)))
}

fn ebml_header(h: &[u8]) -> Step {
    let (id_len, _, _) = match vint(h, 4) {
        None => return Step::More,
        Some(Err(e)) => return Step::Bad(e),
        Some(Ok(v)) => v,
    };
    match vint(&h[id_len..], 8) {
        None => Step::More,
        Some(Err(e)) => Step::Bad(e),
        Some(Ok((_, _, true))) => Step::Stop,
        Some(Ok((size_len, size, false))) => Step::Next((id_len + size_len) as u64 + size),
    }
}

/// Checks a whole file in one go; see [`Completeness`].
pub fn check_complete(container: Container, bytes: &[u8]) -> Result<(), ImageError> {
    let mut c = Completeness::new(container);
    c.update(bytes)?;
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OutputFormat, encode};
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x ^ y) % 256) as u8]))
    }

    /// Feeds `bytes` in chunks of every size in `sizes` (so headers straddle chunk
    /// boundaries) and returns the verdict, which must not depend on the chunking.
    fn verdict(container: Container, bytes: &[u8]) -> Result<(), ImageError> {
        let whole = check_complete(container, bytes);
        for size in [1, 2, 3, 5, 7, 64, 1000, 4096] {
            let mut c = Completeness::new(container);
            let mut early = Ok(());
            for chunk in bytes.chunks(size) {
                early = c.update(chunk);
                if early.is_err() {
                    break;
                }
            }
            let chunked = early.and_then(|()| c.finish());
            assert_eq!(chunked.is_ok(), whole.is_ok(), "chunks of {size}: {chunked:?} vs {whole:?}");
        }
        whole
    }

    #[test]
    fn jpeg() {
        let full = encode(&photo(300, 200), None, OutputFormat::Jpeg, 90).unwrap();
        assert!(full.len() > 3000);
        verdict(Container::Jpeg, &full).unwrap();
        // Padding some phones append after EOI.
        let mut padded = full.clone();
        padded.extend_from_slice(&[0, 0, 0, b'\n', b' ']);
        verdict(Container::Jpeg, &padded).unwrap();
        // Data after EOI (a Samsung trailer, a motion photo's MP4) follows a whole image.
        let mut motion = full.clone();
        motion.extend_from_slice(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom and the video...");
        verdict(Container::Jpeg, &motion).unwrap();
        // Cut after 1.5 kB, cut one byte short, cut inside the headers.
        for cut in [1536, full.len() - 1, full.len() - 2, 20, 3] {
            let e = verdict(Container::Jpeg, &full[..cut]).unwrap_err();
            assert!(e.to_string().contains("incomplete"), "{cut}: {e}");
        }
        // A cut that happens to end in zeros is still a cut.
        let mut cut_zeros = full[..1536].to_vec();
        cut_zeros.extend_from_slice(&[0; 100]);
        verdict(Container::Jpeg, &cut_zeros).unwrap_err();
        // FF D9 inside the headers (an EXIF thumbnail's end) does not count: here an APP1
        // segment ending in FF D9 and the file cut right after it.
        let mut app1 = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD8, 0xFF, 0xD9];
        verdict(Container::Jpeg, &app1).unwrap_err();
        app1.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9]);
        verdict(Container::Jpeg, &app1).unwrap();
        // A broken segment length is refused early.
        let e = verdict(Container::Jpeg, &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("broken"), "{e}");
    }

    #[test]
    fn png() {
        let alpha = GrayImage::from_pixel(120, 80, Luma([128]));
        let full = encode(&photo(120, 80), Some(&alpha), OutputFormat::Png, 0).unwrap();
        verdict(Container::Png, &full).unwrap();
        for cut in [8, 100, full.len() / 2, full.len() - 1, full.len() - 12] {
            let e = verdict(Container::Png, &full[..cut]).unwrap_err();
            assert!(e.to_string().contains("IEND"), "{e}");
        }
    }

    #[test]
    fn webp_riff_size() {
        let full = encode(&photo(64, 48), None, OutputFormat::Webp, 0).unwrap();
        verdict(Container::Riff, &full).unwrap();
        verdict(Container::Riff, &full[..full.len() - 1]).unwrap_err();
        verdict(Container::Riff, &full[..7]).unwrap_err();
        let mut longer = full.clone();
        longer.push(0);
        let e = verdict(Container::Riff, &longer).unwrap_err();
        assert!(e.to_string().contains("continues"), "{e}");
    }

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn isobmff_box_sizes() {
        let mut file = boxed(b"ftyp", b"isom\0\0\0\0isommp42");
        file.extend(boxed(b"moov", &[7; 100]));
        let mdat_at = file.len() as u64;
        // A 64-bit box size.
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"mdat");
        large.extend_from_slice(&(16u64 + 300).to_be_bytes());
        large.extend_from_slice(&[9; 300]);
        file.extend(large);
        verdict(Container::IsoBmff, &file).unwrap();
        let mut c = Completeness::new(Container::IsoBmff);
        for chunk in file.chunks(13) {
            c.update(chunk).unwrap();
        }
        assert_eq!(c.top_box(b"moov"), Some(BoxPos { kind: *b"moov", offset: 24, size: Some(108) }));
        assert_eq!(c.top_box(b"mdat").map(|b| (b.offset, b.size)), Some((mdat_at, Some(316))));
        for cut in [4, 10, 32, 50, file.len() - 1] {
            verdict(Container::IsoBmff, &file[..cut]).unwrap_err();
        }
        // Extra bytes after the last box are a box header too short to be one.
        let mut extra = file.clone();
        extra.extend_from_slice(&[0, 0]);
        verdict(Container::IsoBmff, &extra).unwrap_err();
        // size 0: the last box runs to the end of the file.
        let mut to_end = boxed(b"ftyp", b"avif\0\0\0\0");
        to_end.extend_from_slice(&[0, 0, 0, 0]);
        to_end.extend_from_slice(b"mdat");
        to_end.extend_from_slice(&[1; 50]);
        verdict(Container::IsoBmff, &to_end).unwrap();
        // A box claiming fewer bytes than its header.
        let mut bad = boxed(b"ftyp", b"avif");
        bad.extend_from_slice(&[0, 0, 0, 3, b'f', b'r', b'e', b'e']);
        assert!(verdict(Container::IsoBmff, &bad).unwrap_err().to_string().contains("broken"));
    }

    #[test]
    fn ebml_element_sizes() {
        // EBML header element (ID 1A45DFA3) with a 1-byte size of 4, then a Segment
        // (18538067) with an 8-byte size field.
        let mut file = vec![0x1A, 0x45, 0xDF, 0xA3, 0x84, 1, 2, 3, 4];
        file.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0, 0, 0, 0, 0, 0, 20]);
        file.extend_from_slice(&[5; 20]);
        verdict(Container::Ebml, &file).unwrap();
        verdict(Container::Ebml, &file[..file.len() - 1]).unwrap_err();
        verdict(Container::Ebml, &file[..12]).unwrap_err();
        // Unknown size (all ones): a live recording; cannot be checked, accepted.
        let mut live = file[..9].to_vec();
        live.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0xFF, 1, 2, 3]);
        verdict(Container::Ebml, &live).unwrap();
        // A zero first byte is not a valid number.
        assert!(verdict(Container::Ebml, &[0, 1, 2]).is_err());
    }

    #[test]
    fn formats_map_to_containers() {
        assert_eq!(Container::of(Format::Webp), Some(Container::Riff));
        assert_eq!(Container::of(Format::Avif), Some(Container::IsoBmff));
        assert_eq!(Container::of(Format::Gif), None);
        assert!(matches!(check_complete(Container::Png, b""), Err(ImageError::Empty)));
    }
}
