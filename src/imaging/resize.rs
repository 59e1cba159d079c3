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
    if grey.len() != width as usize * height as usize {
        return Err(ImagingError::Resize(format!(
            "{} values for a {width}x{height} image",
            grey.len()
        )));
    }
    if width == dst_w && height == dst_h {
        return Ok(grey.to_vec());
    }
    // The planes are borrowed as the resizer's pixel type, not copied into it.
    let src = TypedImageRef::<F32>::from_buffer(width, height, bytemuck::cast_slice(grey))
        .map_err(|e| ImagingError::Resize(e.to_string()))?;
    let mut out = vec![0f32; dst_w as usize * dst_h as usize];
    let mut dst = TypedImage::<F32>::from_buffer(dst_w, dst_h, bytemuck::cast_slice_mut(&mut out))
        .map_err(|e| ImagingError::Resize(e.to_string()))?;
    Resizer::new()
        .resize_typed(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| ImagingError::Resize(e.to_string()))?;
    Ok(out)
}
