//! Finding the displayed radiograph in a phone photo of a screen.
//!
//! A screen is a backlit quadrilateral inside a darker bezel. The photo is reduced to a
//! working size (long side about 480 px) and lightly blurred; at a ladder of grey levels
//! the bright connected regions are found, and around each the smallest quadrilateral whose
//! sides lie on edges of its convex hull. Where the radiograph's own black background meets a
//! corner, the other sides' lines still meet where the corner was. Each candidate is scored by
//! its edge support: the share of points along each side where the inside is brighter than
//! the outside. The most promising have their sides moved outward to the screen's own faint
//! edge when they settled on the content (`adjust_sides`); only outermost candidates compete
//! (a screen contains its content). The winner is refined on the full-resolution photo: along
//! each side the brightness profile across the edge is searched for its steepest fall, and a
//! line is fitted to those points (trimmed least squares), giving sub-pixel corners. Wider
//! profiles across the fitted edge measure its blur.
//!
//! A plain radiograph is not a photo of a screen: its bright region touches the image border
//! or has curved sides (no support, or edge points off any line), and it is reported as "no
//! screen" (`pop_detected = false`) rather than rectified.

use image::RgbImage;
use serde::Serialize;

use super::geometry::{convex_hull, min_area_enclosing_quad, simplify_closed, Line, Point, Quad};
use super::raster::{sample_luma, Gray};

/// Long side of the working image the candidates are searched on.
const WORKING_SIDE: f64 = 480.0;
/// Grey levels tried between the 1st and 99th percentile.
const LEVELS: usize = 14;
/// Grey steps above the 1st percentile tried in addition to the ladder.
const DARK_STEPS: [f32; 6] = [2.0, 3.5, 5.0, 6.5, 8.0, 11.0];
/// Smallest region considered, as a share of the working image.
const MIN_REGION_FRACTION: f64 = 0.04;
/// Candidates whose sides are adjusted before the final judgement.
const ADJUSTED_CANDIDATES: usize = 4;
/// Samples per side when scoring edge support.
const SUPPORT_SAMPLES: usize = 32;
/// Inside-minus-outside grey difference that counts as an edge (0..255 scale).
const SUPPORT_CONTRAST: f32 = 3.0;
/// A candidate needs this much support on its weakest side…
const MIN_SIDE_SUPPORT: f64 = 0.3;
/// …and on average over its four sides.
const MIN_MEAN_SUPPORT: f64 = 0.6;
/// Interior angles outside this range are not a screen seen from a plausible viewpoint.
const ANGLE_RANGE_DEG: (f64, f64) = (35.0, 145.0);
/// Share of a side's full-resolution edge points that must lie on its fitted line.
const MIN_STRAIGHT: f64 = 0.5;
/// Profiles per side in the refinement.
const REFINE_SAMPLES: usize = 48;

/// The screen found in a photo.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Corners in full-resolution pixel coordinates, TL,TR,BR,BL.
    pub quad: Quad,
    /// Mean edge support over the four sides (0..1).
    pub support: f64,
    /// Edge support per side: top, right, bottom, left.
    pub side_support: [f64; 4],
    /// Sides whose line was refined from full-resolution edge points (0..4).
    pub refined_sides: usize,
    /// Gaussian σ of the screen edge's blur in full-resolution pixels (median over the
    /// profiles with a clear edge); `None` when too few profiles had one.
    pub edge_blur_px: Option<f64>,
}

/// Finds the screen's four corners, or `None` when the photo shows no screen.
pub fn detect(photo: &RgbImage) -> Option<Detection> {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    if w < 16 || h < 16 {
        return None;
    }
    let k = ((w.max(h) as f64 / WORKING_SIDE).round() as usize).max(1);
    let work = Gray::from_rgb_downscaled(photo, k).blurred(1.0);
    let candidate = best_candidate(&work)?;
    let quad = candidate.quad.scaled(k as f64);
    let refined = refine(photo, &quad, k as f64);
    if refined.curved {
        return None;
    }
    let final_quad = refined.quad.unwrap_or(quad);
    if !inside(&final_quad, w as f64, h as f64) {
        return None;
    }
    Some(Detection {
        quad: final_quad,
        support: candidate.support,
        side_support: candidate.side_support,
        refined_sides: refined.sides,
        edge_blur_px: refined.blur,
    })
}

#[derive(Debug, Clone)]
struct Candidate {
    quad: Quad,
    support: f64,
    side_support: [f64; 4],
    rank: f64,
}

fn best_candidate(work: &Gray) -> Option<Candidate> {
    let lo = work.percentile(0.01);
    let hi = work.percentile(0.99);
    if hi - lo < 8.0 {
        return None;
    }
    // Quadratic spacing: dense at the dark end, where a panel's black meets the bezel.
    // Plus fixed small steps above the darkest grey, for a panel black barely above it.
    let mut levels: Vec<f32> = (1..=LEVELS)
        .map(|i| lo + (hi - lo) * (i as f32 / (LEVELS + 1) as f32).powi(2))
        .chain(DARK_STEPS.iter().map(|s| lo + s))
        .filter(|l| *l < hi)
        .collect();
    levels.sort_by(f32::total_cmp);
    levels.dedup_by(|a, b| (*a - *b).abs() < 1.0);
    let (ww, wh) = (work.width as f64, work.height as f64);
    let mut quads: Vec<Quad> = Vec::new();
    for level in levels {
        for region in bright_regions(work, level) {
            let hull = convex_hull(&region);
            let perimeter: f64 = (0..hull.len())
                .map(|i| hull[i].dist(hull[(i + 1) % hull.len()]))
                .sum();
            let mut eps = (perimeter * 0.005).max(1.0);
            let mut poly = simplify_closed(&hull, eps);
            while poly.len() > 24 {
                eps *= 1.5;
                poly = simplify_closed(&hull, eps);
            }
            if let Some(q) = min_area_enclosing_quad(&poly) {
                if !quads.iter().any(|o| o.max_corner_distance(&q) < 1.5) {
                    quads.push(q);
                }
            }
        }
    }
    // A loose first cut, then the most promising few get their sides adjusted and are
    // judged strictly.
    let mut loose: Vec<Candidate> = quads
        .into_iter()
        .filter_map(|q| score(work, q, ww, wh, LOOSE))
        .collect();
    loose.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    let valid: Vec<Candidate> = loose
        .iter()
        .take(ADJUSTED_CANDIDATES)
        .filter_map(|c| score(work, adjust_sides(work, &c.quad), ww, wh, STRICT))
        .collect();
    // A screen contains its content, and the content can itself look like a bright
    // quadrilateral (a limb on a black background): only outermost candidates compete.
    valid
        .iter()
        .filter(|c| {
            !valid.iter().any(|o| {
                !std::ptr::eq(*c, o)
                    && o.quad.area() > c.quad.area()
                    && contains(&o.quad, &c.quad, 0.03 * o.quad.area().sqrt())
            })
        })
        .max_by(|a, b| a.rank.total_cmp(&b.rank))
        .cloned()
}

/// Every corner of `inner` lies inside `outer` (convex, clockwise) or within `tolerance` px
/// of it.
fn contains(outer: &Quad, inner: &Quad, tolerance: f64) -> bool {
    inner.0.iter().all(|p| {
        (0..4).all(|i| {
            let (a, b) = outer.side(i);
            let d = b - a;
            // Positive on the inner side of a clockwise (on screen) polygon.
            d.cross(*p - a) / d.norm().max(1e-9) >= -tolerance
        })
    })
}

/// Least edge support on the weakest side and on average.
#[derive(Debug, Clone, Copy)]
struct Bar {
    side: f64,
    mean: f64,
}

const LOOSE: Bar = Bar {
    side: 0.15,
    mean: 0.4,
};
const STRICT: Bar = Bar {
    side: MIN_SIDE_SUPPORT,
    mean: MIN_MEAN_SUPPORT,
};

fn score(work: &Gray, quad: Quad, ww: f64, wh: f64, bar: Bar) -> Option<Candidate> {
    if !quad.is_convex() || !inside(&quad, ww, wh) {
        return None;
    }
    let area_fraction = quad.area() / (ww * wh);
    if !(MIN_REGION_FRACTION..=0.98).contains(&area_fraction) {
        return None;
    }
    if quad
        .angles_deg()
        .iter()
        .any(|a| *a < ANGLE_RANGE_DEG.0 || *a > ANGLE_RANGE_DEG.1)
    {
        return None;
    }
    let side_support = edge_support(work, &quad);
    let support = side_support.iter().sum::<f64>() / 4.0;
    let weakest = side_support.iter().copied().fold(1.0, f64::min);
    if weakest < bar.side || support < bar.mean {
        return None;
    }
    // Prefer the larger region: the screen the user aimed at, not a sheet of paper beside it.
    let rank = support * area_fraction.sqrt();
    Some(Candidate {
        quad,
        support,
        side_support,
        rank,
    })
}

fn inside(quad: &Quad, w: f64, h: f64) -> bool {
    quad.0
        .iter()
        .all(|p| p.x >= 0.0 && p.y >= 0.0 && p.x <= w && p.y <= h)
}

/// Outward unit normal of side `i` of a clockwise (on screen) quad.
fn outward_normal(quad: &Quad, i: usize) -> Option<(Point, Point, Point)> {
    let (a, b) = quad.side(i);
    let d = b - a;
    let len = d.norm();
    if len < 1e-9 {
        return None;
    }
    let t = d.scale(1.0 / len);
    // Clockwise on screen: the outside is to the left of the direction of travel.
    Some((a, t, Point::new(t.y, -t.x)))
}

/// Share of points along each side where the inside is brighter than the outside.
fn edge_support(work: &Gray, quad: &Quad) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let (a, b) = quad.side(i);
        *slot = segment_support(work, a, b).hits;
    }
    out
}

/// Edge support of a segment.
#[derive(Debug, Clone, Copy)]
struct Support {
    /// Share of sample points with the inside at least [`SUPPORT_CONTRAST`] brighter.
    hits: f64,
    /// Mean inside-minus-outside difference clamped to 0..20 (to break ties between lines).
    contrast: f64,
    /// Share of sample points with the outside at least [`SUPPORT_CONTRAST`] brighter.
    reversed: f64,
}

/// Edge support of the segment `a → b` (clockwise on screen, so the outside is on its left).
fn segment_support(work: &Gray, a: Point, b: Point) -> Support {
    let (ww, wh) = (work.width as f64, work.height as f64);
    let d = (0.008 * ww.hypot(wh)).clamp(1.5, 4.0);
    let len = a.dist(b);
    if len < 1e-9 {
        return Support {
            hits: 0.0,
            contrast: 0.0,
            reversed: 0.0,
        };
    }
    let t = (b - a).scale(1.0 / len);
    let n = Point::new(t.y, -t.x);
    let (mut hits, mut reversed, mut sum) = (0usize, 0usize, 0.0f64);
    for s in 0..SUPPORT_SAMPLES {
        let p = a + t.scale(len * (s as f64 + 0.5) / SUPPORT_SAMPLES as f64);
        let pin = p - n.scale(d);
        let pout = p + n.scale(d);
        if pout.x < 0.0 || pout.y < 0.0 || pout.x > ww || pout.y > wh {
            continue;
        }
        let diff = work.sample(pin.x, pin.y) - work.sample(pout.x, pout.y);
        if diff >= SUPPORT_CONTRAST {
            hits += 1;
        } else if -diff >= SUPPORT_CONTRAST {
            reversed += 1;
        }
        sum += diff.clamp(0.0, 20.0) as f64;
    }
    let n = SUPPORT_SAMPLES as f64;
    Support {
        hits: hits as f64 / n,
        contrast: sum / n,
        reversed: reversed as f64 / n,
    }
}

/// Moves each side outward onto the outermost well-supported line, ends shifted
/// independently along the side's normal by up to a fifth of the quad's size. Where the
/// panel's black meets a dark bezel, the brightest region stops at the radiograph's content
/// (a body outline) and a side settles there; the screen's own faint edge lies further out.
/// Only outward: inside the screen, content edges are as well supported as the screen's.
/// Two rounds, since each move changes the neighbours' ends.
fn adjust_sides(work: &Gray, quad: &Quad) -> Quad {
    const GOOD: f64 = 0.8;
    let mut q = *quad;
    let reach = 0.2 * q.area().max(0.0).sqrt();
    let offsets: Vec<f64> = (-1..=(reach / 2.0).ceil() as i32)
        .map(|i| i as f64 * 2.0)
        .collect();
    for _ in 0..2 {
        for i in 0..4 {
            let (a, b) = q.side(i);
            let (Some(prev), Some(next)) = (
                Line::through(q.side((i + 3) % 4).0, q.side((i + 3) % 4).1),
                Line::through(q.side((i + 1) % 4).0, q.side((i + 1) % 4).1),
            ) else {
                continue;
            };
            let len = a.dist(b);
            if len < 1e-9 {
                continue;
            }
            let t = (b - a).scale(1.0 / len);
            let n = Point::new(t.y, -t.x);
            let ends = |da: f64, db: f64| -> Option<(Point, Point)> {
                let line = Line::through(a + n.scale(da), b + n.scale(db))?;
                Some((prev.intersect(&line)?, line.intersect(&next)?))
            };
            // (outwardness, contrast, da, db) of a line with good support.
            let judge = |da: f64, db: f64| -> Option<(f64, f64, f64, f64)> {
                let (p, r) = ends(da, db)?;
                let sup = segment_support(work, p, r);
                (sup.hits >= GOOD).then_some(((da + db).round(), sup.contrast, da, db))
            };
            // Moving out must not cross a dark-inside edge: that is the bezel meeting a
            // brighter desk or paper, beyond which lies no screen.
            let clear = |da: f64, db: f64| {
                let steps = (da.abs().max(db.abs()) / 1.5).ceil() as usize;
                (1..steps).all(|k| {
                    let f = k as f64 / steps as f64;
                    ends(f * da, f * db)
                        .is_some_and(|(p, r)| segment_support(work, p, r).reversed < 0.25)
                })
            };
            let mut supported: Vec<(f64, f64, f64, f64)> = offsets
                .iter()
                .flat_map(|&da| offsets.iter().map(move |&db| (da, db)))
                .filter_map(|(da, db)| judge(da, db))
                .collect();
            supported.sort_by(|x, y| y.0.total_cmp(&x.0).then(y.1.total_cmp(&x.1)));
            let Some(&(_, _, ca, cb)) = supported.iter().find(|c| clear(c.2, c.3)) else {
                continue;
            };
            // The outermost supported line can sit up to the sampling distance outside the
            // edge; centre it on the edge, where the contrast across it peaks.
            let fine: Vec<f64> = (-8..=2).map(|i| i as f64 * 0.5).collect();
            let mut best: Option<(f64, f64, f64, f64)> = None;
            for &fa in &fine {
                for &fb in &fine {
                    if let Some(c) = judge(ca + fa, cb + fb) {
                        if best.is_none_or(|b| c.1 > b.1) {
                            best = Some(c);
                        }
                    }
                }
            }
            if let Some((p, r)) = best.and_then(|(_, _, da, db)| ends(da, db)) {
                let mut corners = q.0;
                corners[i] = p;
                corners[(i + 1) % 4] = r;
                let moved = Quad(corners);
                if moved.is_convex() {
                    q = moved;
                }
            }
        }
    }
    q
}

/// Outlines (row-extreme points, continuous coordinates) of the 4-connected regions brighter
/// than `level` that cover at least [`MIN_REGION_FRACTION`] of the image.
fn bright_regions(work: &Gray, level: f32) -> Vec<Vec<Point>> {
    let (w, h) = (work.width, work.height);
    struct Run {
        y: usize,
        x0: usize,
        x1: usize,
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut prev = 0..0;
    for y in 0..h {
        let row = &work.data[y * w..(y + 1) * w];
        let start = runs.len();
        let mut x = 0;
        while x < w {
            if row[x] > level {
                let x0 = x;
                while x < w && row[x] > level {
                    x += 1;
                }
                runs.push(Run { y, x0, x1: x });
                parent.push(runs.len() - 1);
            } else {
                x += 1;
            }
        }
        let cur = start..runs.len();
        // Join runs of this row with overlapping runs of the previous one.
        let (mut i, mut j) = (prev.start, cur.start);
        while i < prev.end && j < cur.end {
            if runs[i].x0 < runs[j].x1 && runs[j].x0 < runs[i].x1 {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            }
            if runs[i].x1 < runs[j].x1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        prev = cur;
    }
    let mut area = vec![0usize; runs.len()];
    for (r, run) in runs.iter().enumerate() {
        let root = find(&mut parent, r);
        area[root] += run.x1 - run.x0;
    }
    let min_area = (MIN_REGION_FRACTION * (w * h) as f64) as usize;
    let big: Vec<usize> = (0..runs.len())
        .filter(|&r| parent[r] == r && area[r] >= min_area.max(1))
        .collect();
    big.into_iter()
        .map(|root| {
            let mut extremes: Vec<Option<(usize, usize)>> = vec![None; h];
            for (r, run) in runs.iter().enumerate() {
                if find(&mut parent, r) == root {
                    let e = extremes[run.y].get_or_insert((run.x0, run.x1));
                    e.0 = e.0.min(run.x0);
                    e.1 = e.1.max(run.x1);
                }
            }
            let mut pts = Vec::new();
            for (y, e) in extremes.iter().enumerate() {
                if let Some((x0, x1)) = e {
                    for (x, yy) in [(*x0, y), (*x0, y + 1), (*x1, y), (*x1, y + 1)] {
                        pts.push(Point::new(x as f64, yy as f64));
                    }
                }
            }
            pts
        })
        .collect()
}

struct Refined {
    quad: Option<Quad>,
    /// A side's edge points do not lie on a line: the outline is curved, not a screen.
    curved: bool,
    sides: usize,
    blur: Option<f64>,
}

/// Moves each side onto the steepest brightness fall across it, at full resolution.
fn refine(photo: &RgbImage, coarse: &Quad, k: f64) -> Refined {
    let reach = 3.0 * k + 3.0;
    let blur_half = (6.0 * k).max(12.0);
    let mut lines: [Option<Line>; 4] = [None; 4];
    let mut blurs: Vec<f64> = Vec::new();
    let mut sides = 0;
    let mut curved = false;
    for (i, slot) in lines.iter_mut().enumerate() {
        let Some((a, t, n)) = outward_normal(coarse, i) else {
            continue;
        };
        let len = coarse.side(i).0.dist(coarse.side(i).1);
        let mut points = Vec::new();
        for s in 0..REFINE_SAMPLES {
            let along = len * (0.08 + 0.84 * (s as f64 + 0.5) / REFINE_SAMPLES as f64);
            let base = a + t.scale(along);
            if let Some(offset) = profile_edge(photo, base, t, n, reach) {
                points.push(base + n.scale(offset));
            }
        }
        if points.len() < REFINE_SAMPLES / 4 {
            continue;
        }
        let Some(line) = trimmed_fit(&points) else {
            continue;
        };
        let mut inliers = 0;
        for p in &points {
            if line.distance(*p) < 1.0 + 0.5 * k {
                blurs.extend(edge_blur(photo, *p, t, n, blur_half));
                inliers += 1;
            }
        }
        if (inliers as f64) < MIN_STRAIGHT * points.len() as f64 {
            curved = true;
        }
        *slot = Some(line);
        sides += 1;
    }
    let blur = if blurs.len() >= 12 {
        blurs.sort_by(f64::total_cmp);
        Some(blurs[blurs.len() / 2])
    } else {
        None
    };
    // Sides without their own fit keep the coarse line.
    let lines: Vec<Line> = (0..4)
        .filter_map(|i| lines[i].or_else(|| Line::through(coarse.side(i).0, coarse.side(i).1)))
        .collect();
    if lines.len() < 4 || sides == 0 {
        return Refined {
            quad: None,
            curved,
            sides: 0,
            blur,
        };
    }
    let mut corners = [Point::new(0.0, 0.0); 4];
    for (q, corner) in corners.iter_mut().enumerate() {
        // Corner q lies between side q-1 and side q.
        match lines[(q + 3) % 4].intersect(&lines[q]) {
            Some(p) => *corner = p,
            None => {
                return Refined {
                    quad: None,
                    curved,
                    sides: 0,
                    blur,
                }
            }
        }
    }
    let quad = Quad(corners);
    // A refinement that wanders further than its search reach found something else.
    if !quad.is_convex() || quad.max_corner_distance(coarse) > 3.0 * reach {
        return Refined {
            quad: None,
            curved,
            sides: 0,
            blur,
        };
    }
    Refined {
        quad: Some(quad),
        curved,
        sides,
        blur,
    }
}

/// The steepest bright-to-dark fall going outward along `n` within `±reach` of `base`,
/// averaging five parallel profiles against noise.
fn profile_edge(photo: &RgbImage, base: Point, t: Point, n: Point, reach: f64) -> Option<f64> {
    const STEP: f64 = 0.5;
    let count = (2.0 * reach / STEP) as usize + 1;
    let mut profile = Vec::with_capacity(count);
    for s in 0..count {
        let off = -reach + s as f64 * STEP;
        let mut v = 0.0;
        for tau in [-2.0, -1.0, 0.0, 1.0, 2.0] {
            let p = base + n.scale(off) + t.scale(tau);
            v += sample_luma(photo, p.x, p.y);
        }
        profile.push(v / 5.0);
    }
    // Smooth along the profile (σ = 1 px = 2 steps), then differentiate.
    let smooth = smooth_profile(&profile, 2.0);
    let mut best = (0usize, 0.0f32);
    for s in 1..count - 1 {
        let drop = (smooth[s - 1] - smooth[s + 1]) / (2.0 * STEP as f32);
        if drop > best.1 {
            best = (s, drop);
        }
    }
    let (s, slope) = best;
    if s == 0 || slope < 0.8 {
        return None;
    }
    // Typical slope magnitude: a clear edge stands well above it.
    let mut mags: Vec<f32> = (1..count - 1)
        .map(|i| ((smooth[i - 1] - smooth[i + 1]) / (2.0 * STEP as f32)).abs())
        .collect();
    mags.sort_by(f32::total_cmp);
    if slope < 3.0 * mags[mags.len() / 2] {
        return None;
    }
    let d = |i: usize| (smooth[i - 1] - smooth[i + 1]) as f64;
    let mut frac = 0.0;
    if s >= 2 && s + 2 < count {
        let (l, c, r) = (d(s - 1), d(s), d(s + 1));
        let den = l - 2.0 * c + r;
        if den.abs() > 1e-9 {
            frac = (0.5 * (l - r) / den).clamp(-0.5, 0.5);
        }
    }
    Some(-reach + (s as f64 + frac) * STEP)
}

/// Gaussian σ of the edge through `at` (on the fitted side): from a profile `±half` px long,
/// the edge height between its plateaus over its steepest slope times √(2π). `None` when the
/// edge is too low to measure.
fn edge_blur(photo: &RgbImage, at: Point, t: Point, n: Point, half: f64) -> Option<f64> {
    const STEP: f64 = 0.5;
    let count = (2.0 * half / STEP) as usize + 1;
    let profile: Vec<f32> = (0..count)
        .map(|s| {
            let off = -half + s as f64 * STEP;
            [-2.0, -1.0, 0.0, 1.0, 2.0]
                .iter()
                .map(|tau| {
                    let p = at + n.scale(off) + t.scale(*tau);
                    sample_luma(photo, p.x, p.y)
                })
                .sum::<f32>()
                / 5.0
        })
        .collect();
    let smooth = smooth_profile(&profile, 2.0);
    // Steepest fall within 3 px of the fitted edge.
    let centre = count / 2;
    let near = (3.0 / STEP) as usize;
    let slope = (centre.saturating_sub(near).max(1)..(centre + near).min(count - 1))
        .map(|i| (smooth[i - 1] - smooth[i + 1]) / (2.0 * STEP as f32))
        .fold(0.0f32, f32::max) as f64;
    let plateau = (count / 7).max(1);
    let inner = profile[..plateau].iter().sum::<f32>() / plateau as f32;
    let outer = profile[count - plateau..].iter().sum::<f32>() / plateau as f32;
    let height = (inner - outer) as f64;
    if height < 8.0 || slope <= 0.0 {
        return None;
    }
    let s = height / (slope * (2.0 * std::f64::consts::PI).sqrt());
    // The profile smoothing (σ = 1 px) adds in quadrature.
    Some((s * s - 1.0).max(0.0).sqrt())
}

fn smooth_profile(v: &[f32], sigma_steps: f32) -> Vec<f32> {
    let kernel = super::raster::gaussian_kernel(sigma_steps);
    let r = kernel.len() / 2;
    let n = v.len();
    (0..n)
        .map(|i| {
            kernel
                .iter()
                .enumerate()
                .map(|(t, kv)| kv * v[(i + t).saturating_sub(r).min(n - 1)])
                .sum()
        })
        .collect()
}

/// Line fit that drops the points furthest from a first fit (a quarter, or all beyond
/// 3× the median residual) and fits again.
fn trimmed_fit(points: &[Point]) -> Option<Line> {
    let first = Line::fit(points)?;
    let mut res: Vec<f64> = points.iter().map(|p| first.distance(*p)).collect();
    res.sort_by(f64::total_cmp);
    let median = res[res.len() / 2];
    let cut = res[(res.len() * 3) / 4].min(3.0 * median.max(0.25));
    let kept: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| first.distance(*p) <= cut)
        .collect();
    if kept.len() < 4 {
        return Some(first);
    }
    let second = Line::fit(&kept)?;
    let mut res: Vec<f64> = points.iter().map(|p| second.distance(*p)).collect();
    res.sort_by(f64::total_cmp);
    let cut = 3.0 * res[res.len() / 2].max(0.25);
    let kept: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| second.distance(*p) <= cut)
        .collect();
    if kept.len() < 4 {
        return Some(second);
    }
    Line::fit(&kept)
}
