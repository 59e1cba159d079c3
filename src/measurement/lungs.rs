//! Lung fields from a segmentation model's lung probability map, and what is measured on them.
//!
//! - [`LungFields::from_probability`]: threshold, connected components (8-connected), the
//!   largest component on each side of the midline taken as that side's lung, holes filled.
//!   In a frontal radiograph the patient's right lung is on the image left.
//! - [`LungFields::implausible`]: why the two fields do not look like the lungs of a chest
//!   radiograph (a missing side, a field too small or too large, fields at different heights,
//!   much of the mask outside the two fields). An empty list is what the gate accepts.
//! - [`LungFields::ctr`]: the cardiothoracic ratio from the lung borders (see its docs for the
//!   method), with the four measuring points as [`Landmark`]s so the overlay and the SR can
//!   show where it was read.
//! - [`Lung::contour`]: the outer border, simplified, for drawing and for REST.
//!
//! Everything is in the mask's own grid; positions handed out are normalised (x = column /
//! width, y = row / height), which survives the resize back to the source image.

use serde::{Deserialize, Serialize};

use super::{cardiothoracic_ratio_with, Ctr, Landmark};

/// A lung field may not cover less than this share of the image...
pub const MIN_LUNG_FRACTION: f32 = 0.05;
/// ... nor more.
pub const MAX_LUNG_FRACTION: f32 = 0.40;
/// At most this share of the thresholded mask may lie outside the two lung fields.
pub const MAX_STRAY_FRACTION: f32 = 0.10;
/// The two fields' vertical extents must overlap by at least this share of the shorter one.
pub const MIN_VERTICAL_OVERLAP: f32 = 0.5;

/// Which lung: the patient's side, not the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The patient's right lung (image left on a PA or AP view).
    Right,
    /// The patient's left lung (image right).
    Left,
}

/// One lung field: its pixels and the figures read from them.
#[derive(Debug, Clone)]
pub struct Lung {
    /// Patient side.
    pub side: Side,
    /// Mask width and height (the model's output grid).
    pub width: usize,
    pub height: usize,
    /// 1 inside the field, row-major, holes filled.
    pub mask: Vec<u8>,
    /// Pixels inside.
    pub area: usize,
    /// First and last row (inclusive).
    pub top: usize,
    pub bottom: usize,
    /// First and last column (inclusive).
    pub left: usize,
    pub right: usize,
    /// Mean column (the centroid's x), in pixels.
    pub centroid_x: f32,
}

impl Lung {
    fn new(side: Side, mask: Vec<u8>, width: usize, height: usize) -> Self {
        let (mut area, mut sum_x) = (0usize, 0f64);
        let (mut top, mut bottom, mut left, mut right) = (usize::MAX, 0, usize::MAX, 0);
        for (i, &v) in mask.iter().enumerate() {
            if v != 0 {
                let (x, y) = (i % width, i / width);
                area += 1;
                sum_x += x as f64;
                top = top.min(y);
                bottom = bottom.max(y);
                left = left.min(x);
                right = right.max(x);
            }
        }
        Lung {
            side,
            width,
            height,
            mask,
            area,
            top,
            bottom,
            left,
            right,
            centroid_x: (sum_x / area.max(1) as f64) as f32,
        }
    }

    /// Share of the image the field covers.
    pub fn area_fraction(&self) -> f32 {
        self.area as f32 / (self.width * self.height) as f32
    }

    /// Height of the field as a share of the image height.
    pub fn height_fraction(&self) -> f32 {
        (self.bottom + 1 - self.top) as f32 / self.height as f32
    }

    /// The column of the cardiac border on this lung's side and its row (see
    /// [`LungFields::ctr`]); `zone_top` is the first row where the diaphragm may be.
    fn cardiac_border(&self, zone_top: usize) -> Option<(usize, usize)> {
        let start = self.top + (self.bottom - self.top) / 2;
        // How far toward the patient's side (away from the midline) the medial border is.
        let raw: Vec<(usize, isize)> = (start..=self.bottom)
            .map_while(|y| {
                let (first, last) = self.row_extent(y)?;
                Some(match self.side {
                    Side::Right => (y, -(last as isize)),
                    Side::Left => (y, first as isize),
                })
            })
            .collect();
        let n = raw.len();
        if n == 0 {
            return None;
        }
        // A running median, so that a notch of a few rows in the mask is not a border.
        let radius = (self.height / 128).max(1);
        let outward: Vec<isize> = (0..n)
            .map(|i| {
                let mut window: Vec<isize> = raw[i.saturating_sub(radius)..(i + radius + 1).min(n)]
                    .iter()
                    .map(|&(_, o)| o)
                    .collect();
                window.sort_unstable();
                window[window.len() / 2]
            })
            .collect();
        // How much farther out the border ends than a border at CARDIOPHRENIC_SLOPE from row
        // `i` would: it grows over the diaphragm and shrinks over the cardiac border.
        let excess = |i: usize| {
            (outward[n - 1] - outward[i]) as f32 - CARDIOPHRENIC_SLOPE * (n - 1 - i) as f32
        };
        let prominence = DIAPHRAGM_PROMINENCE * self.width as f32;
        let (mut trough, mut peak) = (0f32, None::<(f32, usize)>);
        for i in (0..n).rev() {
            if raw[i].0 < zone_top {
                break;
            }
            let e = excess(i);
            match peak {
                None => {
                    if e - trough >= prominence {
                        peak = Some((e, i));
                    }
                    trough = trough.min(e);
                }
                Some((p, _)) if e > p => peak = Some((e, i)),
                Some((p, _)) if p - e >= prominence => break,
                Some(_) => {}
            }
        }
        let angle = peak.map_or(n - 1, |(_, i)| i);
        let widest = (0..=angle).max_by(|&a, &b| outward[a].cmp(&outward[b]).then(a.cmp(&b)))?;
        let column = match self.side {
            Side::Right => -outward[widest],
            Side::Left => outward[widest],
        };
        Some((usize::try_from(column).ok()?, raw[widest].0))
    }

    /// First and last column of the field in `row`, if it has pixels there.
    fn row_extent(&self, row: usize) -> Option<(usize, usize)> {
        let line = &self.mask[row * self.width..(row + 1) * self.width];
        let first = line.iter().position(|&v| v != 0)?;
        let last = line.iter().rposition(|&v| v != 0)?;
        Some((first, last))
    }

    /// The field's outer border as a closed polygon in normalised coordinates, simplified so
    /// that no dropped border pixel is more than `tolerance_px` from it.
    pub fn contour(&self, tolerance_px: f32) -> Vec<[f32; 2]> {
        let border = trace_border(&self.mask, self.width, self.height);
        simplify_closed(&border, tolerance_px)
            .into_iter()
            .map(|(x, y)| {
                [
                    (x as f32 + 0.5) / self.width as f32,
                    (y as f32 + 0.5) / self.height as f32,
                ]
            })
            .collect()
    }
}

/// The lung fields found in one probability map.
#[derive(Debug, Clone)]
pub struct LungFields {
    /// Mask width and height.
    pub width: usize,
    pub height: usize,
    /// The patient's right lung (image left), if any component lies left of the midline.
    pub right: Option<Lung>,
    /// The patient's left lung (image right).
    pub left: Option<Lung>,
    /// Thresholded pixels outside the two fields (other components).
    pub stray: usize,
    /// All thresholded pixels.
    pub total: usize,
}

impl LungFields {
    /// Lung fields from a `width` x `height` probability map (row-major), pixels at or above
    /// `threshold` being lung.
    pub fn from_probability(prob: &[f32], width: usize, height: usize, threshold: f32) -> Self {
        assert_eq!(prob.len(), width * height, "probability map size");
        let mask: Vec<u8> = prob.iter().map(|&p| u8::from(p >= threshold)).collect();
        let (labels, components) = label(&mask, width, height);
        let total: usize = components.iter().map(|c| c.area).sum();
        let mid = width as f32 / 2.0;
        let largest = |on_left: bool| {
            components
                .iter()
                .enumerate()
                .filter(|(_, c)| (c.centroid_x() < mid) == on_left)
                .max_by_key(|(_, c)| c.area)
                .map(|(i, _)| i)
        };
        let (right_index, left_index) = (largest(true), largest(false));
        let lung = |index: Option<usize>, side| {
            index.map(|i| {
                let id = i as u32 + 1;
                let own: Vec<u8> = labels.iter().map(|&l| u8::from(l == id)).collect();
                Lung::new(side, fill_holes(&own, width, height), width, height)
            })
        };
        let right = lung(right_index, Side::Right);
        let left = lung(left_index, Side::Left);
        let kept = [right_index, left_index]
            .into_iter()
            .flatten()
            .map(|i| components[i].area)
            .sum::<usize>();
        LungFields {
            width,
            height,
            right,
            left,
            stray: total - kept,
            total,
        }
    }

    /// Why these fields are not a chest radiograph's two lungs; empty when they are.
    pub fn implausible(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for (lung, name) in [(&self.right, "right"), (&self.left, "left")] {
            match lung {
                None => reasons.push(format!("no {name} lung field found")),
                Some(l) => {
                    let f = l.area_fraction();
                    if f < MIN_LUNG_FRACTION {
                        reasons.push(format!(
                            "{name} lung field covers {:.1} % of the image (at least {:.0} % expected)",
                            f * 100.0,
                            MIN_LUNG_FRACTION * 100.0
                        ));
                    } else if f > MAX_LUNG_FRACTION {
                        reasons.push(format!(
                            "{name} lung field covers {:.1} % of the image (at most {:.0} % expected)",
                            f * 100.0,
                            MAX_LUNG_FRACTION * 100.0
                        ));
                    }
                }
            }
        }
        if let (Some(r), Some(l)) = (&self.right, &self.left) {
            let overlap = (r.bottom.min(l.bottom) + 1).saturating_sub(r.top.max(l.top));
            let shorter = (r.bottom + 1 - r.top).min(l.bottom + 1 - l.top);
            if (overlap as f32) < MIN_VERTICAL_OVERLAP * shorter as f32 {
                reasons.push("the two lung fields lie at different heights".to_string());
            }
        }
        if self.total > 0 && self.stray as f32 > MAX_STRAY_FRACTION * self.total as f32 {
            reasons.push(format!(
                "{:.0} % of the segmented area lies outside the two lung fields",
                self.stray as f32 * 100.0 / self.total as f32
            ));
        }
        reasons
    }

    /// The cardiothoracic ratio read from the lung borders, `None` without both lungs.
    ///
    /// Method (the classic reading, transverse extents of each side taken at their own level):
    /// on a frontal view the cardiac silhouette is bounded by the lungs' medial borders, down
    /// to the cardiophrenic angles where the diaphragm takes over. Each lung's medial border is
    /// followed from half the field's height down to its lowest row and smoothed by a running
    /// median over ±1/128 of the image height (notches of the mask are not borders). Both the
    /// heart's upper border (a big heart's "shoulder") and the diaphragm move the medial
    /// border outwards faster than [`CARDIOPHRENIC_SLOPE`] columns per row, so the slope alone
    /// cannot tell them apart; their place does. The diaphragm is sought only in the lowest
    /// [`DIAPHRAGM_ZONE`] of the two fields' combined height, from the bottom up: the
    /// cardiophrenic angle is the first row, going up, where the border has travelled outwards
    /// by at least [`DIAPHRAGM_PROMINENCE`] of the width more than that slope would give
    /// (the diaphragm, after a costophrenic tip whose steep edge may come first) and above
    /// which it then falls back by as much (the cardiac border, steeper than the slope). With
    /// no such stretch the field has no visible diaphragm (a large heart reaching the field's
    /// lowest row) and the angle is that row. The cardiac border on that side is the
    /// smoothed border's most outward column from half the height down to the angle.
    /// Cardiac width: between the two cardiac borders. Thoracic width: the widest row between
    /// the fields' lateral borders.
    ///
    /// Validated on generated phantoms against their truth and against the landmark model
    /// `ctr-demo`, and read on two real chests (NEMA RG1, GDCM's Fuji CR); no real image with
    /// a known CTR was available. Figures and the command in `models/README.md`.
    pub fn ctr(&self, normal_below: f32) -> Option<(Ctr, Vec<Landmark>)> {
        let (r, l) = (self.right.as_ref()?, self.left.as_ref()?);
        let (top, bottom) = (r.top.min(l.top), r.bottom.max(l.bottom));
        let zone_top = bottom - ((bottom - top) as f32 * DIAPHRAGM_ZONE) as usize;
        let (heart_r, heart_l) = (r.cardiac_border(zone_top)?, l.cardiac_border(zone_top)?);
        let thorax = self.thoracic_extent()?;
        let (w, h) = (self.width as f32, self.height as f32);
        let point = |class: &str, x: usize, y: usize| {
            Landmark::new(class, x as f32 / w, (y as f32 + 0.5) / h)
        };
        // Pixel edges: a field's last column ends at `x + 1`.
        let landmarks = vec![
            point("heart_right", heart_r.0 + 1, heart_r.1),
            point("heart_left", heart_l.0, heart_l.1),
            point("thorax_right", thorax.1, thorax.0),
            point("thorax_left", thorax.2 + 1, thorax.0),
        ];
        let ctr = cardiothoracic_ratio_with(&landmarks, normal_below)?;
        Some((ctr, landmarks))
    }
}

impl LungFields {
    /// The row where the fields' lateral borders are furthest apart: (row, first column of
    /// the right lung, last column of the left lung).
    fn thoracic_extent(&self) -> Option<(usize, usize, usize)> {
        let (r, l) = (self.right.as_ref()?, self.left.as_ref()?);
        (r.top.max(l.top)..=r.bottom.min(l.bottom))
            .filter_map(|y| Some((y, r.row_extent(y)?.0, l.row_extent(y)?.1)))
            .max_by_key(|&(_, from, to)| to.saturating_sub(from))
    }
}

/// Outward movement of a medial border, in columns per row, above which it may be the
/// diaphragm rather than the cardiac border (see [`LungFields::ctr`]).
pub const CARDIOPHRENIC_SLOPE: f32 = 1.0;
/// The lowest share of the two fields' combined height where the diaphragm is sought.
pub const DIAPHRAGM_ZONE: f32 = 0.25;
/// Outward travel beyond [`CARDIOPHRENIC_SLOPE`], as a share of the mask width, that makes
/// a stretch of medial border the diaphragm, and the fall back that ends it.
pub const DIAPHRAGM_PROMINENCE: f32 = 0.01;

/// One connected component's size and position.
#[derive(Debug, Clone, Copy)]
struct Component {
    area: usize,
    sum_x: f64,
}

impl Component {
    fn centroid_x(&self) -> f32 {
        (self.sum_x / self.area as f64) as f32
    }
}

/// 8-connected components of the set pixels: a label per pixel (0 = unset, `i + 1` =
/// component `i`) and the components.
fn label(mask: &[u8], width: usize, height: usize) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![0u32; mask.len()];
    let mut components = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] == 0 || labels[start] != 0 {
            continue;
        }
        let id = components.len() as u32 + 1;
        let mut c = Component {
            area: 0,
            sum_x: 0.0,
        };
        labels[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            c.area += 1;
            c.sum_x += x as f64;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] != 0 && labels[j] == 0 {
                        labels[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        components.push(c);
    }
    (labels, components)
}

/// `mask` with every unset region not connected (4-connected) to the image border set.
fn fill_holes(mask: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut outside = vec![false; mask.len()];
    let mut stack: Vec<usize> = (0..width)
        .flat_map(|x| [x, (height - 1) * width + x])
        .chain((0..height).flat_map(|y| [y * width, y * width + width - 1]))
        .filter(|&i| mask[i] == 0)
        .collect();
    for &i in &stack {
        outside[i] = true;
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % width, i / width);
        let mut visit = |j: usize| {
            if mask[j] == 0 && !outside[j] {
                outside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < width {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - width);
        }
        if y + 1 < height {
            visit(i + width);
        }
    }
    outside.iter().map(|&o| u8::from(!o)).collect()
}

/// The outer border of the single filled region in `mask`, clockwise in image coordinates
/// (Moore-neighbour tracing from the top-left pixel).
fn trace_border(mask: &[u8], width: usize, height: usize) -> Vec<(usize, usize)> {
    let Some(start) = mask.iter().position(|&v| v != 0) else {
        return Vec::new();
    };
    let set = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < width
            && (y as usize) < height
            && mask[y as usize * width + x as usize] != 0
    };
    // Neighbours clockwise from west, y growing downwards.
    const DIRS: [(isize, isize); 8] = [
        (-1, 0),
        (-1, -1),
        (0, -1),
        (1, -1),
        (1, 0),
        (1, 1),
        (0, 1),
        (-1, 1),
    ];
    let start = ((start % width) as isize, (start / width) as isize);
    let mut border = vec![(start.0 as usize, start.1 as usize)];
    let (mut cur, mut back) = (start, 0usize);
    // A region of n pixels has a border of at most 4n steps; the bound guards the loop.
    for _ in 0..4 * mask.len() {
        let next = (0..8)
            .map(|k| (back + 1 + k) % 8)
            .find(|&d| set(cur.0 + DIRS[d].0, cur.1 + DIRS[d].1));
        let Some(d) = next else { break };
        cur = (cur.0 + DIRS[d].0, cur.1 + DIRS[d].1);
        back = (d + 4) % 8;
        if cur == start {
            break;
        }
        border.push((cur.0 as usize, cur.1 as usize));
    }
    border
}

/// Douglas-Peucker on a closed polygon, split at the point farthest from the first.
fn simplify_closed(points: &[(usize, usize)], tolerance: f32) -> Vec<(usize, usize)> {
    if points.len() < 4 {
        return points.to_vec();
    }
    let d2 = |a: (usize, usize), b: (usize, usize)| {
        let (dx, dy) = (a.0 as f32 - b.0 as f32, a.1 as f32 - b.1 as f32);
        dx * dx + dy * dy
    };
    let far = (1..points.len())
        .max_by(|&i, &j| d2(points[0], points[i]).total_cmp(&d2(points[0], points[j])))
        .unwrap_or(1);
    let mut first = simplify_open(&points[..=far], tolerance);
    let mut ring = points[far..].to_vec();
    ring.push(points[0]);
    let second = simplify_open(&ring, tolerance);
    first.pop();
    first.extend_from_slice(&second[..second.len() - 1]);
    first
}

fn simplify_open(points: &[(usize, usize)], tolerance: f32) -> Vec<(usize, usize)> {
    if points.len() < 3 {
        return points.to_vec();
    }
    let (a, b) = (points[0], points[points.len() - 1]);
    let (ax, ay, bx, by) = (a.0 as f32, a.1 as f32, b.0 as f32, b.1 as f32);
    let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
    let distance = |p: &(usize, usize)| {
        let (px, py) = (p.0 as f32, p.1 as f32);
        if len == 0.0 {
            ((px - ax).powi(2) + (py - ay).powi(2)).sqrt()
        } else {
            ((by - ay) * px - (bx - ax) * py + bx * ay - by * ax).abs() / len
        }
    };
    let (index, worst) = points[1..points.len() - 1]
        .iter()
        .enumerate()
        .map(|(i, p)| (i + 1, distance(p)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least three points");
    if worst <= tolerance {
        return vec![a, b];
    }
    let mut left = simplify_open(&points[..=index], tolerance);
    let right = simplify_open(&points[index..], tolerance);
    left.pop();
    left.extend(right);
    left
}

/// Largest distance, in mask pixels, of a dropped border pixel from the reported contour.
pub const CONTOUR_TOLERANCE_PX: f32 = 1.5;

/// What the outputs need of one image's lung fields: the label mask, plausibility, the
/// figures per lung and the CTR. Serialisable; stored with the study result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LungReport {
    /// True when the fields look like a chest radiograph's two lungs.
    pub plausible: bool,
    /// Why not, when not.
    pub implausible_reasons: Vec<String>,
    /// The patient's right lung.
    pub right: Option<LungFigures>,
    /// The patient's left lung.
    pub left: Option<LungFigures>,
    /// Widest distance between the fields' lateral borders, as a fraction of the image width.
    pub thoracic_width: Option<f32>,
    /// Cardiothoracic ratio read from the lung borders (see [`LungFields::ctr`]).
    pub ctr: Option<Ctr>,
    /// Where it was read: `heart_right`, `heart_left`, `thorax_right`, `thorax_left`.
    pub ctr_points: Vec<Landmark>,
    /// Share of the thresholded pixels outside the two fields.
    pub stray_fraction: f32,
    /// The label mask in the model's grid: 0 background, 1 right lung, 2 left lung.
    pub mask: LabelMask,
}

/// One lung's figures. Lengths in millimetres need the source's pixel spacing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LungFigures {
    pub side: Side,
    /// Share of the image covered.
    pub area_fraction: f32,
    /// Height as a share of the image height.
    pub height_fraction: f32,
    /// Area in source pixels.
    pub area_px: f64,
    /// Height in source pixels.
    pub height_px: f64,
    /// Area in mm² (source pixel spacing known).
    pub area_mm2: Option<f64>,
    /// Height in mm (source pixel spacing known).
    pub height_mm: Option<f64>,
    /// Outer border, simplified, in source image pixel coordinates `[column, row]`.
    pub contour: Vec<[f32; 2]>,
}

/// A label image as run lengths: `runs` alternates value and count, row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LabelMask {
    pub width: usize,
    pub height: usize,
    pub runs: Vec<u32>,
}

impl LabelMask {
    /// Run-length encodes `labels` (`width * height` values).
    pub fn encode(labels: &[u8], width: usize, height: usize) -> Self {
        let mut runs = Vec::new();
        let mut iter = labels.iter().copied();
        if let Some(mut current) = iter.next() {
            let mut count = 1u32;
            for v in iter {
                if v == current {
                    count += 1;
                } else {
                    runs.extend([u32::from(current), count]);
                    current = v;
                    count = 1;
                }
            }
            runs.extend([u32::from(current), count]);
        }
        LabelMask {
            width,
            height,
            runs,
        }
    }

    /// The labels back, `None` when the runs do not cover exactly `width * height` pixels.
    pub fn decode(&self) -> Option<Vec<u8>> {
        let total = self.width.checked_mul(self.height)?;
        let mut out = Vec::with_capacity(total);
        for pair in self.runs.chunks(2) {
            let [value, count] = pair else { return None };
            let value = u8::try_from(*value).ok()?;
            if out.len() + *count as usize > total {
                return None;
            }
            out.extend(std::iter::repeat_n(value, *count as usize));
        }
        (out.len() == total).then_some(out)
    }

    /// The labels resampled to `cols` x `rows` (nearest neighbour, pixel centres): what the
    /// DICOM Segmentation and the overlay draw at the source image's geometry.
    pub fn resample(&self, cols: usize, rows: usize) -> Option<Vec<u8>> {
        let labels = self.decode()?;
        let xs: Vec<usize> = (0..cols)
            .map(|c| {
                (((c as f64 + 0.5) * self.width as f64 / cols as f64) as usize).min(self.width - 1)
            })
            .collect();
        let mut out = Vec::with_capacity(cols * rows);
        for r in 0..rows {
            let y = (((r as f64 + 0.5) * self.height as f64 / rows as f64) as usize)
                .min(self.height - 1);
            let line = &labels[y * self.width..(y + 1) * self.width];
            out.extend(xs.iter().map(|&x| line[x]));
        }
        Some(out)
    }
}

impl LungFields {
    /// The report for a source image of `cols` x `rows` pixels with `spacing_mm` (row, column)
    /// when known; `normal_below` is the CTR limit.
    pub fn report(
        &self,
        cols: u32,
        rows: u32,
        spacing_mm: Option<[f64; 2]>,
        normal_below: f32,
    ) -> LungReport {
        let reasons = self.implausible();
        let (sx, sy) = (
            cols as f64 / self.width as f64,
            rows as f64 / self.height as f64,
        );
        let figures = |lung: &Option<Lung>| {
            lung.as_ref().map(|l| {
                let area_px = l.area as f64 * sx * sy;
                let height_px = (l.bottom + 1 - l.top) as f64 * sy;
                LungFigures {
                    side: l.side,
                    area_fraction: l.area_fraction(),
                    height_fraction: l.height_fraction(),
                    area_px,
                    height_px,
                    area_mm2: spacing_mm.map(|[r, c]| area_px * r * c),
                    height_mm: spacing_mm.map(|[r, _]| height_px * r),
                    contour: l
                        .contour(CONTOUR_TOLERANCE_PX)
                        .into_iter()
                        .map(|[x, y]| [x * cols as f32, y * rows as f32])
                        .collect(),
                }
            })
        };
        let ctr = self.ctr(normal_below);
        let mut labels = vec![0u8; self.width * self.height];
        for (lung, value) in [(&self.right, 1u8), (&self.left, 2u8)] {
            if let Some(l) = lung {
                for (o, &m) in labels.iter_mut().zip(&l.mask) {
                    if m != 0 {
                        *o = value;
                    }
                }
            }
        }
        LungReport {
            plausible: reasons.is_empty(),
            implausible_reasons: reasons,
            right: figures(&self.right),
            left: figures(&self.left),
            thoracic_width: self
                .thoracic_extent()
                .map(|(_, from, to)| (to + 1 - from) as f32 / self.width as f32),
            ctr_points: ctr.as_ref().map(|c| c.1.clone()).unwrap_or_default(),
            ctr: ctr.map(|c| c.0),
            stray_fraction: if self.total == 0 {
                0.0
            } else {
                self.stray as f32 / self.total as f32
            },
            mask: LabelMask::encode(&labels, self.width, self.height),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 100;

    /// A probability map with an ellipse per (cx, cy, rx, ry), normalised units.
    fn ellipses(shapes: &[(f32, f32, f32, f32)]) -> Vec<f32> {
        let mut p = vec![0.0; N * N];
        for y in 0..N {
            for x in 0..N {
                let (fx, fy) = ((x as f32 + 0.5) / N as f32, (y as f32 + 0.5) / N as f32);
                if shapes.iter().any(|&(cx, cy, rx, ry)| {
                    ((fx - cx) / rx).powi(2) + ((fy - cy) / ry).powi(2) <= 1.0
                }) {
                    p[y * N + x] = 0.9;
                }
            }
        }
        p
    }

    fn two_lungs() -> Vec<f32> {
        ellipses(&[(0.30, 0.50, 0.15, 0.30), (0.70, 0.50, 0.15, 0.30)])
    }

    #[test]
    fn two_fields_one_each_side() {
        let f = LungFields::from_probability(&two_lungs(), N, N, 0.5);
        let (r, l) = (f.right.as_ref().unwrap(), f.left.as_ref().unwrap());
        assert!(r.centroid_x < 50.0 && l.centroid_x > 50.0);
        assert!((r.area_fraction() - std::f32::consts::PI * 0.15 * 0.30).abs() < 0.01);
        assert!((r.height_fraction() - 0.60).abs() < 0.03);
        assert!(f.implausible().is_empty(), "{:?}", f.implausible());
        assert_eq!(f.stray, 0);
    }

    #[test]
    fn holes_are_filled_and_strays_counted() {
        let mut p = two_lungs();
        p[50 * N + 30] = 0.0; // a hole inside the right lung
        p[2 * N + 50] = 0.9; // a speck at the top, on neither lung
        let f = LungFields::from_probability(&p, N, N, 0.5);
        assert_eq!(f.right.as_ref().unwrap().mask[50 * N + 30], 1);
        assert_eq!(f.stray, 1);
    }

    #[test]
    fn one_lung_or_a_blob_is_refused_with_reasons() {
        let one = ellipses(&[(0.30, 0.50, 0.15, 0.30)]);
        let f = LungFields::from_probability(&one, N, N, 0.5);
        assert_eq!(
            f.implausible(),
            vec!["no left lung field found".to_string()]
        );
        let blob = ellipses(&[(0.5, 0.5, 0.45, 0.45)]);
        let reasons = LungFields::from_probability(&blob, N, N, 0.5).implausible();
        assert!(
            reasons.iter().any(|r| r.contains("at most 40 %")),
            "{reasons:?}"
        );
        let apart = ellipses(&[(0.30, 0.25, 0.15, 0.2), (0.70, 0.75, 0.15, 0.2)]);
        let reasons = LungFields::from_probability(&apart, N, N, 0.5).implausible();
        assert!(
            reasons.iter().any(|r| r.contains("different heights")),
            "{reasons:?}"
        );
    }

    /// Mirror-image lungs on `rows`, lateral borders at `lateral` and `N - 1 - lateral`, the
    /// right lung's medial border (its last column) at `medial(y)`.
    fn mirrored(
        rows: std::ops::Range<usize>,
        lateral: usize,
        medial: impl Fn(usize) -> usize,
    ) -> LungFields {
        let mut p = vec![0.0; N * N];
        for y in rows {
            let m = medial(y);
            for x in (lateral..=m).chain(N - 1 - m..=N - 1 - lateral) {
                p[y * N + x] = 1.0;
            }
        }
        LungFields::from_probability(&p, N, N, 0.5)
    }

    /// The right lung's cardiac border column and row, read back from the landmarks.
    fn heart_right(points: &[Landmark]) -> (usize, usize) {
        let p = &points[0];
        assert_eq!(p.class, "heart_right");
        (
            (p.x * N as f32).round() as usize - 1,
            (p.y * N as f32 - 0.5).round() as usize,
        )
    }

    #[test]
    fn ctr_from_the_borders() {
        // Rows 20..90, lateral borders at columns 10 and 89. The medial borders run straight
        // down to row 50, then widen by half a column per row (the heart) to columns 26 and
        // 73 at row 79, then turn outwards by three columns per row (the diaphragm) down to
        // row 89.
        let f = mirrored(20..90, 10, |y| match y {
            ..50 => 40,
            50..80 => 40 - (y - 50) / 2,
            _ => (26 - 3 * (y as isize - 79)).max(11) as usize,
        });
        assert!(f.implausible().is_empty(), "{:?}", f.implausible());
        let (ctr, points) = f.ctr(0.5).unwrap();
        assert!((ctr.thoracic_width - 0.80).abs() < 1e-6, "{ctr:?}");
        assert!((ctr.cardiac_width - 0.46).abs() < 1e-6, "{ctr:?}");
        assert!((ctr.ratio - 0.575).abs() < 1e-5 && ctr.enlarged);
        assert_eq!(points[0].y, points[1].y, "mirror images");
        assert_eq!(
            heart_right(&points),
            (26, 79),
            "the widest level above the diaphragm"
        );
    }

    #[test]
    fn a_large_hearts_shoulder_is_not_the_diaphragm() {
        // Rows 10..90, lateral borders at 5 and 94. Mediastinum at column 40 to row 45; the
        // heart's upper border turns outwards by two columns per row to column 20 at row 55
        // (as steep as a diaphragm), then half a column per row to 12 at row 71, straight down
        // to row 81, then the diaphragm at three columns per row.
        let f = mirrored(10..90, 5, |y| match y {
            ..45 => 40,
            45..55 => 40 - 2 * (y - 45),
            55..71 => 20 - (y - 55) / 2,
            71..82 => 12,
            _ => (12 - 3 * (y as isize - 81)).max(6) as usize,
        });
        let (ctr, points) = f.ctr(0.5).unwrap();
        let (column, row) = heart_right(&points);
        assert_eq!(column, 12, "{points:?}");
        assert!((71..82).contains(&row), "{row}");
        assert!((ctr.cardiac_width - 0.74).abs() < 1e-6, "{ctr:?}");
    }

    #[test]
    fn a_costophrenic_tip_below_the_diaphragm_is_not_the_heart() {
        // Rows 10..90, lateral borders at 5 and 94. The cardiac border runs straight down at
        // column 40 to row 71; the diaphragm turns outwards by three columns per row to
        // column 19 at row 78; below it the costophrenic tip's edge is nearly vertical (half a
        // column per row) for twelve rows, as on a real chest whose lowest point is the tip.
        let f = mirrored(10..90, 5, |y| match y {
            ..72 => 40,
            72..79 => 40 - 3 * (y - 71),
            _ => 19 - (y - 78) / 2,
        });
        let (_, points) = f.ctr(0.5).unwrap();
        let (column, row) = heart_right(&points);
        assert_eq!(column, 40, "{points:?}");
        assert!(row <= 72, "{row}");
    }

    #[test]
    fn without_a_visible_diaphragm_the_heart_reaches_the_lowest_row() {
        // A large heart and a lung field that ends beside it: the medial border moves
        // outwards down to the field's last row (two columns per row, then 0.6), no diaphragm.
        let f = mirrored(10..80, 5, |y| match y {
            ..45 => 40,
            45..52 => 40 - 2 * (y - 45),
            _ => 26 - (y - 52) * 3 / 5,
        });
        let (_, points) = f.ctr(0.5).unwrap();
        assert_eq!(heart_right(&points), (26 - 27 * 3 / 5, 79), "{points:?}");
    }

    #[test]
    fn contour_of_a_rectangle_is_its_corners() {
        let mut p = vec![0.0; N * N];
        for y in 10..30 {
            for x in 10..50 {
                p[y * N + x] = 1.0;
            }
        }
        p[60 * N + 80] = 1.0; // so that the right field exists; not traced here
        let f = LungFields::from_probability(&p, N, N, 0.5);
        let c = f.right.as_ref().unwrap().contour(0.5);
        assert_eq!(c.len(), 4, "{c:?}");
        let xs: Vec<f32> = c.iter().map(|p| (p[0] * N as f32 - 0.5).round()).collect();
        let ys: Vec<f32> = c.iter().map(|p| (p[1] * N as f32 - 0.5).round()).collect();
        assert_eq!(xs.iter().cloned().fold(f32::MAX, f32::min), 10.0);
        assert_eq!(xs.iter().cloned().fold(f32::MIN, f32::max), 49.0);
        assert_eq!(ys.iter().cloned().fold(f32::MAX, f32::min), 10.0);
        assert_eq!(ys.iter().cloned().fold(f32::MIN, f32::max), 29.0);
    }
}
