//! Perspective correction: the quadrilateral in the photo becomes an upright rectangle.

use image::{GrayImage, RgbImage};

use super::geometry::{Homography, Point, Quad};
use super::raster::luma;
use super::CaptureError;

/// Longest side a rectified image may have; larger outputs are scaled down to it.
pub const MAX_RECTIFIED_SIDE: u32 = 4096;

/// Output size for `quad`: the mean lengths of opposite sides, truncated (as in the vendor
/// document's example), at least 1, scaled down to [`MAX_RECTIFIED_SIDE`].
pub fn output_size(quad: &Quad) -> (u32, u32) {
    let (w, h) = quad.rectified_size();
    let k = (MAX_RECTIFIED_SIDE as f64 / w.max(h)).min(1.0);
    (((w * k) as u32).max(1), ((h * k) as u32).max(1))
}

/// Warps the region inside `quad` (TL,TR,BR,BL) of `photo` onto a rectangle, sampling
/// bilinearly. Each output pixel centre is mapped through the homography from the output
/// rectangle to the quad.
pub fn rectify(photo: &RgbImage, quad: &Quad) -> Result<RgbImage, CaptureError> {
    if !quad.is_convex() {
        return Err(CaptureError::DegenerateQuad);
    }
    let (w, h) = output_size(quad);
    let rect = [
        Point::new(0.0, 0.0),
        Point::new(w as f64, 0.0),
        Point::new(w as f64, h as f64),
        Point::new(0.0, h as f64),
    ];
    let hom = Homography::from_points(&rect, &quad.0).ok_or(CaptureError::DegenerateQuad)?;
    let (pw, ph) = (photo.width() as usize, photo.height() as usize);
    let raw = photo.as_raw();
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let p = hom.apply(Point::new(x as f64 + 0.5, y as f64 + 0.5));
        let fx = (p.x - 0.5).clamp(0.0, (pw - 1) as f64);
        let fy = (p.y - 0.5).clamp(0.0, (ph - 1) as f64);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(pw - 1), (y0 + 1).min(ph - 1));
        let (ax, ay) = (fx - x0 as f64, fy - y0 as f64);
        for ch in 0..3 {
            let at = |i: usize, j: usize| raw[(j * pw + i) * 3 + ch] as f64;
            let top = at(x0, y0) * (1.0 - ax) + at(x1, y0) * ax;
            let bottom = at(x0, y1) * (1.0 - ax) + at(x1, y1) * ax;
            px.0[ch] = (top * (1.0 - ay) + bottom * ay).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}

/// Grey levels of a radiograph from a rectified screen photo: luminance stretched so its
/// 0.5th percentile becomes black and its 99.5th white, undoing the panel's raised black
/// level and the camera's exposure before the image reaches a model trained on radiographs.
pub fn restore_levels(rectified: &RgbImage) -> GrayImage {
    let lum: Vec<f32> = rectified.pixels().map(|p| luma(p.0)).collect();
    let mut hist = [0u32; 256];
    for v in &lum {
        hist[v.round().clamp(0.0, 255.0) as usize] += 1;
    }
    let lo = super::raster::percentile_of(&hist, 0.005);
    let hi = super::raster::percentile_of(&hist, 0.995);
    let span = (hi - lo).max(1.0);
    let data = lum
        .iter()
        .map(|v| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    GrayImage::from_raw(rectified.width(), rectified.height(), data).expect("one value per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectify_undoes_a_known_perspective() {
        // A 4×4 checkerboard of 16-px cells, warped by a homography and then rectified back.
        let board = RgbImage::from_fn(64, 64, |x, y| {
            let v = if (x / 16 + y / 16) % 2 == 0 { 230 } else { 20 };
            image::Rgb([v, v, v])
        });
        let quad = Quad([
            Point::new(30.0, 20.0),
            Point::new(150.0, 35.0),
            Point::new(140.0, 160.0),
            Point::new(20.0, 140.0),
        ]);
        let square = [
            Point::new(0.0, 0.0),
            Point::new(64.0, 0.0),
            Point::new(64.0, 64.0),
            Point::new(0.0, 64.0),
        ];
        let to_photo = Homography::from_points(&square, &quad.0).expect("homography");
        let to_board = to_photo.inverse().expect("inverse");
        let photo = RgbImage::from_fn(180, 180, |x, y| {
            let p = to_board.apply(Point::new(x as f64 + 0.5, y as f64 + 0.5));
            if p.x >= 0.0 && p.x < 64.0 && p.y >= 0.0 && p.y < 64.0 {
                *board.get_pixel(p.x as u32, p.y as u32)
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let out = rectify(&photo, &quad).expect("rectified");
        assert_eq!((out.width(), out.height()), output_size(&quad));
        // Every cell centre of the board lands on its own colour.
        for cy in 0..4 {
            for cx in 0..4 {
                let x = ((cx as f64 + 0.5) / 4.0 * out.width() as f64) as u32;
                let y = ((cy as f64 + 0.5) / 4.0 * out.height() as f64) as u32;
                let want = if (cx + cy) % 2 == 0 { 230 } else { 20 };
                let got = out.get_pixel(x, y).0[0] as i32;
                assert!((got - want).abs() < 40, "cell {cx},{cy}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn rectify_refuses_a_crossed_quad() {
        let photo = RgbImage::new(10, 10);
        let crossed = Quad([
            Point::new(0.0, 0.0),
            Point::new(9.0, 9.0),
            Point::new(9.0, 0.0),
            Point::new(0.0, 9.0),
        ]);
        assert!(matches!(
            rectify(&photo, &crossed),
            Err(CaptureError::DegenerateQuad)
        ));
    }

    #[test]
    fn restore_levels_stretches_a_raised_black() {
        let img = RgbImage::from_fn(100, 1, |x, _| {
            let v = (30 + x * 2) as u8;
            image::Rgb([v, v, v])
        });
        let g = restore_levels(&img);
        assert_eq!(g.get_pixel(0, 0).0[0], 0);
        assert_eq!(g.get_pixel(99, 0).0[0], 255);
    }
}
