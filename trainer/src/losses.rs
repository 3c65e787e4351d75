//! The paper's training losses.
//!
//! - [`weighted_mse`] (Eq. 2): Σ wᵢ (yᵢ − ŷᵢ)² / Σ wᵢ — the regression loss.
//! - [`weighted_chi_square`] (Eq. 3): Σ wᵢ χ²(hᵢ, ĥᵢ) / Σ wᵢ with the chi-square distance
//!   χ²(h, ĥ) = ½ Σₖ (hₖ − ĥₖ)² / (hₖ + ĥₖ + ε) — the histogram loss. ε keeps bins that are
//!   empty in both histograms finite (their term is 0, and so is its gradient).
//! - [`weighted_emd`]: NIMA's earth mover's distance (r = 2) between the cumulative histograms, as
//!   an option to compare.
//!
//! With all weights 1 these are the unweighted losses of the NSWR baseline.

use burn::tensor::{Tensor, TensorData};

pub const CHI_SQUARE_EPSILON: f32 = 1e-8;

/// Eq. 2. `predicted`, `target`, `weights`: `[N]`. Returns a one-element tensor.
pub fn weighted_mse(predicted: Tensor<1>, target: Tensor<1>, weights: Tensor<1>) -> Tensor<1> {
    let total = weights.clone().sum();
    (predicted - target).square().mul(weights).sum().div(total)
}

/// χ²(h, ĥ) per row: `[N, B]` histograms → `[N]`.
pub fn chi_square(predicted: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let difference = (predicted.clone() - target.clone()).square();
    let denominator = (predicted + target).add_scalar(CHI_SQUARE_EPSILON);
    difference.div(denominator).sum_dim(1).squeeze_dim::<1>(1).mul_scalar(0.5)
}

/// Eq. 3. `predicted`, `target`: `[N, 10]` normalised histograms; `weights`: `[N]`.
pub fn weighted_chi_square(predicted: Tensor<2>, target: Tensor<2>, weights: Tensor<1>) -> Tensor<1> {
    let total = weights.clone().sum();
    chi_square(predicted, target).mul(weights).sum().div(total)
}

/// EMD (r = 2) per row: sqrt(mean_k (CDF_pred − CDF_target)²).
pub fn emd(predicted: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let bins = predicted.dims()[1];
    // Cumulative sums as a product with an upper-triangular matrix of ones.
    let upper: Vec<f32> = (0..bins * bins).map(|i| if i / bins <= i % bins { 1.0 } else { 0.0 }).collect();
    let upper = Tensor::<2>::from_data(TensorData::new(upper, [bins, bins]), &predicted.device());
    let cdf_difference = (predicted - target).matmul(upper);
    cdf_difference.square().mean_dim(1).squeeze_dim::<1>(1).sqrt()
}

pub fn weighted_emd(predicted: Tensor<2>, target: Tensor<2>, weights: Tensor<1>) -> Tensor<1> {
    let total = weights.clone().sum();
    emd(predicted, target).mul(weights).sum().div(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t1(values: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
    }

    fn t2(rows: &[[f32; 3]], device: &Device) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), device)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn weighted_mse_by_hand() {
        let d = Device::flex();
        // errors 1 and 2, weights 3 and 1: (3·1 + 1·4) / 4 = 1.75
        let loss = weighted_mse(t1(&[5.0, 7.0], &d), t1(&[4.0, 5.0], &d), t1(&[3.0, 1.0], &d));
        assert!((scalar(loss) - 1.75).abs() < 1e-6);
        // unit weights = plain MSE: (1 + 4) / 2
        let loss = weighted_mse(t1(&[5.0, 7.0], &d), t1(&[4.0, 5.0], &d), t1(&[1.0, 1.0], &d));
        assert!((scalar(loss) - 2.5).abs() < 1e-6);
    }

    #[test]
    fn weighted_chi_square_by_hand() {
        let d = Device::flex();
        let predicted = t2(&[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], &d);
        let target = t2(&[[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]], &d);
        // row 1: ½ (0.0625/0.75 + 0.0625/1.25 + 0) = 0.0666667; row 2: ½ (1 + 0 + 1) = 1
        let rows = chi_square(predicted.clone(), target.clone()).into_data().try_into_vec_as::<f32>().unwrap();
        assert!((rows[0] - 0.0666667).abs() < 1e-5 && (rows[1] - 1.0).abs() < 1e-5, "{rows:?}");
        // weights 3 and 1: (3·0.0666667 + 1) / 4 = 0.3
        let loss = weighted_chi_square(predicted, target, t1(&[3.0, 1.0], &d));
        assert!((scalar(loss) - 0.3).abs() < 1e-5);
    }

    #[test]
    fn emd_by_hand() {
        let d = Device::flex();
        // CDFs [1,1,1] vs [0,0,1]: differences 1,1,0 → sqrt(2/3)
        let rows = emd(t2(&[[1.0, 0.0, 0.0]], &d), t2(&[[0.0, 0.0, 1.0]], &d)).into_data().try_into_vec_as::<f32>().unwrap();
        assert!((rows[0] - (2.0f32 / 3.0).sqrt()).abs() < 1e-5);
    }

    #[test]
    fn gradients_are_finite_for_zero_count_bins() {
        let d = Device::flex().autodiff();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 3.0, -2.0], [1, 3]), &d).require_grad();
        let predicted = burn::tensor::activation::softmax(logits.clone(), 1);
        // Two empty bins in the target, one almost empty in the prediction.
        let target = t2(&[[0.0, 1.0, 0.0]], &d);
        let loss = weighted_chi_square(predicted, target, t1(&[2.0], &d));
        let grads = loss.backward();
        let g = logits.grad(&grads).unwrap().into_data().try_into_vec_as::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!(g.iter().any(|v| v.abs() > 0.0));
    }
}
