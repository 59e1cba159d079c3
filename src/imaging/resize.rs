//! Resampling a grey plane.

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::F32;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use super::ImagingError;

/// Convolution resize with a bilinear filter (as PIL's `Image.resize(..., BILINEAR)`).
pub fn resize(
    grey: &[f32],
    width: u32,
    height: u32,
    dst_w: u32,
    dst_h: u32,
) -> Result<Vec<f32>, ImagingError> {
    if width == dst_w && height == dst_h {
        check_len(grey, width, height)?;
        return Ok(grey.to_vec());
    }
    let mut out = vec![0f32; dst_w as usize * dst_h as usize];
    resize_into(
        &mut Resizer::new(),
        grey,
        width,
        height,
        &mut out,
        dst_w,
        dst_h,
    )?;
    Ok(out)
}

/// [`resize`] into `out` (`dst_w` x `dst_h` values) with a caller's resizer. The separable
/// filter runs horizontally, then vertically; a resize that keeps the height (or the width)
/// is exactly that one pass, so resizing a plane strip by strip horizontally, then the
/// result vertically, gives the same values as resizing it whole.
pub fn resize_into(
    resizer: &mut Resizer,
    grey: &[f32],
    width: u32,
    height: u32,
    out: &mut [f32],
    dst_w: u32,
    dst_h: u32,
) -> Result<(), ImagingError> {
    check_len(grey, width, height)?;
    check_len(out, dst_w, dst_h)?;
    if width == dst_w && height == dst_h {
        out.copy_from_slice(grey);
        return Ok(());
    }
    // The planes are borrowed as the resizer's pixel type, not copied into it.
    let src = TypedImageRef::<F32>::from_buffer(width, height, bytemuck::cast_slice(grey))
        .map_err(|e| ImagingError::Resize(e.to_string()))?;
    let mut dst = TypedImage::<F32>::from_buffer(dst_w, dst_h, bytemuck::cast_slice_mut(out))
        .map_err(|e| ImagingError::Resize(e.to_string()))?;
    resizer
        .resize_typed(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| ImagingError::Resize(e.to_string()))
}

fn check_len(v: &[f32], width: u32, height: u32) -> Result<(), ImagingError> {
    if v.len() != width as usize * height as usize {
        return Err(ImagingError::Resize(format!(
            "{} values for a {width}x{height} image",
            v.len()
        )));
    }
    Ok(())
}
