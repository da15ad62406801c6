//! The item properties of an AVIF file that avif-parse does not expose: image size (`ispe`),
//! colour description (`colr`/nclx), rotation (`irot`), mirroring (`imir`) and the AV1 config
//! (`av1C`), for the primary item and its alpha item.
//!
//! Only the `meta` box is read, so this is cheap and never touches the coded image data.
//! Every read is bounds-checked; malformed input yields `Err`, never a panic.

use std::collections::HashMap;

const ALPHA_URNS: [&[u8]; 2] = [
    b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha",
    // Written by some early encoders; libavif accepts it too.
    b"urn:mpeg:hevc:2015:auxid:1",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nclx {
    pub primaries: u16,
    pub transfer: u16,
    pub matrix: u16,
    pub full_range: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Av1Config {
    pub bit_depth: u8,
    pub monochrome: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ItemProps {
    pub item_type: [u8; 4],
    /// Width and height before rotation.
    pub size: Option<(u32, u32)>,
    pub nclx: Option<Nclx>,
    /// Quarter turns anti-clockwise (HEIF `irot`).
    pub rotation: u8,
    /// HEIF `imir`: 0 exchanges top and bottom, 1 exchanges left and right (the reading
    /// libavif, libheif and browsers agree on).
    pub mirror: Option<u8>,
    pub av1c: Option<Av1Config>,
    is_alpha: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AvifProps {
    pub primary: ItemProps,
    pub alpha: Option<ItemProps>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoxError(pub &'static str);

type Result<T> = std::result::Result<T, BoxError>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(BoxError("a box is cut short"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn fourcc(&mut self) -> Result<[u8; 4]> {
        let b = self.bytes(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }
    /// (version, flags) of a FullBox.
    fn full_box(&mut self) -> Result<(u8, u32)> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00FF_FFFF))
    }
    fn item_id(&mut self, wide: bool) -> Result<u32> {
        if wide { self.u32() } else { self.u16().map(u32::from) }
    }
}

/// Iterates the boxes in `buf`, yielding (type, body).
struct Boxes<'a> {
    r: Reader<'a>,
}

impl<'a> Boxes<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Boxes { r: Reader::new(buf) }
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.remaining() == 0 {
            return None;
        }
        Some(self.next_box())
    }
}

impl<'a> Boxes<'a> {
    fn next_box(&mut self) -> Result<([u8; 4], &'a [u8])> {
        let start = self.r.pos;
        let size32 = self.r.u32()?;
        let kind = self.r.fourcc()?;
        let size = match size32 {
            0 => (self.r.buf.len() - start) as u64,
            1 => self.r.u64()?,
            n => u64::from(n),
        };
        let header = (self.r.pos - start) as u64;
        let body_len = size.checked_sub(header).ok_or(BoxError("a box has an impossible size"))?;
        let body_len = usize::try_from(body_len).map_err(|_| BoxError("a box is cut short"))?;
        let body = self.r.bytes(body_len)?;
        Ok((kind, body))
    }
}

fn find_box<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>> {
    for b in Boxes::new(buf) {
        let (k, body) = b?;
        if &k == kind {
            return Ok(Some(body));
        }
    }
    Ok(None)
}

/// Parses the properties of the primary item and of its alpha auxiliary item, if any.
///
/// Stops at the `meta` box, so a prefix holding `ftyp` and `meta` is enough.
pub(crate) fn parse(file: &[u8]) -> Result<AvifProps> {
    let mut top = Boxes::new(file);
    let meta = loop {
        match top.next() {
            None => return Err(BoxError("the meta box is missing")),
            Some(Err(_)) => return Err(BoxError("the file is truncated before its meta box")),
            Some(Ok((kind, body))) if &kind == b"meta" => break body,
            Some(Ok(_)) => {}
        }
    };
    parse_meta(meta)
}

/// Checks that the top-level boxes tile the whole file, i.e. it was not cut off.
pub(crate) fn check_complete(file: &[u8]) -> Result<()> {
    for b in Boxes::new(file) {
        b.map_err(|_| BoxError("the file ends early; it was probably cut off"))?;
    }
    Ok(())
}

fn parse_meta(meta: &[u8]) -> Result<AvifProps> {
    let mut r = Reader::new(meta);
    r.full_box()?;
    let children = &meta[r.pos..];

    let mut primary_id = None;
    let mut item_types: HashMap<u32, [u8; 4]> = HashMap::new();
    let mut auxl_to_primary: Vec<(u32, u32)> = Vec::new();
    let mut properties: Vec<Property> = Vec::new();
    let mut associations: Vec<(u32, u16)> = Vec::new();

    for b in Boxes::new(children) {
        let (kind, body) = b?;
        match &kind {
            b"pitm" => {
                let mut r = Reader::new(body);
                let (version, _) = r.full_box()?;
                primary_id = Some(r.item_id(version > 0)?);
            }
            b"iinf" => parse_iinf(body, &mut item_types)?,
            b"iref" => parse_iref(body, &mut auxl_to_primary)?,
            b"iprp" => {
                if let Some(ipco) = find_box(body, b"ipco")? {
                    properties = parse_ipco(ipco)?;
                }
                for b in Boxes::new(body) {
                    let (kind, ipma) = b?;
                    if &kind == b"ipma" {
                        parse_ipma(ipma, &mut associations)?;
                    }
                }
            }
            _ => {}
        }
    }

    let primary_id = primary_id.ok_or(BoxError("the primary item (pitm) is missing"))?;
    let item = |id: u32| -> ItemProps {
        let mut props = ItemProps { item_type: item_types.get(&id).copied().unwrap_or(*b"    "), ..ItemProps::default() };
        for &(_, index) in associations.iter().filter(|(item, _)| *item == id) {
            // Property indices are 1-based; 0 means "no property".
            let Some(p) = usize::from(index).checked_sub(1).and_then(|i| properties.get(i)) else {
                continue;
            };
            match *p {
                Property::Ispe(w, h) => props.size = Some((w, h)),
                // The first nclx wins; ICC `colr` boxes do not replace it.
                Property::Nclx(n) => {
                    props.nclx.get_or_insert(n);
                }
                Property::Irot(a) => props.rotation = a,
                Property::Imir(m) => props.mirror = Some(m),
                Property::Av1C(c) => props.av1c = Some(c),
                Property::AlphaAux => props.is_alpha = true,
                Property::Other => {}
            }
        }
        props
    };

    let primary = item(primary_id);
    let alpha = auxl_to_primary
        .iter()
        .filter(|&&(from, to)| to == primary_id && from != primary_id)
        .map(|&(from, _)| item(from))
        .find(|p| p.is_alpha);
    Ok(AvifProps { primary, alpha })
}

fn parse_iinf(body: &[u8], item_types: &mut HashMap<u32, [u8; 4]>) -> Result<()> {
    let mut r = Reader::new(body);
    let (version, _) = r.full_box()?;
    if version == 0 {
        r.u16()?;
    } else {
        r.u32()?;
    }
    for b in Boxes::new(&body[r.pos..]) {
        let (kind, infe) = b?;
        if &kind != b"infe" {
            continue;
        }
        let mut r = Reader::new(infe);
        let (version, _) = r.full_box()?;
        // Versions 0 and 1 predate item types; AVIF requires 2 or 3.
        if version < 2 {
            continue;
        }
        let id = r.item_id(version > 2)?;
        r.u16()?; // item_protection_index
        item_types.insert(id, r.fourcc()?);
    }
    Ok(())
}

fn parse_iref(body: &[u8], auxl: &mut Vec<(u32, u32)>) -> Result<()> {
    let mut r = Reader::new(body);
    let (version, _) = r.full_box()?;
    let wide = version > 0;
    for b in Boxes::new(&body[r.pos..]) {
        let (kind, refs) = b?;
        if &kind != b"auxl" {
            continue;
        }
        let mut r = Reader::new(refs);
        let from = r.item_id(wide)?;
        let count = r.u16()?;
        for _ in 0..count {
            auxl.push((from, r.item_id(wide)?));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Property {
    Ispe(u32, u32),
    Nclx(Nclx),
    Irot(u8),
    Imir(u8),
    Av1C(Av1Config),
    AlphaAux,
    Other,
}

fn parse_ipco(body: &[u8]) -> Result<Vec<Property>> {
    let mut out = Vec::new();
    for b in Boxes::new(body) {
        let (kind, p) = b?;
        // Every box counts, known or not: associations refer to them by position.
        out.push(parse_property(&kind, p).unwrap_or(Property::Other));
    }
    Ok(out)
}

/// `None` for properties we do not use or cannot read; an unreadable optional property must
/// not make the whole file fail.
fn parse_property(kind: &[u8; 4], body: &[u8]) -> Option<Property> {
    let mut r = Reader::new(body);
    match kind {
        b"ispe" => {
            r.full_box().ok()?;
            Some(Property::Ispe(r.u32().ok()?, r.u32().ok()?))
        }
        b"colr" => {
            if &r.fourcc().ok()? != b"nclx" {
                return None;
            }
            Some(Property::Nclx(Nclx {
                primaries: r.u16().ok()?,
                transfer: r.u16().ok()?,
                matrix: r.u16().ok()?,
                full_range: r.u8().ok()? & 0x80 != 0,
            }))
        }
        b"irot" => Some(Property::Irot(r.u8().ok()? & 0x03)),
        b"imir" => Some(Property::Imir(r.u8().ok()? & 0x01)),
        b"av1C" => {
            let b = r.bytes(3).ok()?;
            let high_bitdepth = b[2] & 0x40 != 0;
            let twelve_bit = b[2] & 0x20 != 0;
            Some(Property::Av1C(Av1Config {
                bit_depth: match (high_bitdepth, twelve_bit) {
                    (true, true) => 12,
                    (true, false) => 10,
                    _ => 8,
                },
                monochrome: b[2] & 0x10 != 0,
            }))
        }
        b"auxC" => {
            r.full_box().ok()?;
            let rest = &body[r.pos..];
            let urn = rest.split(|&c| c == 0).next().unwrap_or(rest);
            ALPHA_URNS.contains(&urn).then_some(Property::AlphaAux)
        }
        _ => None,
    }
}

fn parse_ipma(body: &[u8], out: &mut Vec<(u32, u16)>) -> Result<()> {
    let mut r = Reader::new(body);
    let (version, flags) = r.full_box()?;
    let entries = r.u32()?;
    for _ in 0..entries {
        let item = r.item_id(version > 0)?;
        let count = r.u8()?;
        for _ in 0..count {
            // High bit is "essential"; the rest is the 1-based property index.
            let index = if flags & 1 != 0 { r.u16()? & 0x7FFF } else { u16::from(r.u8()? & 0x7F) };
            out.push((item, index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    fn full(kind: &[u8; 4], version: u8, body: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0, 0, 0];
        b.extend_from_slice(body);
        bx(kind, &b)
    }

    fn sample_file(ispe: (u32, u32), with_alpha: bool) -> Vec<u8> {
        let mut ipco = full(b"ispe", 0, &[ispe.0.to_be_bytes(), ispe.1.to_be_bytes()].concat());
        ipco.extend(bx(b"colr", b"nclx\0\x01\0\x0d\0\x06\x80"));
        ipco.extend(bx(b"irot", &[1]));
        ipco.extend(full(b"auxC", 0, b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha\0"));
        // item 1: ispe, colr, irot; item 2: ispe, auxC
        let mut ipma = vec![0, 0, 0, 0, 0, 0, 0, 2];
        ipma.extend([0, 1, 3, 0x81, 2, 3]);
        ipma.extend([0, 2, 2, 0x81, 4]);
        let iprp = bx(b"iprp", &[bx(b"ipco", &ipco), bx(b"ipma", &ipma)].concat());
        let mut meta_body = vec![0, 0, 0, 0];
        meta_body.extend(full(b"pitm", 0, &[0, 1]));
        let infe1 = full(b"infe", 2, b"\0\x01\0\0av01");
        let infe2 = full(b"infe", 2, b"\0\x02\0\0av01");
        meta_body.extend(full(b"iinf", 0, &[&[0, 2][..], &infe1, &infe2].concat()));
        if with_alpha {
            meta_body.extend(full(b"iref", 0, &bx(b"auxl", &[0, 2, 0, 1, 0, 1])));
        }
        meta_body.extend(iprp);
        let mut file = bx(b"ftyp", b"avif\0\0\0\0avifmif1");
        file.extend(bx(b"meta", &meta_body));
        file.extend(bx(b"mdat", &[0; 16]));
        file
    }

    #[test]
    fn reads_primary_and_alpha_properties() {
        let p = parse(&sample_file((640, 480), true)).unwrap();
        assert_eq!(&p.primary.item_type, b"av01");
        assert_eq!(p.primary.size, Some((640, 480)));
        assert_eq!(p.primary.rotation, 1);
        assert_eq!(p.primary.nclx, Some(Nclx { primaries: 1, transfer: 13, matrix: 6, full_range: true }));
        let alpha = p.alpha.unwrap();
        assert_eq!(alpha.size, Some((640, 480)));
        assert_eq!(alpha.nclx, None);
        assert!(parse(&sample_file((640, 480), false)).unwrap().alpha.is_none());
    }

    /// `parse` reads only up to the `meta` box (a prefix holding `ftyp` and `meta` is
    /// enough, by design), so a cut before the end of `meta` is an error and a cut inside
    /// `mdat` parses as the whole file does; `check_complete` catches those, and accepts only
    /// cuts that fall exactly between top-level boxes.
    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let file = sample_file((1, 1), true);
        let whole = parse(&file).unwrap();
        let ftyp_end = u32::from_be_bytes(file[..4].try_into().unwrap()) as usize;
        let meta_len = u32::from_be_bytes(file[ftyp_end..ftyp_end + 4].try_into().unwrap());
        let meta_end = ftyp_end + meta_len as usize;
        assert_eq!(&file[ftyp_end + 4..ftyp_end + 8], b"meta");
        assert_eq!(&file[meta_end + 4..meta_end + 8], b"mdat");
        for len in 0..file.len() {
            let got = parse(&file[..len]);
            if len < meta_end {
                assert!(got.is_err(), "cut at {len} (meta ends at {meta_end}): {got:?}");
            } else {
                assert_eq!(got.as_ref(), Ok(&whole), "cut at {len}, inside mdat");
            }
            let complete = check_complete(&file[..len]);
            let between_boxes = [0, ftyp_end, meta_end].contains(&len);
            assert_eq!(complete.is_ok(), between_boxes, "check_complete, cut at {len}");
        }
        assert!(check_complete(&file).is_ok());
        // Single-byte corruptions anywhere: any outcome but a panic; inside mdat, none at all.
        for i in 0..file.len() {
            for v in [0x00, 0xFF, 0x7F, 0x01] {
                let mut f = file.clone();
                f[i] = v;
                let got = parse(&f);
                if i >= meta_end + 8 {
                    assert_eq!(got.as_ref(), Ok(&whole), "byte {i} of mdat's payload");
                }
            }
        }
    }
}
