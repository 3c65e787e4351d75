//! `loupe-train train --closed-form`: fits a quadratic regression head on a frozen backbone exactly,
//! instead of by gradient descent.
//!
//! The head computes `c + w·x + Σ_k s_k (v_k·x)²`. Minimising the paper's weighted MSE (Eq. 2)
//! plus a ridge penalty over all degree-2 functions of `x` is a weighted kernel ridge regression
//! with the kernel `(1 + x·x')²`: solve `(K + λ W⁻¹) α = y − ȳ` (W: the sample weights,
//! normalised to mean 1; ȳ their weighted mean). The solution is
//! `ȳ + Σα + 2 (Σ α_i x_i)·x + xᵀ Q x` with `Q = Σ α_i x_i x_iᵀ`, and the head keeps Q's
//! [`QUADRATIC_RANK`] eigenpairs of largest magnitude as its squared projections.
//!
//! The linear algebra runs on the CPU in f64 through `faer`: the Gram matrix's lower triangle,
//! a Cholesky (LLᵀ) factorisation of the n x n system in place, and a symmetric
//! eigendecomposition of the d x d matrix Q.

use anyhow::{Result, anyhow, bail};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::cholesky::llt::factor::{LltError, cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::cholesky::llt::solve::solve_in_place_with_conj;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Conj, Mat, MatMut, MatRef, Par, Side};
use loupe::model::heads::{QUADRATIC_RANK, QuadraticLayers};

/// The n x n system needs n² doubles: beyond this many training images use gradient training.
pub const MAX_IMAGES: usize = 20_000;

/// Fits `layers` to `inputs` (the head's standardised inputs `x`, row-major `[n, d]`), the
/// labels' mean scores `y` and sample weights (positive), with ridge penalty `ridge`. Returns
/// the fitted head's weighted MSE on these images. The fit runs on the CPU whatever `device`
/// is; the layers keep the device they are on.
pub fn fit_quadratic_head(layers: &mut QuadraticLayers, inputs: &[f32], y: &[f32], weights: &[f32], ridge: f64, _device: &Device) -> Result<f64> {
    let n = y.len();
    if n == 0 || !inputs.len().is_multiple_of(n) || weights.len() != n {
        bail!("closed form: {} inputs for {n} labels and {} weights", inputs.len(), weights.len());
    }
    if n > MAX_IMAGES {
        bail!("the closed form solves an {n} x {n} system; above {MAX_IMAGES} training images train by gradient instead");
    }
    if !(ridge > 0.0 && ridge.is_finite()) {
        bail!("--ridge must be positive and finite, got {ridge}");
    }
    let d = inputs.len() / n;
    if d == 0 {
        bail!("closed form: no inputs per image");
    }
    if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
        bail!("closed form: input {} of image {} is {}", i % d, i / d, inputs[i]);
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        bail!("closed form: the label of image {i} is {}", y[i]);
    }
    if let Some(i) = weights.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        bail!("closed form: the sample weight of image {i} is {}; weights must be positive and finite", weights[i]);
    }
    let par = Par::rayon(0);
    let mean_weight = weights.iter().map(|&w| f64::from(w)).sum::<f64>() / n as f64;
    let w: Vec<f64> = weights.iter().map(|&v| f64::from(v) / mean_weight).collect();
    let y_mean = w.iter().zip(y).map(|(w, &y)| w * f64::from(y)).sum::<f64>() / n as f64;
    let x = Mat::<f64>::from_fn(n, d, |i, j| f64::from(inputs[i * d + j]));

    // The system's lower triangle: (1 + X Xᵀ)² plus λ / w_i on the diagonal.
    let mut system = Mat::<f64>::zeros(n, n);
    triangular::matmul(
        system.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        x.as_ref(),
        BlockStructure::Rectangular,
        x.transpose(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    for (j, weight) in w.iter().enumerate() {
        let column = &mut system.col_as_slice_mut(j)[j..];
        for g in column.iter_mut() {
            *g = (1.0 + *g) * (1.0 + *g);
        }
        column[0] += ridge / weight;
    }
    let centred: Vec<f64> = y.iter().map(|&v| f64::from(v) - y_mean).collect();
    let alpha = solve_in_place(system.as_mut(), &centred, par)?;
    drop(system);

    // Linear terms 2 Xᵀα, constant ȳ + Σα, quadratic form Q = Xᵀ diag(α) X (lower triangle).
    let alpha_column = Mat::<f64>::from_fn(n, 1, |i, _| alpha[i]);
    let mut linear = Mat::<f64>::zeros(d, 1);
    matmul(linear.as_mut(), Accum::Replace, x.transpose(), alpha_column.as_ref(), 2.0, par);
    let linear: Vec<f32> = (0..d).map(|r| linear[(r, 0)] as f32).collect();
    let constant = y_mean + alpha.iter().sum::<f64>();
    let scaled = Mat::<f64>::from_fn(n, d, |i, j| alpha[i] * x[(i, j)]);
    let mut quadratic_form = Mat::<f64>::zeros(d, d);
    triangular::matmul(
        quadratic_form.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        x.transpose(),
        BlockStructure::Rectangular,
        scaled.as_ref(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    drop(scaled);
    // Q has d eigenpairs: with fewer inputs than squared projections the rest stay zero.
    let kept = QUADRATIC_RANK.min(d);
    let (mut eigenvalues, leading) = eigenpairs(quadratic_form.as_ref(), kept)?;
    eigenvalues.resize(QUADRATIC_RANK, 0.0);
    let mut eigenvectors = vec![0f32; d * QUADRATIC_RANK];
    for r in 0..d {
        eigenvectors[r * QUADRATIC_RANK..r * QUADRATIC_RANK + kept].copy_from_slice(&leading[r * kept..(r + 1) * kept]);
    }

    // The truncated head's weighted MSE on the training images, with the f32 weights it keeps.
    let head_weights = Mat::<f64>::from_fn(d, QUADRATIC_RANK + 1, |r, k| {
        f64::from(if k < QUADRATIC_RANK { eigenvectors[r * QUADRATIC_RANK + k] } else { linear[r] })
    });
    let mut projections = Mat::<f64>::zeros(n, QUADRATIC_RANK + 1);
    matmul(projections.as_mut(), Accum::Replace, x.as_ref(), head_weights.as_ref(), 1.0, par);
    let loss = (0..n)
        .map(|i| {
            let squares: f64 = (0..QUADRATIC_RANK).map(|k| eigenvalues[k] * projections[(i, k)].powi(2)).sum();
            let linear_part = projections[(i, QUADRATIC_RANK)];
            w[i] * (constant + linear_part + squares - f64::from(y[i])).powi(2)
        })
        .sum::<f64>()
        / n as f64;
    if !loss.is_finite() {
        bail!("closed form: the fitted head's training loss is {loss}");
    }

    set_linear(&mut layers.linear, linear, Some(constant as f32), [d, 1]);
    set_linear(&mut layers.projection, eigenvectors, None, [d, QUADRATIC_RANK]);
    set_linear(&mut layers.squares, eigenvalues.iter().map(|&v| v as f32).collect(), None, [QUADRATIC_RANK, 1]);
    Ok(loss)
}

fn set_linear(layer: &mut Linear, weight: Vec<f32>, bias: Option<f32>, shape: [usize; 2]) {
    let device = layer.weight.val().device();
    layer.weight = Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), &device));
    if let Some(bias) = bias {
        layer.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(vec![bias], [1]), &device)));
    }
}

/// Solves `A x = b` for symmetric positive definite `A` (row-major n x n; only its lower
/// triangle is read). An `A` that is not positive definite, or not finite, is an error.
pub fn cholesky_solve(a: &[f64], n: usize, b: &[f64]) -> Result<Vec<f64>> {
    if a.len() != n * n || b.len() != n {
        bail!("cholesky_solve: a {}-element matrix and a {}-element right-hand side for n = {n}", a.len(), b.len());
    }
    let mut lower = Mat::<f64>::from_fn(n, n, |i, j| if j <= i { a[i * n + j] } else { 0.0 });
    solve_in_place(lower.as_mut(), b, Par::rayon(0))
}

/// Solves `A x = b` for the symmetric positive definite `A` whose lower triangle `a` holds, by an
/// LLᵀ factorisation that overwrites that triangle.
fn solve_in_place(mut a: MatMut<'_, f64>, b: &[f64], par: Par) -> Result<Vec<f64>> {
    let n = a.nrows();
    if a.ncols() != n || b.len() != n {
        bail!("solve: a {} x {} system with {} right-hand sides", a.nrows(), a.ncols(), b.len());
    }
    if let Some(i) = b.iter().position(|v| !v.is_finite()) {
        bail!("the kernel system's right-hand side {i} is {}", b[i]);
    }
    for j in 0..n {
        for i in j..n {
            if !a[(i, j)].is_finite() {
                bail!("the kernel system's entry ({i}, {j}) is {}", a[(i, j)]);
            }
        }
    }
    let mut scratch = MemBuffer::try_new(cholesky_in_place_scratch::<f64>(n, par, Default::default()))
        .map_err(|_| anyhow!("out of memory for the Cholesky factorisation's scratch (n = {n})"))?;
    cholesky_in_place(a.as_mut(), Default::default(), par, MemStack::new(&mut scratch), Default::default()).map_err(|error| match error {
        LltError::NonPositivePivot { index } => {
            anyhow!("the kernel system is not positive definite (pivot {index}): raise --ridge")
        }
    })?;
    let mut x = Mat::<f64>::from_fn(n, 1, |i, _| b[i]);
    let mut no_scratch = MemBuffer::new(StackReq::EMPTY);
    solve_in_place_with_conj(a.as_ref(), Conj::No, x.as_mut(), par, MemStack::new(&mut no_scratch));
    let x: Vec<f64> = (0..n).map(|i| x[(i, 0)]).collect();
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!("the kernel system's solution {i} is {}: raise --ridge", x[i]);
    }
    Ok(x)
}

/// The `rank` eigenpairs of largest magnitude of the symmetric `[d, d]` matrix `q` (row-major;
/// only its lower triangle is read): eigenvalues (largest magnitude first) and eigenvectors as a
/// row-major `[d, rank]` matrix.
pub fn leading_eigenpairs(q: &[f64], d: usize, rank: usize) -> Result<(Vec<f64>, Vec<f32>)> {
    if q.len() != d * d {
        bail!("leading_eigenpairs: a {}-element matrix for d = {d}", q.len());
    }
    eigenpairs(MatRef::from_row_major_slice(q, d, d), rank)
}

/// [`leading_eigenpairs`] of a faer matrix (its lower triangle).
fn eigenpairs(q: MatRef<'_, f64>, rank: usize) -> Result<(Vec<f64>, Vec<f32>)> {
    let d = q.nrows();
    if q.ncols() != d {
        bail!("eigenpairs of a {} x {} matrix", q.nrows(), q.ncols());
    }
    if rank > d {
        bail!("cannot take {rank} eigenpairs of a {d} x {d} matrix");
    }
    for j in 0..d {
        for i in j..d {
            if !q[(i, j)].is_finite() {
                bail!("the quadratic form's entry ({i}, {j}) is {}", q[(i, j)]);
            }
        }
    }
    let decomposition = q.self_adjoint_eigen(Side::Lower).map_err(|error| anyhow!("the quadratic form's eigendecomposition failed: {error:?}"))?;
    let values: Vec<f64> = decomposition.S().column_vector().iter().copied().collect();
    let vectors = decomposition.U();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    order.truncate(rank);
    let mut eigenvectors = vec![0f32; d * rank];
    for (k, &column) in order.iter().enumerate() {
        for r in 0..d {
            eigenvectors[r * rank + k] = vectors[(r, column)] as f32;
        }
    }
    Ok((order.iter().map(|&c| values[c]).collect(), eigenvectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_symmetric_system() {
        // A = [[4, 2, 0], [2, 5, 1], [0, 1, 3]], x = [1, -2, 3] → b = A x.
        let a = [4.0, 2.0, 0.0, 2.0, 5.0, 1.0, 0.0, 1.0, 3.0];
        let x = [1.0, -2.0, 3.0];
        let b: Vec<f64> = (0..3).map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum()).collect();
        let solved = cholesky_solve(&a, 3, &b).unwrap();
        for (s, x) in solved.iter().zip(x) {
            assert!((s - x).abs() < 1e-12, "{solved:?}");
        }
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], 2, &[1.0, 1.0]).is_err(), "indefinite");
    }

    #[test]
    fn cholesky_solve_refuses_bad_input_without_panicking() {
        let error = cholesky_solve(&[1.0, 2.0, 2.0, 1.0], 2, &[1.0, 1.0]).unwrap_err().to_string();
        assert!(error.contains("not positive definite"), "{error}");
        assert!(cholesky_solve(&[f64::NAN, 0.0, 0.0, 1.0], 2, &[1.0, 1.0]).is_err(), "NaN matrix");
        assert!(cholesky_solve(&[1.0, 0.0, 0.0, 1.0], 2, &[f64::NAN, 1.0]).is_err(), "NaN right-hand side");
        assert!(cholesky_solve(&[1.0, 0.0, 0.0], 2, &[1.0, 1.0]).is_err(), "wrong size");
        assert!(leading_eigenpairs(&[1.0, f64::NAN, f64::NAN, 1.0], 2, 1).is_err(), "NaN eigen input");
        assert!(leading_eigenpairs(&[1.0, 0.0, 0.0, 1.0], 2, 3).is_err(), "rank above d");
    }

    #[test]
    fn leading_eigenpairs_are_the_largest_in_magnitude() {
        // Q = U diag(λ) Uᵀ with known λ (mixed signs) and a random orthonormal U.
        let (d, lambdas) = (40, [9.0, -7.0, 5.0, -3.0, 1.0]);
        let mut u: Vec<f64> = {
            let mut rng = loupe::rng::SplitMix64::new(3);
            (0..d * d).map(|_| rng.next_f64() - 0.5).collect()
        };
        orthonormalise_columns(&mut u, d, d);
        let mut q = vec![0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                q[i * d + j] = lambdas.iter().enumerate().map(|(k, l)| l * u[i * d + k] * u[j * d + k]).sum::<f64>();
            }
        }
        let (values, vectors) = leading_eigenpairs(&q, d, 3).unwrap();
        for (v, expected) in values.iter().zip([9.0, -7.0, 5.0]) {
            assert!((v - expected).abs() < 1e-4, "{values:?}");
        }
        // Each eigenvector matches ±the planted one.
        for k in 0..3 {
            let dot: f64 = (0..d).map(|r| f64::from(vectors[r * 3 + k]) * u[r * d + k]).sum();
            assert!((dot.abs() - 1.0).abs() < 1e-4, "vector {k}: {dot}");
        }
    }

    #[test]
    fn the_fitted_head_reproduces_a_planted_quadratic() {
        // y = c + b·x + Σ_k s_k (v_k·x)² with 3 squared terms (rank ≤ the head's): the kernel's
        // function space holds it exactly, so a small ridge recovers it.
        let (n, d) = (200, 6);
        let mut rng = loupe::rng::SplitMix64::new(17);
        let mut draw = || rng.next_f64() * 2.0 - 1.0;
        let inputs: Vec<f32> = (0..n * d).map(|_| draw() as f32).collect();
        let linear: Vec<f64> = (0..d).map(|_| draw()).collect();
        let directions: Vec<Vec<f64>> = (0..3).map(|_| (0..d).map(|_| draw()).collect()).collect();
        let scales = [1.5, -0.8, 0.4];
        let planted = |x: &[f32]| {
            let dot = |v: &[f64]| x.iter().zip(v).map(|(&x, v)| f64::from(x) * v).sum::<f64>();
            5.0 + dot(&linear) + directions.iter().zip(scales).map(|(v, s)| s * dot(v).powi(2)).sum::<f64>()
        };
        let y: Vec<f32> = inputs.chunks(d).map(|x| planted(x) as f32).collect();
        let weights: Vec<f32> = (0..n).map(|i| 0.2 + (i % 7) as f32).collect();

        let device = Device::flex();
        let head =
            loupe::model::heads::HeadLayers::new(loupe::model::HeadKind::Quadratic, 8, (d, loupe::model::StatisticsRegion::Whole), 1, 1, &device);
        let loupe::model::heads::HeadLayers::Quadratic(mut layers) = head else { panic!("not a quadratic head") };
        let loss = fit_quadratic_head(&mut layers, &inputs, &y, &weights, 1e-6, &device).unwrap();
        assert!(loss < 1e-6, "training loss {loss}");

        // Fresh points: the fitted layers (through burn, on the inputs the head would have
        // standardised) match the planted function.
        let fresh: Vec<f32> = (0..50 * d).map(|_| draw() as f32).collect();
        let x = Tensor::<2>::from_data(TensorData::new(fresh.clone(), [50, d]), &device);
        let projected = layers.projection.forward(x.clone());
        let predicted = layers.linear.forward(x) + layers.squares.forward(projected.clone() * projected);
        let predicted = predicted.into_data().try_to_vec::<f32>().unwrap();
        for (p, x) in predicted.iter().zip(fresh.chunks(d)) {
            let expected = planted(x);
            assert!((f64::from(*p) - expected).abs() < 1e-3, "predicted {p}, planted {expected}");
        }

        // A NaN input, label or weight is a clear error, not a panic.
        let mut bad = inputs.clone();
        bad[7] = f32::NAN;
        let error = fit_quadratic_head(&mut layers, &bad, &y, &weights, 1e-6, &device).unwrap_err().to_string();
        assert!(error.contains("input 1 of image 1 is NaN"), "{error}");
        let mut bad = y.clone();
        bad[3] = f32::NAN;
        assert!(fit_quadratic_head(&mut layers, &inputs, &bad, &weights, 1e-6, &device).is_err());
        let mut bad = weights.clone();
        bad[3] = f32::NAN;
        assert!(fit_quadratic_head(&mut layers, &inputs, &y, &bad, 1e-6, &device).is_err());
    }

    /// Modified Gram–Schmidt on the columns of a row-major `[d, block]` matrix.
    fn orthonormalise_columns(m: &mut [f64], d: usize, block: usize) {
        for j in 0..block {
            for k in 0..j {
                let dot: f64 = (0..d).map(|r| m[r * block + j] * m[r * block + k]).sum();
                for r in 0..d {
                    m[r * block + j] -= dot * m[r * block + k];
                }
            }
            let norm = (0..d).map(|r| m[r * block + j].powi(2)).sum::<f64>().sqrt().max(1e-300);
            for r in 0..d {
                m[r * block + j] /= norm;
            }
        }
    }
}
