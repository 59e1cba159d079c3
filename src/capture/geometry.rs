//! Plane geometry for capture: points, quadrilaterals in TL,TR,BR,BL order, homographies,
//! convex hulls, polygon simplification and the minimum-area quadrilateral around a hull.
//!
//! Coordinates are continuous pixel coordinates: pixel `(i, j)` covers `[i, i+1) × [j, j+1)`,
//! so its centre is `(i + 0.5, j + 0.5)` and an image of width `w` spans `0..w`.

use serde::Serialize;

/// A point in pixel space (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const fn new(x: f64, y: f64) -> Point {
        Point { x, y }
    }

    pub fn scale(self, k: f64) -> Point {
        Point::new(self.x * k, self.y * k)
    }

    pub fn dot(self, o: Point) -> f64 {
        self.x * o.x + self.y * o.y
    }

    /// z component of the 3-D cross product.
    pub fn cross(self, o: Point) -> f64 {
        self.x * o.y - self.y * o.x
    }

    pub fn norm(self) -> f64 {
        self.x.hypot(self.y)
    }

    pub fn dist(self, o: Point) -> f64 {
        (self - o).norm()
    }
}

impl std::ops::Add for Point {
    type Output = Point;

    fn add(self, o: Point) -> Point {
        Point::new(self.x + o.x, self.y + o.y)
    }
}

impl std::ops::Sub for Point {
    type Output = Point;

    fn sub(self, o: Point) -> Point {
        Point::new(self.x - o.x, self.y - o.y)
    }
}

/// Four corners in the order top-left, top-right, bottom-right, bottom-left (clockwise on
/// screen, since y points down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quad(pub [Point; 4]);

impl Quad {
    /// Orders any four points TL,TR,BR,BL: clockwise around their centroid, starting from
    /// the point nearest the image's top-left (smallest `x + y`). A quad rotated by more
    /// than 45° therefore starts at another physical corner: the photo's orientation wins.
    pub fn ordered(points: [Point; 4]) -> Quad {
        let c = centroid(&points);
        let mut pts = points;
        // atan2 grows clockwise on screen (y down).
        pts.sort_by(|a, b| {
            let aa = (a.y - c.y).atan2(a.x - c.x);
            let ab = (b.y - c.y).atan2(b.x - c.x);
            aa.total_cmp(&ab)
        });
        let start = (0..4)
            .min_by(|&i, &j| (pts[i].x + pts[i].y).total_cmp(&(pts[j].x + pts[j].y)))
            .unwrap_or(0);
        Quad([
            pts[start],
            pts[(start + 1) % 4],
            pts[(start + 2) % 4],
            pts[(start + 3) % 4],
        ])
    }

    pub fn corners(&self) -> &[Point; 4] {
        &self.0
    }

    /// Side `i` runs from corner `i` to corner `i + 1` (top, right, bottom, left).
    pub fn side(&self, i: usize) -> (Point, Point) {
        (self.0[i % 4], self.0[(i + 1) % 4])
    }

    /// Shoelace area (positive for TL,TR,BR,BL on screen).
    pub fn area(&self) -> f64 {
        polygon_area(&self.0)
    }

    /// Convex, non-degenerate and in clockwise screen order.
    pub fn is_convex(&self) -> bool {
        (0..4).all(|i| {
            let a = self.0[i];
            let b = self.0[(i + 1) % 4];
            let c = self.0[(i + 2) % 4];
            (b - a).cross(c - b) > 1e-9
        })
    }

    /// Interior angle at each corner, in degrees.
    pub fn angles_deg(&self) -> [f64; 4] {
        let mut out = [0.0; 4];
        for (i, angle) in out.iter_mut().enumerate() {
            let p = self.0[i];
            let prev = self.0[(i + 3) % 4] - p;
            let next = self.0[(i + 1) % 4] - p;
            let cos = prev.dot(next) / (prev.norm() * next.norm()).max(1e-12);
            *angle = cos.clamp(-1.0, 1.0).acos().to_degrees();
        }
        out
    }

    /// Output size of a rectification: the mean lengths of opposite sides, truncated (the
    /// vendor document's example: corners → 346 × 330).
    pub fn rectified_size(&self) -> (f64, f64) {
        let [tl, tr, br, bl] = self.0;
        let w = (tl.dist(tr) + bl.dist(br)) / 2.0;
        let h = (tl.dist(bl) + tr.dist(br)) / 2.0;
        (w, h)
    }

    pub fn scaled(&self, k: f64) -> Quad {
        Quad(self.0.map(|p| p.scale(k)))
    }

    /// Largest distance between corresponding corners.
    pub fn max_corner_distance(&self, other: &Quad) -> f64 {
        (0..4)
            .map(|i| self.0[i].dist(other.0[i]))
            .fold(0.0, f64::max)
    }
}

pub fn centroid(points: &[Point]) -> Point {
    let n = points.len().max(1) as f64;
    let s = points.iter().fold(Point::new(0.0, 0.0), |acc, p| acc + *p);
    s.scale(1.0 / n)
}

pub fn polygon_area(points: &[Point]) -> f64 {
    let n = points.len();
    let mut s = 0.0;
    for i in 0..n {
        s += points[i].cross(points[(i + 1) % n]);
    }
    s / 2.0
}

/// A projective transform `p' = H p` (row-major 3×3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    /// The homography taking `from[i]` to `to[i]` for the four pairs, or `None` when three of
    /// the points are collinear. Solved as the 8×8 DLT system with `h33 = 1` after
    /// normalising both point sets (centroid at 0, mean distance √2) for conditioning.
    pub fn from_points(from: &[Point; 4], to: &[Point; 4]) -> Option<Homography> {
        let (nf, tf) = normalise(from);
        let (nt, tt) = normalise(to);
        let mut a = [[0.0f64; 9]; 8];
        for i in 0..4 {
            let (x, y) = (nf[i].x, nf[i].y);
            let (u, v) = (nt[i].x, nt[i].y);
            a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
            a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
        }
        let h = solve8(a)?;
        let hn = Homography([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0]);
        // H = Tt⁻¹ · Hn · Tf
        let h = tt.inverse()?.then(&hn).then(&tf);
        h.normalised()
    }

    /// `self` after `first`: applies `first`, then `self`.
    fn then(&self, first: &Homography) -> Homography {
        let a = &self.0;
        let b = &first.0;
        let mut m = [0.0; 9];
        for r in 0..3 {
            for c in 0..3 {
                m[r * 3 + c] = (0..3).map(|k| a[r * 3 + k] * b[k * 3 + c]).sum();
            }
        }
        Homography(m)
    }

    fn normalised(&self) -> Option<Homography> {
        let s = self.0[8];
        if s.abs() < 1e-15 || !self.0.iter().all(|v| v.is_finite()) {
            return None;
        }
        Some(Homography(self.0.map(|v| v / s)))
    }

    pub fn apply(&self, p: Point) -> Point {
        let h = &self.0;
        let w = h[6] * p.x + h[7] * p.y + h[8];
        Point::new(
            (h[0] * p.x + h[1] * p.y + h[2]) / w,
            (h[3] * p.x + h[4] * p.y + h[5]) / w,
        )
    }

    pub fn inverse(&self) -> Option<Homography> {
        let m = &self.0;
        let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
            + m[2] * (m[3] * m[7] - m[4] * m[6]);
        if det.abs() < 1e-15 {
            return None;
        }
        let inv = [
            (m[4] * m[8] - m[5] * m[7]) / det,
            (m[2] * m[7] - m[1] * m[8]) / det,
            (m[1] * m[5] - m[2] * m[4]) / det,
            (m[5] * m[6] - m[3] * m[8]) / det,
            (m[0] * m[8] - m[2] * m[6]) / det,
            (m[2] * m[3] - m[0] * m[5]) / det,
            (m[3] * m[7] - m[4] * m[6]) / det,
            (m[1] * m[6] - m[0] * m[7]) / det,
            (m[0] * m[4] - m[1] * m[3]) / det,
        ];
        Homography(inv).normalised()
    }
}

/// Translates to the centroid and scales to mean distance √2; returns the points and the
/// transform that did it.
fn normalise(points: &[Point; 4]) -> ([Point; 4], Homography) {
    let c = centroid(points);
    let mean = points.iter().map(|p| p.dist(c)).sum::<f64>() / 4.0;
    let s = if mean > 1e-12 {
        std::f64::consts::SQRT_2 / mean
    } else {
        1.0
    };
    let t = Homography([s, 0.0, -s * c.x, 0.0, s, -s * c.y, 0.0, 0.0, 1.0]);
    (points.map(|p| t.apply(p)), t)
}

/// Gaussian elimination with partial pivoting on an 8×8 system (last column: right side).
fn solve8(mut a: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        for row in 0..8 {
            if row != col {
                let f = a[row][col] / a[col][col];
                if f != 0.0 {
                    let pivot_row = a[col];
                    for (v, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                        *v -= f * p;
                    }
                }
            }
        }
    }
    let mut x = [0.0; 8];
    for i in 0..8 {
        x[i] = a[i][8] / a[i][i];
    }
    Some(x)
}

/// Convex hull (Andrew's monotone chain), clockwise on screen, no collinear points.
pub fn convex_hull(points: &[Point]) -> Vec<Point> {
    let mut pts: Vec<Point> = points.to_vec();
    pts.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.y.total_cmp(&b.y)));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let turn = |o: Point, a: Point, b: Point| (a - o).cross(b - o);
    let mut lower: Vec<Point> = Vec::new();
    for &p in &pts {
        while lower.len() >= 2 && turn(lower[lower.len() - 2], lower[lower.len() - 1], p) <= 0.0 {
            lower.pop();
        }
        lower.push(p);
    }
    let mut upper: Vec<Point> = Vec::new();
    for &p in pts.iter().rev() {
        while upper.len() >= 2 && turn(upper[upper.len() - 2], upper[upper.len() - 1], p) <= 0.0 {
            upper.pop();
        }
        upper.push(p);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    // Counter-clockwise in maths axes is clockwise on screen (y down): keep it.
    lower
}

/// Douglas–Peucker simplification of a closed polygon: keeps the vertices that deviate more
/// than `epsilon` from the simplified outline. Starts from the two mutually farthest-apart
/// vertices so the result does not depend on where the ring was cut.
pub fn simplify_closed(poly: &[Point], epsilon: f64) -> Vec<Point> {
    let n = poly.len();
    if n <= 4 {
        return poly.to_vec();
    }
    let a = 0;
    let b = (0..n)
        .max_by(|&i, &j| poly[a].dist(poly[i]).total_cmp(&poly[a].dist(poly[j])))
        .unwrap_or(n / 2);
    let a = (0..n)
        .max_by(|&i, &j| poly[b].dist(poly[i]).total_cmp(&poly[b].dist(poly[j])))
        .unwrap_or(0);
    let (a, b) = (a.min(b), a.max(b));
    if a == b {
        return poly.to_vec();
    }
    let mut keep = vec![false; n];
    keep[a] = true;
    keep[b] = true;
    let first: Vec<usize> = (a..=b).collect();
    let second: Vec<usize> = (b..n).chain(0..=a).collect();
    for chain in [first, second] {
        dp_mark(poly, &chain, epsilon, &mut keep);
    }
    (0..n).filter(|&i| keep[i]).map(|i| poly[i]).collect()
}

fn dp_mark(poly: &[Point], chain: &[usize], epsilon: f64, keep: &mut [bool]) {
    if chain.len() < 3 {
        return;
    }
    let p0 = poly[chain[0]];
    let p1 = poly[chain[chain.len() - 1]];
    let (mut worst, mut at) = (0.0, 0);
    for (k, &i) in chain.iter().enumerate().take(chain.len() - 1).skip(1) {
        let d = point_segment_distance(poly[i], p0, p1);
        if d > worst {
            worst = d;
            at = k;
        }
    }
    if worst > epsilon {
        keep[chain[at]] = true;
        dp_mark(poly, &chain[..=at], epsilon, keep);
        dp_mark(poly, &chain[at..], epsilon, keep);
    }
}

pub fn point_segment_distance(p: Point, a: Point, b: Point) -> f64 {
    let ab = b - a;
    let len2 = ab.dot(ab);
    if len2 < 1e-18 {
        return p.dist(a);
    }
    let t = ((p - a).dot(ab) / len2).clamp(0.0, 1.0);
    p.dist(a + ab.scale(t))
}

/// A line `n · p = c` with unit normal `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub n: Point,
    pub c: f64,
}

impl Line {
    pub fn through(a: Point, b: Point) -> Option<Line> {
        let d = b - a;
        let len = d.norm();
        if len < 1e-12 {
            return None;
        }
        let n = Point::new(-d.y / len, d.x / len);
        Some(Line { n, c: n.dot(a) })
    }

    /// Total-least-squares fit (principal axis of the points).
    pub fn fit(points: &[Point]) -> Option<Line> {
        if points.len() < 2 {
            return None;
        }
        let c = centroid(points);
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for p in points {
            let d = *p - c;
            sxx += d.x * d.x;
            sxy += d.x * d.y;
            syy += d.y * d.y;
        }
        // Direction of largest spread: angle of the principal axis.
        let theta = 0.5 * (2.0 * sxy).atan2(sxx - syy);
        let dir = Point::new(theta.cos(), theta.sin());
        let n = Point::new(-dir.y, dir.x);
        if !(n.x.is_finite() && n.y.is_finite()) {
            return None;
        }
        Some(Line { n, c: n.dot(c) })
    }

    pub fn distance(&self, p: Point) -> f64 {
        (self.n.dot(p) - self.c).abs()
    }

    pub fn intersect(&self, o: &Line) -> Option<Point> {
        let det = self.n.x * o.n.y - self.n.y * o.n.x;
        if det.abs() < 1e-9 {
            return None;
        }
        Some(Point::new(
            (self.c * o.n.y - self.n.y * o.c) / det,
            (self.n.x * o.c - self.c * o.n.x) / det,
        ))
    }
}

/// The smallest-area quadrilateral whose four sides lie on edges of the convex polygon
/// `hull` (clockwise on screen). Each hull edge's line is a supporting line, so every such
/// quadrilateral encloses the hull; where a corner of the true outline is missing (dark image
/// content there), the sides still extend to meet where it was. `None` for fewer than four
/// edges or when no choice closes.
pub fn min_area_enclosing_quad(hull: &[Point]) -> Option<Quad> {
    let n = hull.len();
    if n < 4 {
        return None;
    }
    let lines: Vec<Option<Line>> = (0..n)
        .map(|i| Line::through(hull[i], hull[(i + 1) % n]))
        .collect();
    let dirs: Vec<Point> = (0..n).map(|i| hull[(i + 1) % n] - hull[i]).collect();
    // Clockwise turn from edge i to edge j (screen coordinates), in (0, 2π).
    let turn = |i: usize, j: usize| {
        let a = dirs[i].y.atan2(dirs[i].x);
        let b = dirs[j].y.atan2(dirs[j].x);
        (b - a).rem_euclid(std::f64::consts::TAU)
    };
    let mut best: Option<(f64, Quad)> = None;
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                for l in k + 1..n {
                    let idx = [i, j, k, l];
                    // Each consecutive pair must turn by less than 180° for the sides to meet.
                    if (0..4).any(|q| turn(idx[q], idx[(q + 1) % 4]) >= std::f64::consts::PI - 1e-6)
                    {
                        continue;
                    }
                    let mut corners = [Point::new(0.0, 0.0); 4];
                    let mut ok = true;
                    for q in 0..4 {
                        let (Some(a), Some(b)) = (lines[idx[q]], lines[idx[(q + 1) % 4]]) else {
                            ok = false;
                            break;
                        };
                        match a.intersect(&b) {
                            Some(p) => corners[(q + 1) % 4] = p,
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok {
                        continue;
                    }
                    let area = polygon_area(&corners).abs();
                    if best.as_ref().is_none_or(|(a, _)| area < *a) {
                        best = Some((area, Quad::ordered(corners)));
                    }
                }
            }
        }
    }
    best.map(|(_, q)| q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: f64, y: f64) -> Point {
        Point::new(x, y)
    }

    #[test]
    fn homography_round_trip() {
        let src = [p(0.0, 0.0), p(512.0, 0.0), p(512.0, 512.0), p(0.0, 512.0)];
        let dst = [
            p(137.48, 100.30),
            p(490.50, 81.32),
            p(495.35, 421.38),
            p(154.89, 421.57),
        ];
        let h = Homography::from_points(&src, &dst).expect("homography");
        for i in 0..4 {
            assert!(h.apply(src[i]).dist(dst[i]) < 1e-9, "corner {i}");
        }
        let inv = h.inverse().expect("inverse");
        for q in [p(10.0, 20.0), p(256.0, 256.0), p(500.0, 3.0)] {
            assert!(inv.apply(h.apply(q)).dist(q) < 1e-9);
        }
        // Projective, not affine: the centre does not map to the mean of the corners.
        let centre = h.apply(p(256.0, 256.0));
        assert!(centre.dist(centroid(&dst)) > 0.5);
    }

    #[test]
    fn homography_refuses_collinear_points() {
        let src = [p(0.0, 0.0), p(1.0, 0.0), p(2.0, 0.0), p(0.0, 1.0)];
        let dst = [p(0.0, 0.0), p(1.0, 0.0), p(1.0, 1.0), p(0.0, 1.0)];
        assert!(Homography::from_points(&src, &dst).is_none());
    }

    #[test]
    fn corners_are_ordered_tl_tr_br_bl_whatever_the_input_order() {
        let tl = p(137.48, 100.30);
        let tr = p(490.50, 81.32);
        let br = p(495.35, 421.38);
        let bl = p(154.89, 421.57);
        for perm in [
            [br, tl, bl, tr],
            [bl, br, tr, tl],
            [tr, bl, tl, br],
            [tl, tr, br, bl],
        ] {
            assert_eq!(Quad::ordered(perm).0, [tl, tr, br, bl]);
        }
        // Rotated by 30°: still starts at the corner nearest the top-left.
        let q = Quad::ordered([
            p(100.0, 50.0),
            p(187.0, 100.0),
            p(137.0, 187.0),
            p(50.0, 137.0),
        ]);
        assert_eq!(q.0[0], p(100.0, 50.0));
        assert!(q.is_convex());
    }

    #[test]
    fn rectified_size_matches_the_vendor_example() {
        let q = Quad([
            p(137.48, 100.30),
            p(490.50, 81.32),
            p(495.35, 421.38),
            p(154.89, 421.57),
        ]);
        let (w, h) = q.rectified_size();
        assert_eq!((w as u32, h as u32), (346, 330));
    }

    #[test]
    fn hull_and_min_quad_recover_a_square_with_cut_corners() {
        // Octagon: a 100×80 rectangle with two corners cut off.
        let pts = vec![
            p(10.0, 0.0),
            p(100.0, 0.0),
            p(100.0, 70.0),
            p(90.0, 80.0),
            p(0.0, 80.0),
            p(0.0, 10.0),
            p(50.0, 40.0),
        ];
        let hull = convex_hull(&pts);
        assert_eq!(hull.len(), 6);
        let q = min_area_enclosing_quad(&hull).expect("quad");
        let want = Quad([p(0.0, 0.0), p(100.0, 0.0), p(100.0, 80.0), p(0.0, 80.0)]);
        assert!(q.max_corner_distance(&want) < 1e-6, "{q:?}");
    }

    #[test]
    fn simplify_keeps_the_corners_of_a_noisy_rectangle() {
        let mut ring = Vec::new();
        for i in 0..50 {
            ring.push(p(i as f64 * 2.0, if i % 2 == 0 { 0.0 } else { 0.3 }));
        }
        for i in 0..40 {
            ring.push(p(100.0, i as f64 * 2.0));
        }
        for i in 0..50 {
            ring.push(p(100.0 - i as f64 * 2.0, 80.0));
        }
        for i in 0..40 {
            ring.push(p(0.0, 80.0 - i as f64 * 2.0));
        }
        let s = simplify_closed(&ring, 1.0);
        assert_eq!(s.len(), 4, "{s:?}");
    }

    #[test]
    fn line_fit_and_intersection() {
        let a = Line::fit(&[p(0.0, 1.0), p(1.0, 2.0), p(2.0, 3.0)]).expect("line");
        let b = Line::fit(&[p(0.0, 3.0), p(1.0, 2.0), p(2.0, 1.0)]).expect("line");
        let x = a.intersect(&b).expect("intersection");
        assert!(x.dist(p(1.0, 2.0)) < 1e-9);
        assert!(a.distance(p(0.0, 0.0)) > 0.7);
    }
}
