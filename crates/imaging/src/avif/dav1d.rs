//! Safe wrapper around rav1d's dav1d-compatible C API: the only `unsafe` in this crate.
//!
//! rav1d exposes no Rust-level decoding API, only `extern "C"` functions mirroring libdav1d.
//! Everything here follows dav1d's ownership rules:
//! - a context from `dav1d_open` must be closed once with `dav1d_close`;
//! - a `Dav1dData` owns a reference to its buffer until `dav1d_send_data` consumes it (it
//!   then reads back as empty) or `dav1d_data_unref` drops it;
//! - a `Dav1dPicture` returned by `dav1d_get_picture` holds references to the frame and its
//!   headers until `dav1d_picture_unref`.
//!
//! Each of these is tied to an RAII guard so early returns and unwinding release them.
//!
//! Caveat: a panic inside rav1d cannot be caught. The functions are `extern "C"`, and since
//! Rust 1.81 unwinding out of one aborts the process. The one such panic known to be reachable
//! from corrupt data is avoided by the settings (see `Decoder`), and the tests feed rav1d
//! hundreds of corrupted files; still, a caller that must survive arbitrary AV1 payloads should
//! run `decode` in a process it can afford to lose. `read_header` never calls into rav1d.

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use rav1d::Dav1dResult;
use rav1d::include::dav1d::data::Dav1dData;
use rav1d::include::dav1d::dav1d::{Dav1dContext, Dav1dSettings};
use rav1d::include::dav1d::headers::{DAV1D_PIXEL_LAYOUT_I400, DAV1D_PIXEL_LAYOUT_I420, DAV1D_PIXEL_LAYOUT_I422, DAV1D_PIXEL_LAYOUT_I444};
use rav1d::include::dav1d::picture::Dav1dPicture;
use rav1d::src::lib::{
    dav1d_close, dav1d_data_create, dav1d_data_unref, dav1d_default_settings, dav1d_get_picture, dav1d_open, dav1d_picture_unref,
    dav1d_send_data,
};

/// dav1d returns negated errno values.
const EAGAIN: i32 = -libc::EAGAIN;

/// Upper bound on send/get round trips for one still image; a well-formed payload needs two
/// or three, so hitting this means a stream that never yields a frame.
const MAX_ROUNDS: usize = 64;

/// `get_picture` calls returning EAGAIN after all data was sent before giving up; one arms
/// the drain, one more per frame context is ample.
const MAX_DRAINS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    I400,
    I420,
    I422,
    I444,
}

impl Layout {
    /// (horizontal, vertical) chroma subsampling shifts.
    pub(crate) fn shifts(self) -> (u32, u32) {
        match self {
            Layout::I400 | Layout::I444 => (0, 0),
            Layout::I420 => (1, 1),
            Layout::I422 => (1, 0),
        }
    }
}

/// Samples of one plane. 10- and 12-bit pictures use `u16` storage.
pub(crate) enum Samples<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
}

/// One plane of a decoded picture; `stride` is in samples, not bytes.
pub(crate) struct Plane<'a> {
    pub samples: Samples<'a>,
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

/// Colour description from the AV1 sequence header, used when the container has no `nclx`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqColor {
    pub primaries: u16,
    pub matrix: u16,
    pub full_range: bool,
}

#[derive(Debug)]
pub(crate) struct Av1Error(pub String);

fn check(res: Dav1dResult, what: &str) -> Result<(), Av1Error> {
    if res.0 < 0 {
        let why = match -res.0 {
            libc::ENOMEM => "out of memory",
            libc::EINVAL => "the data is corrupt or unsupported",
            // Only raised for `frame_size_limit`.
            libc::ERANGE => "the coded frame is larger than the image size the file declares",
            _ => "internal error",
        };
        Err(Av1Error(format!("AV1 {what} failed: {why} (code {})", -res.0)))
    } else {
        Ok(())
    }
}

/// An open decoder.
///
/// Two threads and two frame contexts, although a still image needs neither: rav1d 1.1 with a
/// single frame context (`n_fc == 1`) panics in its error path on *any* corrupt frame data
/// (memorysafety/rav1d#1497, fix pending in #1496/#1503), and that panic aborts the process
/// (see the module docs). With `n_fc == 2` errors take the delayed-output path, which returns
/// them; the price is that the picture only comes out on a draining `dav1d_get_picture`.
/// `n_fc = min(max_frame_delay, n_threads)`, so both must be 2.
pub(crate) struct Decoder {
    ctx: Option<Dav1dContext>,
}

impl Decoder {
    pub(crate) fn new(max_frame_pixels: u64) -> Result<Self, Av1Error> {
        let mut settings = MaybeUninit::<Dav1dSettings>::uninit();
        // SAFETY: `dav1d_default_settings` writes a complete `Dav1dSettings` to the pointer,
        // which is valid for writes; it does not read the old contents.
        let mut settings = unsafe {
            dav1d_default_settings(NonNull::new_unchecked(settings.as_mut_ptr()));
            settings.assume_init()
        };
        settings.n_threads = 2;
        settings.max_frame_delay = 2;
        // A layered still image: we want the highest-quality layer only, as libavif does.
        settings.all_layers = 0;
        settings.frame_size_limit = max_frame_pixels.clamp(1, u64::from(u32::MAX)) as u32;
        // The default logger prints to stderr and `unwrap`s the write (a panic, hence an
        // abort, if stderr is closed). A null callback disables logging. The logger type is
        // not nameable outside rav1d, so it is cleared in place.
        // SAFETY: `Dav1dLogger` is a `repr(C)` pair of `Option<NonNull<_>>` and
        // `Option<extern fn>`, for which all-zero bytes are valid `None`s; it has no `Drop`.
        unsafe { ptr::write_bytes(ptr::addr_of_mut!(settings.logger), 0, 1) };

        let mut ctx: Option<Dav1dContext> = None;
        // SAFETY: both pointers come from live locals; `settings` is fully initialised.
        let res = unsafe { dav1d_open(Some(NonNull::from(&mut ctx)), Some(NonNull::from(&mut settings))) };
        check(res, "decoder setup")?;
        if ctx.is_none() {
            return Err(Av1Error("AV1 decoder setup returned no context".into()));
        }
        Ok(Decoder { ctx })
    }

    /// Decodes the first frame of a complete AV1 payload (an AVIF item's OBUs).
    pub(crate) fn decode_still<'d>(&'d mut self, obus: &[u8]) -> Result<Picture<'d>, Av1Error> {
        if obus.is_empty() {
            return Err(Av1Error("empty AV1 payload".into()));
        }
        let mut data = DataGuard(Dav1dData::default());
        // SAFETY: `data.0` is a valid `Dav1dData` to write to. On success the returned pointer
        // is the start of a fresh buffer of exactly `obus.len()` bytes owned by `data.0`.
        let buf = unsafe { dav1d_data_create(Some(NonNull::from(&mut data.0)), obus.len()) };
        if buf.is_null() {
            return Err(Av1Error("could not allocate the AV1 input buffer".into()));
        }
        // SAFETY: `buf` has room for `obus.len()` bytes and cannot overlap the caller's slice.
        unsafe { ptr::copy_nonoverlapping(obus.as_ptr(), buf, obus.len()) };

        let mut pic = PictureGuard(Dav1dPicture::default());
        // With frame threading the first `get_picture` after the data is consumed only arms
        // the drain; the next ones return the frame.
        let mut drains = 0;
        for _ in 0..MAX_ROUNDS {
            if data.0.sz > 0 {
                // SAFETY: `self.ctx` is open (closed only in Drop); `data.0` is valid for reads
                // and writes, and holds a buffer created above.
                let res = unsafe { dav1d_send_data(self.ctx, Some(NonNull::from(&mut data.0))) };
                if res.0 != EAGAIN {
                    check(res, "decoding")?;
                }
            }
            // SAFETY: `self.ctx` is open; `pic.0` holds no references (default or unref'd).
            let res = unsafe { dav1d_get_picture(self.ctx, Some(NonNull::from(&mut pic.0))) };
            if res.0 == EAGAIN {
                if data.0.sz > 0 {
                    continue;
                }
                drains += 1;
                if drains <= MAX_DRAINS {
                    continue;
                }
                return Err(Av1Error("the AV1 data holds no displayable frame".into()));
            }
            check(res, "decoding")?;
            return Picture::new(pic);
        }
        Err(Av1Error("the AV1 decoder made no progress".into()))
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from `dav1d_open` and is closed exactly once; `dav1d_close` resets
        // it to `None`.
        unsafe { dav1d_close(Some(NonNull::from(&mut self.ctx))) };
    }
}

struct DataGuard(Dav1dData);

impl Drop for DataGuard {
    fn drop(&mut self) {
        // SAFETY: the data is either consumed (empty, unref is a no-op) or still owns the
        // buffer from `dav1d_data_create`, which this releases.
        unsafe { dav1d_data_unref(Some(NonNull::from(&mut self.0))) };
    }
}

struct PictureGuard(Dav1dPicture);

impl Drop for PictureGuard {
    fn drop(&mut self) {
        // SAFETY: the picture is default (no references) or was filled by
        // `dav1d_get_picture`; unref releases its references once and clears them.
        unsafe { dav1d_picture_unref(Some(NonNull::from(&mut self.0))) };
    }
}

/// A decoded frame, borrowed from its decoder (the picture's memory comes from the decoder's
/// picture pool, so it must not outlive it).
pub(crate) struct Picture<'d> {
    pic: PictureGuard,
    width: usize,
    height: usize,
    bit_depth: u8,
    layout: Layout,
    color: SeqColor,
    _decoder: std::marker::PhantomData<&'d mut Decoder>,
}

impl<'d> Picture<'d> {
    fn new(pic: PictureGuard) -> Result<Self, Av1Error> {
        let p = &pic.0.p;
        let (width, height) = match (usize::try_from(p.w), usize::try_from(p.h)) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
            _ => {
                return Err(Av1Error(format!("AV1 frame has invalid size {}x{}", p.w, p.h)));
            }
        };
        let bit_depth = match p.bpc {
            8 => 8,
            10 => 10,
            12 => 12,
            other => {
                return Err(Av1Error(format!("AV1 frame has unsupported bit depth {other}")));
            }
        };
        let layout = match p.layout {
            DAV1D_PIXEL_LAYOUT_I400 => Layout::I400,
            DAV1D_PIXEL_LAYOUT_I420 => Layout::I420,
            DAV1D_PIXEL_LAYOUT_I422 => Layout::I422,
            DAV1D_PIXEL_LAYOUT_I444 => Layout::I444,
            _ => return Err(Av1Error("AV1 frame has an unknown chroma layout".into())),
        };
        let Some(seq) = pic.0.seq_hdr else {
            return Err(Av1Error("AV1 frame has no sequence header".into()));
        };
        // SAFETY: `seq_hdr` points into a refcounted header kept alive by the picture.
        let seq = unsafe { seq.as_ref() };
        let color = SeqColor {
            primaries: u16::try_from(seq.pri).unwrap_or(2),
            matrix: u16::try_from(seq.mtrx).unwrap_or(2),
            full_range: seq.color_range != 0,
        };
        let picture = Picture { pic, width, height, bit_depth, layout, color, _decoder: std::marker::PhantomData };
        // Validate every plane once so `plane()` cannot fail later.
        for i in 0..picture.plane_count() {
            picture.plane_checked(i)?;
        }
        Ok(picture)
    }

    pub(crate) fn width(&self) -> usize {
        self.width
    }
    pub(crate) fn height(&self) -> usize {
        self.height
    }
    pub(crate) fn bit_depth(&self) -> u8 {
        self.bit_depth
    }
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }
    pub(crate) fn seq_color(&self) -> SeqColor {
        self.color
    }

    fn plane_count(&self) -> usize {
        if self.layout == Layout::I400 { 1 } else { 3 }
    }

    /// Plane 0 is luma, 1 and 2 are U and V (absent for monochrome).
    pub(crate) fn plane(&self, index: usize) -> Option<Plane<'_>> {
        if index >= self.plane_count() {
            return None;
        }
        self.plane_checked(index).ok()
    }

    fn plane_checked(&self, index: usize) -> Result<Plane<'_>, Av1Error> {
        let bad = |why: &str| Av1Error(format!("AV1 frame plane {index} is unusable: {why}"));
        let (sx, sy) = if index == 0 { (0, 0) } else { self.layout.shifts() };
        let width = (self.width + (1 << sx) - 1) >> sx;
        let height = (self.height + (1 << sy) - 1) >> sy;
        let stride_bytes = self.pic.0.stride[usize::from(index > 0)];
        let stride_bytes = usize::try_from(stride_bytes).map_err(|_| bad("negative stride"))?;
        let sample_size = if self.bit_depth == 8 { 1 } else { 2 };
        if stride_bytes < width * sample_size || stride_bytes % sample_size != 0 {
            return Err(bad("stride shorter than a row"));
        }
        let len_bytes =
            stride_bytes.checked_mul(height - 1).and_then(|n| n.checked_add(width * sample_size)).ok_or_else(|| bad("size overflow"))?;
        let ptr = self.pic.0.data[index].ok_or_else(|| bad("no data"))?.cast::<u8>();
        let stride = stride_bytes / sample_size;
        let samples = if sample_size == 1 {
            // SAFETY: dav1d allocated this plane with `stride` bytes per row for `height`
            // rows (the last row at least `width` samples); the picture keeps it alive and
            // nothing writes to it while we hold `&self`.
            Samples::U8(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len_bytes) })
        } else {
            if ptr.as_ptr().align_offset(2) != 0 {
                return Err(bad("misaligned 16-bit samples"));
            }
            // SAFETY: as above, and 10/12-bit pictures store native-endian `u16` samples at an
            // address just checked to be 2-byte aligned.
            Samples::U16(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u16>(), len_bytes / 2) })
        };
        Ok(Plane { samples, stride, width, height })
    }
}
