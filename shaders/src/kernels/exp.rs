//! `e^x` for the CPU path's softmaxes and GELU, written so the compiler vectorizes the loops
//! that call it (the C library's `expf` is one call per element), with row reductions in
//! eight fixed lanes. Every operation is plain IEEE arithmetic in a fixed order, so results
//! are the same bits on every machine and run.

/// Partial sums and maxima of the CPU path's row reductions (here and attention's dot
/// products).
pub(crate) const LANES: usize = 8;

/// Adding then subtracting `1.5 · 2^23` rounds an `f32` of magnitude below `2^22` to the
/// nearest integer, without a rounding instruction SSE2 lacks.
const ROUND: f32 = 12_582_912.0;

/// `e^x` within 2 ulp for `x` in `[−87, 88]` (Cody–Waite range reduction by `ln 2`, then the
/// Cephes `expf` polynomial). Below −87 it returns about `1.6e−38` rather than a subnormal or
/// zero, above 88 about `1.65e38`; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    // n ∈ [−126, 127]: a normal power of two.
    let scale = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    (p * r * r + r + 1.0) * scale
}

/// The largest element of `row` (`f32::MIN` when it is empty).
pub(crate) fn max(row: &[f32]) -> f32 {
    let (chunks, rest) = row.as_chunks::<LANES>();
    let mut acc = [f32::MIN; LANES];
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    rest.iter().chain(&acc).fold(f32::MIN, |m, &v| m.max(v))
}

/// `Σ e^(v − shift)` over `row`.
pub(crate) fn sum_exp(row: &[f32], shift: f32) -> f32 {
    let (chunks, rest) = row.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp(c[l] - shift);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| exp(v - shift)).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64's `exp` over the whole useful range, in steps that hit every binade.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = -87.0f32;
        let mut worst = 0.0f64;
        while x <= 88.0 {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.001_3;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) > 0.0);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn reductions_match_plain_loops() {
        for n in [0usize, 1, 7, 8, 9, 33, 4096] {
            let row: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let m = max(&row);
            assert_eq!(m, row.iter().fold(f32::MIN, |a, &b| a.max(b)));
            let want: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
            let got = f64::from(sum_exp(&row, m));
            assert!(
                (got - want).abs() <= 1e-5 * want.max(1.0),
                "{n}: {got} vs {want}"
            );
        }
    }
}
