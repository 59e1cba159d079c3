//! Picture-of-picture capture: a phone photo of a radiograph shown on a screen, turned back
//! into the radiograph. Pure image processing, no HTTP (the `/v3` endpoints live in
//! `compat::radanalyzer::capture`).
//!
//! - [`corners`]: find the screen's four corners (multi-level bright regions, convex hull,
//!   minimum-area quadrilateral, edge-support score, sub-pixel edge refinement); "no screen"
//!   for a plain radiograph.
//! - [`rectify`](mod@rectify): homography from the corners, bilinear warp to an upright
//!   rectangle; level restoration for the model.
//! - [`quality`]: geometry, edge blur, glare and exposure against limits, with a hint.
//! - `synth`: deterministic synthetic screen photos with their true corners: test data, built
//!   only for the tests (`cfg(test)` or the `test-support` feature).
//! - [`geometry`], [`raster`]: the plane geometry and grey-image helpers underneath.

pub mod corners;
pub mod geometry;
pub mod quality;
pub mod raster;
pub mod rectify;
#[cfg(any(test, feature = "test-support"))]
pub mod synth;

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, RgbImage};

pub use corners::{detect, Detection};
pub use geometry::{Point, Quad};
pub use quality::{assess, Issue, Quality};
pub use rectify::{rectify, restore_levels};

/// Largest photo side accepted (a 48 MP phone photo is 8000 px wide).
pub const MAX_PHOTO_SIDE: u32 = 12_000;
/// Most pixels accepted (50 MP: 150 MB as RGB), whatever the file size.
pub const MAX_PHOTO_PIXELS: u64 = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Not a JPEG or PNG this decoder can read.
    #[error("not a readable JPEG or PNG image: {0}")]
    NotAnImage(String),
    #[error(
        "image of {width}×{height} pixels exceeds the limits ({MAX_PHOTO_SIDE} px a side, \
         {MAX_PHOTO_PIXELS} pixels)"
    )]
    TooLarge { width: u32, height: u32 },
    /// Corners that are not a convex quadrilateral in TL,TR,BR,BL order.
    #[error("the corners do not form a convex quadrilateral in TL,TR,BR,BL order")]
    DegenerateQuad,
}

/// Decodes a JPEG or PNG, applying its EXIF orientation (phones store portrait photos as
/// landscape pixels plus a rotation tag), as 8-bit RGB.
pub fn decode_photo(bytes: &[u8]) -> Result<RgbImage, CaptureError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| CaptureError::NotAnImage(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png) => {}
        _ => return Err(CaptureError::NotAnImage("not JPEG or PNG".into())),
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| CaptureError::NotAnImage(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if width > MAX_PHOTO_SIDE
        || height > MAX_PHOTO_SIDE
        || u64::from(width) * u64::from(height) > MAX_PHOTO_PIXELS
    {
        return Err(CaptureError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(CaptureError::NotAnImage("empty image".into()));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| CaptureError::NotAnImage(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

/// One frame looked at: where the screen is (if anywhere) and how good the frame is.
#[derive(Debug, Clone)]
pub struct FrameAnalysis {
    pub detection: Option<Detection>,
    pub quality: Quality,
}

impl FrameAnalysis {
    /// A screen was found: the photo is a picture of a picture.
    pub fn pop_detected(&self) -> bool {
        self.detection.is_some()
    }
}

pub fn analyse(photo: &RgbImage) -> FrameAnalysis {
    let detection = detect(photo);
    let quality = assess(photo, detection.as_ref());
    FrameAnalysis { detection, quality }
}

/// The image a model should see for `photo`: the rectified, level-restored screen when the
/// photo shows one, otherwise the photo itself (a plain radiograph is never warped).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub pop_detected: bool,
    pub corners: Option<Quad>,
    pub image: GrayImage,
}

pub fn prepare(photo: &RgbImage) -> Result<Prepared, CaptureError> {
    match detect(photo) {
        Some(det) => {
            let rectified = rectify(photo, &det.quad)?;
            Ok(Prepared {
                pop_detected: true,
                corners: Some(det.quad),
                image: restore_levels(&rectified),
            })
        }
        None => Ok(Prepared {
            pop_detected: false,
            corners: None,
            image: DynamicImage::ImageRgb8(photo.clone()).to_luma8(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::synth::{screen_photo, PhotoOptions};
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> RgbImage {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        image::open(&path).expect("fixture image").to_rgb8()
    }

    fn phantom(name: &str) -> GrayImage {
        DynamicImage::ImageRgb8(fixture(&format!("images/{name}"))).to_luma8()
    }

    #[test]
    fn a_plain_radiograph_or_photo_is_not_a_screen_photo() {
        for name in [
            "images/cxr_normal.png",
            "images/cxr_cardiomegaly.png",
            "images/limb_xray.png",
            "images/ct_slice.png",
            "images/ultrasound.png",
            "images/photo.jpg",
            "landmarks/cxr_normal.png",
            "landmarks/cxr_cardiomegaly.png",
        ] {
            let img = fixture(name);
            let a = analyse(&img);
            assert!(!a.pop_detected(), "{name}: {:?}", a.detection);
            assert_eq!(a.quality.issues, vec![Issue::NoScreen]);
            let p = prepare(&img).expect("prepared");
            assert!(!p.pop_detected);
            assert_eq!((p.image.width(), p.image.height()), img.dimensions());
        }
    }

    #[test]
    fn finds_the_corners_of_an_easy_screen_photo() {
        let photo = screen_photo(
            &phantom("cxr_normal.png"),
            1,
            PhotoOptions {
                difficulty: 0.1,
                ..PhotoOptions::default()
            },
        );
        let det = detect(&photo.image).expect("screen found");
        let err = det.quad.max_corner_distance(&photo.corners);
        assert!(
            err < 3.0,
            "corner error {err:.2} px: {det:?} vs {:?}",
            photo.corners
        );
        let q = assess(&photo.image, Some(&det));
        assert!(q.passed, "{q:?}");
    }

    #[test]
    fn quality_rejects_a_blurred_frame() {
        let radiograph = phantom("cxr_cardiomegaly.png");
        let opts = PhotoOptions {
            difficulty: 0.0,
            long_side: Some(800),
            extra_blur: 0.0,
            glare: false,
        };
        let sharp = screen_photo(&radiograph, 5, opts);
        let blurred = screen_photo(
            &radiograph,
            5,
            PhotoOptions {
                extra_blur: 6.0,
                ..opts
            },
        );
        let a = analyse(&sharp.image);
        assert!(a.quality.passed, "sharp frame: {:?}", a.quality);
        let b = analyse(&blurred.image);
        assert!(b.pop_detected(), "the blurred screen is still found");
        assert!(!b.quality.passed);
        assert!(b.quality.issues.contains(&Issue::Blurry), "{:?}", b.quality);
        assert_eq!(b.quality.feedback(), "hold still");
    }

    /// The figures quoted in the guide (integrate/vendor-apis.md): 100 synthetic photos, ten at each difficulty step.
    #[test]
    fn corner_accuracy_over_100_synthetic_photos() {
        let radiographs = [
            phantom("cxr_normal.png"),
            phantom("cxr_cardiomegaly.png"),
            phantom("limb_xray.png"),
        ];
        // Split over the cores: this is the slowest unit test in a debug build.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let trials: Vec<synth::Trial> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads as u64)
                .map(|k| {
                    let radiographs = &radiographs;
                    scope.spawn(move || {
                        (k..100)
                            .step_by(threads)
                            .map(|s| (s, synth::trial(radiographs, s)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(u64, synth::Trial)> = workers
                .into_iter()
                .flat_map(|w| w.join().expect("trial thread"))
                .collect();
            all.sort_by_key(|(s, _)| *s);
            all.into_iter().map(|(_, t)| t).collect()
        });
        let all = synth::summarise(&trials);
        let easy = synth::summarise(trials.iter().filter(|t| t.difficulty < 0.7));
        let hard = synth::summarise(trials.iter().filter(|t| t.difficulty >= 0.7));
        for (name, s) in [
            ("all", &all),
            ("difficulty < 0.7", &easy),
            ("difficulty >= 0.7", &hard),
        ] {
            println!(
                "{name}: {}/{} within {} px ({:.0} %), corner error mean {:.2} px, max {:.2} px",
                s.successes,
                s.photos,
                synth::SUCCESS_PX,
                100.0 * s.success_rate,
                s.mean_error,
                s.max_error
            );
        }
        for t in trials.iter().filter(|t| !t.success()) {
            println!("missed: {t:?}");
        }
        assert!(easy.success_rate >= 0.97, "{easy:?}");
        assert!(all.success_rate >= 0.8, "{all:?}");
        assert!(all.mean_error <= 0.5, "{all:?}");
    }

    /// A phone-sized photo (4000 × 3000, an 800-px synthetic photo enlarged 5×): the working
    /// image is 8× smaller, the refinement runs at full resolution.
    #[test]
    fn finds_the_corners_of_a_4000_px_photo() {
        let photo = screen_photo(
            &phantom("cxr_normal.png"),
            3,
            PhotoOptions {
                difficulty: 0.3,
                long_side: Some(800),
                extra_blur: 0.0,
                glare: false,
            },
        );
        let big = image::imageops::resize(
            &photo.image,
            photo.image.width() * 5,
            photo.image.height() * 5,
            image::imageops::FilterType::Triangle,
        );
        let a = analyse(&big);
        let det = a.detection.expect("screen found");
        let err = det.quad.max_corner_distance(&photo.corners.scaled(5.0));
        assert!(err < 5.0, "corner error {err:.2} px at 4000 px");
        assert!(a.quality.passed, "{:?}", a.quality);
        let rect = rectify(&big, &det.quad).expect("rectified");
        assert!(rect.width() > 1500 && rect.height() > 1500);
    }

    #[test]
    fn decode_accepts_jpeg_and_png_only() {
        let photo =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/photo.jpg"))
                .expect("fixture");
        assert_eq!(decode_photo(&photo).expect("JPEG").dimensions(), (640, 480));
        assert!(matches!(
            decode_photo(b"GIF89a\x01\x00\x01\x00"),
            Err(CaptureError::NotAnImage(_))
        ));
        assert!(matches!(
            decode_photo(b"not an image at all"),
            Err(CaptureError::NotAnImage(_))
        ));
        // A truncated JPEG is decoded as far as it goes (the decoder is lenient), not a panic.
        let _ = decode_photo(&photo[..photo.len() / 3]);
        assert!(decode_photo(&photo[..20]).is_err());
    }

    #[test]
    fn odd_inputs_are_no_screen_not_a_panic() {
        for (w, h) in [(1, 1), (16, 16), (20, 12_000), (12_000, 20), (300, 200)] {
            let flat = RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]));
            let a = analyse(&flat);
            assert!(!a.pop_detected(), "{w}×{h}");
        }
        let noise = RgbImage::from_fn(200, 150, |x, y| {
            let v = ((x * 7919 + y * 104_729) % 251) as u8;
            image::Rgb([v, v, v])
        });
        assert!(!analyse(&noise).pop_detected());
    }
}
