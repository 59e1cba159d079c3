//! The fast path from stored values to a model-sized grey image for 8- and 16-bit monochrome
//! frames, the common case of every radiograph. A stored value can take at most 65,536
//! values, so each is mapped once through [`VoiMap`](super::window::VoiMap) into a table, the
//! percentile window is read from a histogram, and strips of rows go through the table and
//! the horizontal filter in parallel straight from the decoder's bytes: no `f64` copy of the
//! frame, no sort of its pixels, no full-size grey plane. The values are the same as
//! [`grey_frame`] then [`resize`], bit for bit (the tests below hold the two together).

use dicom_pixeldata::{DecodedPixelData, PixelRepresentation};
use fast_image_resize::Resizer;
use rayon::prelude::*;

use super::decode::{raw_frame, sign_extend};
use super::resize::{resize, resize_into};
use super::window::{grey_frame, percentile_of_ranked, voi_map, WindowInfo, Windowing};
use super::ImagingError;

/// Pixels per parallel histogram chunk: large enough that a chunk's histogram (256 KiB for
/// 16 bits) costs little beside it.
const CHUNK: usize = 1 << 20;

/// Rows per strip of [`grey_resized`]: a strip of a 3000-pixel-wide radiograph (190 KiB of
/// grey) stays in a core's cache between the table and the horizontal filter.
const STRIP_ROWS: usize = 16;

type Grey = (Vec<f32>, Option<WindowInfo>, bool);

/// One frame of `px` as grey in [0, 1], as [`grey_frame`] gives it, resized to `dst_w` x
/// `dst_h` ([`resize`]), with the window used (monochrome) and whether the frame is
/// meaningfully colour. 8- and 16-bit monochrome frames take the table path, with the same
/// values as the general one and without the full-size grey plane: strips of rows go through
/// the table and the horizontal filter in parallel, each in a small buffer of its own, and
/// only the horizontally resized plane (a fraction of the size) is filtered vertically.
pub fn grey_resized(
    px: &DecodedPixelData<'_>,
    frame: u32,
    padding: Option<(f64, f64)>,
    windowing: &Windowing,
    dst_w: u32,
    dst_h: u32,
) -> Result<Grey, ImagingError> {
    let Some((table, info)) = Table::new(px, frame, padding, windowing)? else {
        let raw = raw_frame(px, frame)?;
        let (grey, info, colour) = grey_frame(px, frame, &raw, padding, windowing);
        return Ok((
            resize(&grey, px.columns(), px.rows(), dst_w, dst_h)?,
            info,
            colour,
        ));
    };
    let (w, h, dw) = (table.width, table.height, dst_w as usize);
    let mut wide = vec![0f32; dw * h];
    wide.par_chunks_mut(STRIP_ROWS * dw)
        .enumerate()
        .try_for_each_init(
            || (vec![0f32; STRIP_ROWS * w], Resizer::new()),
            |(strip, resizer), (i, out)| {
                let rows = out.len() / dw;
                let strip = &mut strip[..rows * w];
                table.map(i * STRIP_ROWS * w, strip);
                resize_into(
                    resizer,
                    strip,
                    w as u32,
                    rows as u32,
                    out,
                    dst_w,
                    rows as u32,
                )
            },
        )?;
    if h == dst_h as usize {
        return Ok((wide, Some(info), false));
    }
    let mut out = vec![0f32; dw * dst_h as usize];
    resize_into(
        &mut Resizer::new(),
        &wide,
        dst_w,
        h as u32,
        &mut out,
        dst_w,
        dst_h,
    )?;
    Ok((out, Some(info), false))
}

/// The grey of every bit pattern of an 8- or 16-bit monochrome frame, and the frame's bytes.
struct Table<'a> {
    grey: Vec<f32>,
    bytes: &'a [u8],
    sixteen: bool,
    width: usize,
    height: usize,
}

impl<'a> Table<'a> {
    /// `None` for frames the table path does not take (colour, 1 or 32 bits).
    fn new(
        px: &'a DecodedPixelData<'_>,
        frame: u32,
        padding: Option<(f64, f64)>,
        windowing: &Windowing,
    ) -> Result<Option<(Self, WindowInfo)>, ImagingError> {
        let monochrome = px
            .photometric_interpretation()
            .to_string()
            .starts_with("MONOCHROME");
        let bits = px.bits_allocated();
        if !monochrome || px.samples_per_pixel() != 1 || !matches!(bits, 8 | 16) {
            return Ok(None);
        }
        let (width, height) = (px.columns() as usize, px.rows() as usize);
        let n = width * height;
        let data = px
            .frame_data(frame)
            .map_err(|e| ImagingError::PixelData(e.to_string()))?;
        let bytes = data.get(..n * bits as usize / 8).ok_or_else(|| {
            ImagingError::PixelData(format!(
                "frame {frame} is shorter than {n} samples of {bits} bits"
            ))
        })?;
        let stored = StoredValues::new(px);
        let (map, info) = voi_map(px, frame, windowing, |modality| {
            percentile_window(bytes, bits, &stored, padding, windowing, modality)
        });
        let grey = (0..stored.count())
            .map(|i| map.grey(stored.value(i)))
            .collect();
        let table = Table {
            grey,
            bytes,
            sixteen: bits == 16,
            width,
            height,
        };
        Ok(Some((table, info)))
    }

    /// Grey of the `out.len()` pixels from pixel `first` on (row-major).
    fn map(&self, first: usize, out: &mut [f32]) {
        let t = &self.grey;
        if self.sixteen {
            let src = &self.bytes[first * 2..(first + out.len()) * 2];
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = t[u16::from_ne_bytes([c[0], c[1]]) as usize];
            }
        } else {
            let src = &self.bytes[first..first + out.len()];
            for (o, &b) in out.iter_mut().zip(src) {
                *o = t[b as usize];
            }
        }
    }
}

/// The stored value each bit pattern of a sample stands for, as
/// [`super::decode::raw_frame`] reads it (sign-extended from Bits Stored when signed).
struct StoredValues {
    bits: u32,
    bits_stored: u32,
    signed: bool,
}

impl StoredValues {
    fn new(px: &DecodedPixelData<'_>) -> Self {
        StoredValues {
            bits: px.bits_allocated() as u32,
            bits_stored: px.bits_stored() as u32,
            signed: px.pixel_representation() == PixelRepresentation::Signed,
        }
    }

    /// Number of bit patterns.
    fn count(&self) -> usize {
        1 << self.bits
    }

    /// The stored value of bit pattern `i`.
    fn value(&self, i: usize) -> f64 {
        let v = match (self.signed, self.bits) {
            (true, 8) => i as u8 as i8 as i64,
            (true, _) => i as u16 as i16 as i64,
            (false, _) => return i as f64,
        };
        sign_extend(v, self.bits, self.bits_stored, self.signed)
    }
}

/// The percentile window over the frame's non-padding values (all values when every one is
/// padding), from a histogram of its bit patterns.
fn percentile_window(
    bytes: &[u8],
    bits: u16,
    stored: &StoredValues,
    padding: Option<(f64, f64)>,
    windowing: &Windowing,
    modality: &dyn Fn(f64) -> f64,
) -> (f64, f64) {
    let bins = stored.count();
    let histogram = |src: &[u8]| {
        let mut h = vec![0u64; bins];
        match bits {
            8 => src.iter().for_each(|&b| h[b as usize] += 1),
            _ => src
                .chunks_exact(2)
                .for_each(|c| h[u16::from_ne_bytes([c[0], c[1]]) as usize] += 1),
        }
        h
    };
    let step = CHUNK * bits as usize / 8;
    let counts = bytes
        .par_chunks(step)
        .map(histogram)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            a
        })
        .unwrap_or_else(|| vec![0; bins]);
    let ranked = |skip_padding: bool| {
        let mut v: Vec<(f64, u64)> = counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c > 0)
            .map(|(i, &c)| (stored.value(i), c))
            .filter(|&(s, _)| !skip_padding || padding.is_none_or(|(a, b)| s < a || s > b))
            .map(|(s, c)| (modality(s), c))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let mut values = ranked(true);
    if values.is_empty() {
        values = ranked(false);
    }
    (
        percentile_of_ranked(&values, windowing.percentile_low),
        percentile_of_ranked(&values, windowing.percentile_high),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use dicom_pixeldata::PixelDecoder;

    /// A one-frame monochrome image of `bits` bits with the given extra attributes.
    fn image(
        bits: u16,
        bits_stored: u16,
        signed: bool,
        photometric: &str,
        values: &[i32],
        extra: Vec<DataElement<InMemDicomObject>>,
    ) -> dicom_object::DefaultDicomObject {
        let (rows, cols) = (values.len() as u16 / 8, 8u16);
        let mut o = InMemDicomObject::new_empty();
        let us = |t, v: u16| DataElement::new(t, VR::US, PrimitiveValue::from(v));
        o.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ));
        o.put(us(tags::ROWS, rows));
        o.put(us(tags::COLUMNS, cols));
        o.put(us(tags::SAMPLES_PER_PIXEL, 1));
        o.put(us(tags::BITS_ALLOCATED, bits));
        o.put(us(tags::BITS_STORED, bits_stored));
        o.put(us(tags::HIGH_BIT, bits_stored - 1));
        o.put(us(tags::PIXEL_REPRESENTATION, signed as u16));
        let pixels = if bits == 8 {
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PrimitiveValue::from(values.iter().map(|&v| v as u8).collect::<Vec<u8>>()),
            )
        } else {
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(values.iter().map(|&v| v as u16).collect()),
            )
        };
        o.put(pixels);
        for e in extra {
            o.put(e);
        }
        o.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
                .media_storage_sop_instance_uid("1.2.3.4"),
        )
        .unwrap()
    }

    fn ds(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, VR::DS, PrimitiveValue::from(v))
    }

    /// The table path and the general path give the same grey and window.
    fn same(obj: &dicom_object::DefaultDicomObject, windowing: &Windowing, padding: bool) {
        let px = obj.decode_pixel_data().unwrap();
        let padding = padding
            .then(|| super::super::window::padding_range(obj, px.pixel_representation()))
            .flatten();
        let raw = raw_frame(&px, 0).unwrap();
        let general = grey_frame(&px, 0, &raw, padding, windowing);
        let fast = grey_resized(&px, 0, padding, windowing, px.columns(), px.rows()).unwrap();
        assert_eq!(fast.1, general.1);
        assert_eq!(fast.0.len(), general.0.len());
        for (i, (a, b)) in fast.0.iter().zip(&general.0).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "pixel {i}: {a} vs {b}");
        }
        // Strip by strip, then vertically: the same as resizing the whole grey plane.
        let (w, h) = (px.columns(), px.rows());
        for (dw, dh) in [(5, 7), (8, h), (3, 40), (w, h)] {
            let whole = resize(&general.0, w, h, dw, dh).unwrap();
            let strips = grey_resized(&px, 0, padding, windowing, dw, dh).unwrap();
            assert_eq!(strips.1, general.1);
            assert_eq!(strips.0.len(), whole.len());
            for (i, (a, b)) in strips.0.iter().zip(&whole).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dw}x{dh} pixel {i}: {a} vs {b}");
            }
        }
    }

    fn ramp(n: i32, lo: i32, step: i32) -> Vec<i32> {
        (0..n).map(|i| lo + (i * step) % 997).collect()
    }

    const PERCENTILE: Windowing = Windowing {
        use_file: false,
        percentile_low: 0.5,
        percentile_high: 99.5,
    };
    const FILE: Windowing = Windowing {
        use_file: true,
        percentile_low: 1.0,
        percentile_high: 99.0,
    };

    #[test]
    fn sixteen_bit_unsigned_percentile_and_window() {
        let v = ramp(800, 100, 37);
        let plain = image(16, 12, false, "MONOCHROME2", &v, vec![]);
        same(&plain, &PERCENTILE, false);
        let windowed = image(
            16,
            12,
            false,
            "MONOCHROME1",
            &v,
            vec![
                ds(tags::WINDOW_CENTER, "600"),
                ds(tags::WINDOW_WIDTH, "400"),
                ds(tags::RESCALE_SLOPE, "0.5"),
                ds(tags::RESCALE_INTERCEPT, "200"),
            ],
        );
        same(&windowed, &FILE, false);
        same(&windowed, &PERCENTILE, false);
    }

    #[test]
    fn signed_with_negative_slope_and_padding() {
        let mut v = ramp(640, -1024, 53);
        v[..40].fill(-2000);
        let obj = image(
            16,
            16,
            true,
            "MONOCHROME2",
            &v,
            vec![
                ds(tags::RESCALE_SLOPE, "-2"),
                ds(tags::RESCALE_INTERCEPT, "-1024"),
                DataElement::new(
                    tags::PIXEL_PADDING_VALUE,
                    VR::SS,
                    PrimitiveValue::from(-2000i16),
                ),
            ],
        );
        same(&obj, &PERCENTILE, true);
        same(&obj, &PERCENTILE, false);
        // Signed 12 bits in 16: the high bits are sign-extended from bit 11.
        let v12: Vec<i32> = ramp(320, 0, 71).iter().map(|x| x * 4 - 2000).collect();
        let obj = image(16, 12, true, "MONOCHROME2", &v12, vec![]);
        same(&obj, &PERCENTILE, false);
    }

    #[test]
    fn eight_bit_and_all_padding() {
        let v = ramp(400, 3, 11);
        let obj = image(8, 8, false, "MONOCHROME2", &v, vec![]);
        same(&obj, &PERCENTILE, false);
        let flat = vec![7; 64];
        let obj = image(
            8,
            8,
            false,
            "MONOCHROME2",
            &flat,
            vec![DataElement::new(
                tags::PIXEL_PADDING_VALUE,
                VR::US,
                PrimitiveValue::from(7u16),
            )],
        );
        same(&obj, &PERCENTILE, true);
    }
}
