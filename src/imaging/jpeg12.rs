//! Lossy (DCT) JPEG codestreams of 8 or 12 bits precision decoded with libjpeg-turbo 3
//! (`turbojpeg-sys`, built from its vendored source). jpeg-decoder, which dicom-pixeldata uses,
//! has no 12-bit DCT; [`super::decode`] calls this only when it rejects a frame.
//!
//! libjpeg-turbo uses the IJG accurate integer IDCT. pydicom's pylibjpeg-libjpeg (Thomas
//! Richter's libjpeg) rounds its IDCT differently, so the two may differ by one level on some
//! samples; both are within the tolerance ISO/IEC 10918-2 allows.

use std::ffi::{c_int, CStr};
use turbojpeg_sys as tj;

use super::ImagingError;

/// Samples of one decoded codestream, row-major, components interleaved (RGB for colour).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Sample precision of the codestream (8 or 12).
    pub precision: u8,
    /// `rows x cols x samples` values.
    pub samples: Vec<u16>,
}

/// A TurboJPEG decompressor, destroyed on drop.
struct Handle(tj::tjhandle);

impl Handle {
    fn decompressor() -> Result<Self, ImagingError> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked below.
        let h = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if h.is_null() {
            return Err(ImagingError::PixelData(
                "libjpeg-turbo could not create a decompressor".into(),
            ));
        }
        Ok(Handle(h))
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is valid for the life of `self`.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }

    fn set(&self, param: tj::TJPARAM, value: c_int) -> Result<(), ImagingError> {
        // SAFETY: the handle is valid for the life of `self`.
        match unsafe { tj::tj3Set(self.0, param as c_int, value) } {
            0 => Ok(()),
            _ => Err(self.error("setting a decoder parameter")),
        }
    }

    fn error(&self, what: &str) -> ImagingError {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle (or a
        // static one), valid until the next call on it; it is copied at once.
        let msg = unsafe {
            let p = tj::tj3GetErrorStr(self.0);
            if p.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        ImagingError::PixelData(format!("JPEG {what} failed: {msg}"))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Output sizes from this many bytes up must come from at least 1/[`MAX_RATIO`] as many
/// compressed bytes (dicom-pixeldata's own decoders use the same rule).
const LARGE_OUTPUT: usize = 16 << 20;
/// Highest compression ratio believed above [`LARGE_OUTPUT`].
const MAX_RATIO: usize = 64;

/// Refuses to allocate `output` bytes for `input` compressed bytes when the ratio is
/// implausible: the dimensions come from the data set (and the JPEG header), not from the
/// data, so a few bytes could otherwise ask for gigabytes.
pub fn plausible_size(output: usize, input: usize) -> Result<(), ImagingError> {
    if output >= LARGE_OUTPUT && input < output / MAX_RATIO {
        return Err(ImagingError::PixelData(format!(
            "{output} bytes of samples from {input} bytes of JPEG is implausible"
        )));
    }
    Ok(())
}

/// Decodes one lossy JPEG codestream that must be `rows x cols` with `samples` components
/// (1, or 3: converted to RGB as the JPEG's own colour space says). Warnings (a truncated or
/// corrupt stream) are errors: a half-grey image must not reach a model.
pub fn decode(
    codestream: &[u8],
    rows: u32,
    cols: u32,
    samples: u16,
) -> Result<Decoded, ImagingError> {
    let h = Handle::decompressor()?;
    h.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 1)?;
    // SAFETY: the pointer and length describe `codestream`, which outlives the call.
    let r = unsafe {
        tj::tj3DecompressHeader(h.0, codestream.as_ptr(), codestream.len() as tj::size_t)
    };
    if r != 0 {
        return Err(h.error("header"));
    }
    if h.get(tj::TJPARAM_TJPARAM_LOSSLESS) == 1 {
        return Err(ImagingError::Unsupported(
            "a lossless JPEG codestream in a lossy JPEG transfer syntax".into(),
        ));
    }
    let (width, height) = (
        h.get(tj::TJPARAM_TJPARAM_JPEGWIDTH),
        h.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT),
    );
    if i64::from(width) != i64::from(cols) || i64::from(height) != i64::from(rows) {
        return Err(ImagingError::PixelData(format!(
            "the JPEG frame is {width}x{height}, the data set says {cols}x{rows}"
        )));
    }
    let colour_space = h.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    let components = match colour_space {
        c if c == tj::TJCS_TJCS_GRAY as c_int => 1,
        c if c == tj::TJCS_TJCS_RGB as c_int || c == tj::TJCS_TJCS_YCbCr as c_int => 3,
        _ => 4,
    };
    if components != samples {
        return Err(ImagingError::PixelData(format!(
            "the JPEG frame has {components} components, the data set says {samples} samples per pixel"
        )));
    }
    let format = if samples == 1 {
        tj::TJPF_TJPF_GRAY
    } else {
        tj::TJPF_TJPF_RGB
    } as c_int;
    let len = rows as usize * cols as usize * samples as usize;
    plausible_size(len * 2, codestream.len())?;
    let precision = h.get(tj::TJPARAM_TJPARAM_PRECISION);
    let out = match precision {
        8 => {
            let mut buf = vec![0u8; len];
            // SAFETY: `buf` holds width * height * components samples of the pixel format
            // asked for, and pitch 0 means rows of exactly that width.
            let r = unsafe {
                tj::tj3Decompress8(
                    h.0,
                    codestream.as_ptr(),
                    codestream.len() as tj::size_t,
                    buf.as_mut_ptr(),
                    0,
                    format,
                )
            };
            if r != 0 {
                return Err(h.error("decoding"));
            }
            buf.into_iter().map(u16::from).collect()
        }
        12 => {
            let mut buf = vec![0i16; len];
            // SAFETY: as above, with 16-bit samples.
            let r = unsafe {
                tj::tj3Decompress12(
                    h.0,
                    codestream.as_ptr(),
                    codestream.len() as tj::size_t,
                    buf.as_mut_ptr(),
                    0,
                    format,
                )
            };
            if r != 0 {
                return Err(h.error("decoding"));
            }
            // 12-bit samples are 0..=4095: the cast keeps them.
            buf.into_iter().map(|v| v as u16).collect()
        }
        other => {
            return Err(ImagingError::Unsupported(format!(
                "{other}-bit lossy JPEG (8 or 12 bits only)"
            )))
        }
    };
    Ok(Decoded {
        precision: precision as u8,
        samples: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compresses `samples` (grey or RGB) with libjpeg-turbo at `precision` and quality 100.
    fn encode(samples: &[u16], w: u32, h: u32, rgb: bool, precision: u8) -> Vec<u8> {
        // SAFETY: test helper; every buffer is sized for what the call writes or reads.
        unsafe {
            let c = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as c_int);
            assert!(!c.is_null());
            tj::tj3Set(c, tj::TJPARAM_TJPARAM_QUALITY as c_int, 100);
            let subsamp = if rgb {
                tj::TJSAMP_TJSAMP_444
            } else {
                tj::TJSAMP_TJSAMP_GRAY
            };
            tj::tj3Set(c, tj::TJPARAM_TJPARAM_SUBSAMP as c_int, subsamp as c_int);
            tj::tj3Set(
                c,
                tj::TJPARAM_TJPARAM_PRECISION as c_int,
                precision as c_int,
            );
            let pf = if rgb {
                tj::TJPF_TJPF_RGB
            } else {
                tj::TJPF_TJPF_GRAY
            } as c_int;
            let mut out: *mut u8 = std::ptr::null_mut();
            let mut size: tj::size_t = 0;
            let r = if precision == 12 {
                let v: Vec<i16> = samples.iter().map(|&s| s as i16).collect();
                tj::tj3Compress12(
                    c,
                    v.as_ptr(),
                    w as c_int,
                    0,
                    h as c_int,
                    pf,
                    &mut out,
                    &mut size,
                )
            } else {
                let v: Vec<u8> = samples.iter().map(|&s| s as u8).collect();
                tj::tj3Compress8(
                    c,
                    v.as_ptr(),
                    w as c_int,
                    0,
                    h as c_int,
                    pf,
                    &mut out,
                    &mut size,
                )
            };
            assert_eq!(r, 0);
            let bytes = std::slice::from_raw_parts(out, size as usize).to_vec();
            tj::tj3Free(out.cast());
            tj::tj3Destroy(c);
            bytes
        }
    }

    fn ramp(w: u32, h: u32, channels: u32, top: u32) -> Vec<u16> {
        (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    (0..channels).map(move |c| ((x * 7 + y * 3 + c * 50) % (top + 1)) as u16)
                })
            })
            .collect()
    }

    fn max_diff(a: &[u16], b: &[u16]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as i32 - *y as i32).abs())
            .max()
            .unwrap()
    }

    #[test]
    fn twelve_bit_grey_and_colour_round_trip() {
        let grey = ramp(40, 24, 1, 4095);
        let got = decode(&encode(&grey, 40, 24, false, 12), 24, 40, 1).unwrap();
        assert_eq!(got.precision, 12);
        assert!(got.samples.iter().any(|&v| v > 255), "12-bit range kept");
        assert!(
            max_diff(&got.samples, &grey) <= 8,
            "{}",
            max_diff(&got.samples, &grey)
        );

        let rgb = ramp(16, 8, 3, 4095);
        let got = decode(&encode(&rgb, 16, 8, true, 12), 8, 16, 3).unwrap();
        assert!(
            max_diff(&got.samples, &rgb) <= 24,
            "{}",
            max_diff(&got.samples, &rgb)
        );
    }

    #[test]
    fn eight_bit_round_trips() {
        let grey = ramp(16, 16, 1, 255);
        let got = decode(&encode(&grey, 16, 16, false, 8), 16, 16, 1).unwrap();
        assert_eq!(got.precision, 8);
        assert!(max_diff(&got.samples, &grey) <= 2);
    }

    #[test]
    fn mismatches_and_corruption_are_errors() {
        let grey = ramp(16, 16, 1, 4095);
        let jpeg = encode(&grey, 16, 16, false, 12);
        let e = decode(&jpeg, 16, 32, 1).unwrap_err().to_string();
        assert!(e.contains("16x16") && e.contains("32x16"), "{e}");
        let e = decode(&jpeg, 16, 16, 3).unwrap_err().to_string();
        assert!(e.contains("1 components"), "{e}");
        // Truncated: libjpeg would pad with grey and warn; we refuse.
        assert!(decode(&jpeg[..jpeg.len() / 2], 16, 16, 1).is_err());
        assert!(decode(b"not a jpeg", 16, 16, 1).is_err());
        assert!(decode(&[], 16, 16, 1).is_err());
    }
}
