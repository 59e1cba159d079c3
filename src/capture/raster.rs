//! A grey-level raster in `f32` and the few operations capture needs on it: luminance,
//! block downscaling, separable Gaussian blur, bilinear sampling, percentiles.

use image::RgbImage;

/// Rec. 601 luma of an RGB pixel, 0..255.
pub fn luma(p: [u8; 3]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Row-major grey image.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Gray {
    pub fn new(width: usize, height: usize) -> Gray {
        Gray {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    pub fn from_rgb(img: &RgbImage) -> Gray {
        Gray {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.pixels().map(|p| luma(p.0)).collect(),
        }
    }

    /// Averages `k × k` blocks of the luminance (the last partial row/column of blocks is
    /// dropped), so working pixel `(i, j)` covers full-resolution `[ik, ik+k) × [jk, jk+k)`
    /// and a working coordinate times `k` is the full-resolution coordinate.
    pub fn from_rgb_downscaled(img: &RgbImage, k: usize) -> Gray {
        let k = k.max(1);
        let (w, h) = (img.width() as usize / k, img.height() as usize / k);
        let mut out = Gray::new(w, h);
        let raw = img.as_raw();
        let stride = img.width() as usize * 3;
        let inv = 1.0 / (k * k) as f32;
        for j in 0..h {
            for i in 0..w {
                let mut s = 0.0;
                for y in j * k..j * k + k {
                    let row = &raw[y * stride..];
                    for x in i * k..i * k + k {
                        let o = x * 3;
                        s += luma([row[o], row[o + 1], row[o + 2]]);
                    }
                }
                out.data[j * w + i] = s * inv;
            }
        }
        out
    }

    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Bilinear value at continuous coordinates (pixel centres at `i + 0.5`), clamped to
    /// the edge.
    pub fn sample(&self, x: f64, y: f64) -> f32 {
        sample_bilinear(self.width, self.height, x, y, |i, j| {
            self.data[j * self.width + i]
        })
    }

    /// Separable Gaussian blur (kernel radius 3σ, edges clamped).
    pub fn blurred(&self, sigma: f32) -> Gray {
        if sigma <= 0.0 || self.width == 0 || self.height == 0 {
            return self.clone();
        }
        let kernel = gaussian_kernel(sigma);
        let r = kernel.len() / 2;
        let (w, h) = (self.width, self.height);
        let mut tmp = Gray::new(w, h);
        for y in 0..h {
            let row = &self.data[y * w..(y + 1) * w];
            for x in 0..w {
                let mut s = 0.0;
                for (t, kv) in kernel.iter().enumerate() {
                    let xx = (x + t).saturating_sub(r).min(w - 1);
                    s += kv * row[xx];
                }
                tmp.data[y * w + x] = s;
            }
        }
        let mut out = Gray::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for (t, kv) in kernel.iter().enumerate() {
                    let yy = (y + t).saturating_sub(r).min(h - 1);
                    s += kv * tmp.data[yy * w + x];
                }
                out.data[y * w + x] = s;
            }
        }
        out
    }

    /// Value below which `q` (0..1) of the pixels lie (256-bin histogram of 0..255).
    pub fn percentile(&self, q: f32) -> f32 {
        let hist = self.histogram();
        percentile_of(&hist, q)
    }

    pub fn histogram(&self) -> [u32; 256] {
        let mut hist = [0u32; 256];
        for v in &self.data {
            hist[v.round().clamp(0.0, 255.0) as usize] += 1;
        }
        hist
    }
}

pub fn percentile_of(hist: &[u32; 256], q: f32) -> f32 {
    let total: u64 = hist.iter().map(|&c| c as u64).sum();
    if total == 0 {
        return 0.0;
    }
    let want = (q.clamp(0.0, 1.0) as f64 * total as f64).ceil().max(1.0) as u64;
    let mut acc = 0u64;
    for (v, &c) in hist.iter().enumerate() {
        acc += c as u64;
        if acc >= want {
            return v as f32;
        }
    }
    255.0
}

/// Normalised Gaussian kernel with radius `ceil(3σ)`.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    for v in &mut k {
        *v /= s;
    }
    k
}

/// Bilinear interpolation over a `w × h` grid read through `at(i, j)`.
pub fn sample_bilinear(
    w: usize,
    h: usize,
    x: f64,
    y: f64,
    at: impl Fn(usize, usize) -> f32,
) -> f32 {
    if w == 0 || h == 0 {
        return 0.0;
    }
    let fx = (x - 0.5).clamp(0.0, (w - 1) as f64);
    let fy = (y - 0.5).clamp(0.0, (h - 1) as f64);
    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (ax, ay) = ((fx - x0 as f64) as f32, (fy - y0 as f64) as f32);
    let top = at(x0, y0) * (1.0 - ax) + at(x1, y0) * ax;
    let bottom = at(x0, y1) * (1.0 - ax) + at(x1, y1) * ax;
    top * (1.0 - ay) + bottom * ay
}

/// Bilinear luminance of an RGB image at continuous coordinates.
pub fn sample_luma(img: &RgbImage, x: f64, y: f64) -> f32 {
    let w = img.width() as usize;
    let raw = img.as_raw();
    sample_bilinear(w, img.height() as usize, x, y, |i, j| {
        let o = (j * w + i) * 3;
        luma([raw[o], raw[o + 1], raw[o + 2]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_uses_pixel_centres() {
        let mut g = Gray::new(2, 1);
        g.data = vec![0.0, 100.0];
        assert_eq!(g.sample(0.5, 0.5), 0.0);
        assert_eq!(g.sample(1.0, 0.5), 50.0);
        assert_eq!(g.sample(1.5, 0.5), 100.0);
        assert_eq!(g.sample(9.0, 0.5), 100.0);
    }

    #[test]
    fn blur_keeps_the_mean_and_spreads_a_spike() {
        let mut g = Gray::new(21, 21);
        g.data[10 * 21 + 10] = 441.0;
        let b = g.blurred(2.0);
        let sum: f32 = b.data.iter().sum();
        assert!((sum - 441.0).abs() < 1.0);
        assert!(b.get(10, 10) < 441.0 && b.get(12, 10) > 0.0);
    }

    #[test]
    fn downscale_averages_blocks() {
        let mut img = RgbImage::new(4, 2);
        img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
        let g = Gray::from_rgb_downscaled(&img, 2);
        assert_eq!((g.width, g.height), (2, 1));
        assert!((g.get(0, 0) - 255.0 / 4.0).abs() < 0.01);
        assert_eq!(g.get(1, 0), 0.0);
    }
}
