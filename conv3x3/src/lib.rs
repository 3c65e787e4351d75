//! 3x3, stride-1, zero-padded ("same") convolutions for CPU inference — every convolution of
//! VGG-style networks — on images laid out channels-last (NHWC).
//!
//! Why not a generic conv2d: a generic op re-lays out its weights on every call and converts
//! between layouts around every layer. Here a layer's weights are transformed once, when the
//! [`Conv3x3`] is built, activations stay NHWC from layer to layer, bias and ReLU are applied
//! while the output is written, and there is one level of parallelism (tiles of the image,
//! spread over rayon's pool; never nested inside the matrix products).
//!
//! The arithmetic is Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016): each 2x2 block of outputs comes from a 4x4 block
//! of inputs through 16 element-wise products instead of 36 multiplications, and across
//! channels those 16 products are 16 matrix products ([`gemm`]):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A      (per 2x2 output tile, summed over input channels)
//! ```
//!
//! `U = G g Gᵀ` is computed at construction; per tile, `V = Bᵀ d B` (the input transform), then
//! `M_k = V_k · U_k` for the 16 positions `k` (the GEMMs, over a chunk of tiles at once), then
//! `Aᵀ M A` (the output transform) with bias and ReLU. A layer with few input channels (an RGB
//! first layer) is one GEMM over 3x3 neighbourhoods (im2col) instead.

use std::cell::RefCell;
use std::fmt;

/// A batch of images, channels last: the value of channel `c` at `(y, x)` of image `n` is
/// `data[((n * height + y) * width + x) * channels + c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Nhwc {
    pub data: Vec<f32>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// A shape that does not fit: wrong weight or input sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl Nhwc {
    pub fn new(data: Vec<f32>, batch: usize, height: usize, width: usize, channels: usize) -> Result<Self, ShapeError> {
        let expected = batch * height * width * channels;
        if data.len() != expected {
            return Err(ShapeError(format!("{} values for a {batch}x{height}x{width}x{channels} NHWC tensor ({expected} expected)", data.len())));
        }
        Ok(Self { data, batch, height, width, channels })
    }

    /// From the `[N, C, H, W]` layout of PyTorch and burn.
    pub fn from_nchw(data: &[f32], [batch, channels, height, width]: [usize; 4]) -> Result<Self, ShapeError> {
        if data.len() != batch * channels * height * width {
            return Err(ShapeError(format!("{} values for a {batch}x{channels}x{height}x{width} NCHW tensor", data.len())));
        }
        let plane = height * width;
        let mut out = vec![0.0; data.len()];
        for_each_image_row(&mut out, batch * height, width * channels, |row, out_row| {
            let (n, y) = (row / height, row % height);
            for x in 0..width {
                for c in 0..channels {
                    out_row[x * channels + c] = data[(n * channels + c) * plane + y * width + x];
                }
            }
        });
        Ok(Self { data: out, batch, height, width, channels })
    }

    /// To the `[N, C, H, W]` layout.
    pub fn to_nchw(&self) -> Vec<f32> {
        let (height, width, channels) = (self.height, self.width, self.channels);
        let plane = height * width;
        let mut out = vec![0.0; self.data.len()];
        for_each_image_row(&mut out, self.batch * channels, plane, |row, out_plane| {
            let (n, c) = (row / channels, row % channels);
            let image = &self.data[n * plane * channels..(n + 1) * plane * channels];
            for (p, value) in out_plane.iter_mut().enumerate() {
                *value = image[p * channels + c];
            }
        });
        out
    }

    pub fn shape(&self) -> [usize; 4] {
        [self.batch, self.height, self.width, self.channels]
    }
}

/// What is applied to each output after the bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
}

/// Tiles a work item handles at once: the item's transformed inputs (16 x tiles x channels
/// floats) stay around 2 MB, so they and the products are still in cache when read back.
const CHUNK_FLOATS: usize = 1 << 15;
const MIN_CHUNK_TILES: usize = 16;
const MAX_CHUNK_TILES: usize = 512;
/// Output channels a work item computes at least, when small layers are split by channel too.
const MIN_CHANNEL_BLOCK: usize = 32;

/// One 3x3 stride-1 convolution with padding 1, its weights already laid out for its method.
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    in_channels: usize,
    out_channels: usize,
    method: Method,
    bias: Vec<f32>,
}

#[derive(Clone, Debug)]
enum Method {
    /// `U = G g Gᵀ` for every (input, output) channel pair, laid out `[16][in][out]`: position
    /// `k` of the 4x4 transform is one row-major `in x out` matrix, the right-hand side of a GEMM.
    Winograd { transformed: Vec<f32> },
    /// Few input channels (an RGB first layer): Winograd's 16 products would each be a GEMM with
    /// an inner dimension of 3, all memory traffic. Instead each output pixel's 3x3 neighbourhood
    /// becomes one row (im2col) and one GEMM with the weights laid out `[(ky, kx, in)][out]`.
    Im2col { weights: Vec<f32> },
}

/// Below this many input channels a layer uses [`Method::Im2col`].
const WINOGRAD_MIN_CHANNELS: usize = 16;
/// Output pixels per im2col work item.
const IM2COL_CHUNK_PIXELS: usize = 512;

impl Conv3x3 {
    /// From PyTorch/burn weights `[out, in, 3, 3]` and an optional bias `[out]`.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, in_channels: usize, out_channels: usize) -> Result<Self, ShapeError> {
        if in_channels == 0 || out_channels == 0 {
            return Err(ShapeError("a convolution needs at least one input and one output channel".into()));
        }
        if weight.len() != out_channels * in_channels * 9 {
            return Err(ShapeError(format!(
                "{} weights for a 3x3 convolution from {in_channels} to {out_channels} channels ({} expected)",
                weight.len(),
                out_channels * in_channels * 9
            )));
        }
        let bias = match bias {
            Some(bias) if bias.len() != out_channels => {
                return Err(ShapeError(format!("{} biases for {out_channels} output channels", bias.len())));
            }
            Some(bias) => bias.to_vec(),
            None => vec![0.0; out_channels],
        };
        let method = if in_channels < WINOGRAD_MIN_CHANNELS {
            let mut weights = vec![0.0; 9 * in_channels * out_channels];
            for i in 0..in_channels {
                for o in 0..out_channels {
                    for k in 0..9 {
                        weights[(k * in_channels + i) * out_channels + o] = weight[(o * in_channels + i) * 9 + k];
                    }
                }
            }
            Method::Im2col { weights }
        } else {
            let mut transformed = vec![0.0; 16 * in_channels * out_channels];
            // Output channels innermost: the 16 writes per filter then advance through 16
            // contiguous rows instead of striding across the whole matrix.
            for i in 0..in_channels {
                for o in 0..out_channels {
                    let start = (o * in_channels + i) * 9;
                    let g: &[f32; 9] = weight[start..start + 9].try_into().expect("a slice of 9");
                    for (k, u) in transform_filter(g).into_iter().enumerate() {
                        transformed[(k * in_channels + i) * out_channels + o] = u;
                    }
                }
            }
            Method::Winograd { transformed }
        };
        Ok(Self { in_channels, out_channels, method, bias })
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// `[N, H, W, in]` → `[N, H, W, out]`: the convolution, plus bias, then `activation`.
    pub fn forward(&self, input: &Nhwc, activation: Activation) -> Result<Nhwc, ShapeError> {
        if input.channels != self.in_channels {
            return Err(ShapeError(format!("the input has {} channels, the convolution expects {}", input.channels, self.in_channels)));
        }
        let (batch, height, width) = (input.batch, input.height, input.width);
        let mut output = Nhwc { data: vec![0.0; batch * height * width * self.out_channels], batch, height, width, channels: self.out_channels };
        if output.data.is_empty() {
            return Ok(output);
        }
        let transformed = match &self.method {
            Method::Winograd { transformed } => transformed,
            Method::Im2col { weights } => {
                self.forward_im2col(input, weights, activation, &mut output.data);
                return Ok(output);
            }
        };
        let plan = Plan::new(input, self.in_channels, self.out_channels);
        let out_ptr = SharedOutput(output.data.as_mut_ptr());
        let run = |item: usize| {
            let (chunk, block) = (item / plan.channel_blocks, item % plan.channel_blocks);
            let tiles = chunk * plan.chunk_tiles..((chunk + 1) * plan.chunk_tiles).min(plan.tiles);
            let first = block * plan.channel_block;
            let channels = first..(first + plan.channel_block).min(self.out_channels);
            // SAFETY: every work item writes only the outputs of its own tiles (disjoint 2x2
            // pixel blocks) in its own range of output channels, so no two items write the same
            // element, and `output` outlives the parallel loop.
            unsafe { self.run_item(input, transformed, &plan, tiles, channels, activation, out_ptr) };
        };
        parallel_for(plan.chunks * plan.channel_blocks, run);
        Ok(output)
    }

    /// Transform the inputs of `tiles`, multiply, and write outputs `channels` of those tiles.
    ///
    /// # Safety
    /// `output` points to the `[N, H, W, out]` output of `input`'s shape; no other thread writes
    /// the elements of these tiles and channels meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_item(
        &self,
        input: &Nhwc,
        transformed: &[f32],
        plan: &Plan,
        tiles: std::ops::Range<usize>,
        channels: std::ops::Range<usize>,
        activation: Activation,
        output: SharedOutput,
    ) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let count = tiles.len();
        let width = channels.len();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (zeros, transformed_input, products) = scratch.split(cin, 16 * count * cin, 16 * count * width);
            for (local, tile) in tiles.clone().enumerate() {
                transform_input_tile(input, plan.tile_origin(tile), zeros, local, count, transformed_input);
            }
            for k in 0..16 {
                let lhs = &transformed_input[k * count * cin..(k + 1) * count * cin];
                let rhs = &transformed[k * cin * cout + channels.start..];
                let dst = &mut products[k * count * width..(k + 1) * count * width];
                // rhs: a cin x width window of the cin x cout matrix.
                matmul([count, width, cin], dst, lhs, rhs, cout);
            }
            let bias = &self.bias[channels.clone()];
            for (local, tile) in tiles.enumerate() {
                let (n, y, x) = plan.tile_origin(tile);
                // The 2x2 outputs of this tile that lie inside the image.
                let rows = 2.min(input.height - y);
                let columns = 2.min(input.width - x);
                let mut targets: [&mut [f32]; 4] = Default::default();
                for (slot, target) in targets.iter_mut().enumerate() {
                    let (dy, dx) = (slot / 2, slot % 2);
                    if dy < rows && dx < columns {
                        let pixel = (n * input.height + y + dy) * input.width + x + dx;
                        // SAFETY: inside the output (the pixel exists, channels ⊆ 0..cout), and
                        // owned by this item (see the caller).
                        *target = unsafe { std::slice::from_raw_parts_mut(output.0.add(pixel * cout + channels.start), width) };
                    }
                }
                transform_output_tile(products, local, count, width, bias, activation, targets);
            }
        });
    }
}

impl Conv3x3 {
    /// [`Method::Im2col`]: chunks of output pixels, each its rows of 3x3 neighbourhoods times
    /// the weights, then bias and activation in place.
    fn forward_im2col(&self, input: &Nhwc, weights: &[f32], activation: Activation, output: &mut [f32]) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let row_len = 9 * cin;
        let (height, width) = (input.height, input.width);
        let chunks: Vec<(usize, &mut [f32])> = output.chunks_mut(IM2COL_CHUNK_PIXELS * cout).enumerate().collect();
        let run = |(chunk, out): (usize, &mut [f32])| {
            let first = chunk * IM2COL_CHUNK_PIXELS;
            let pixels = out.len() / cout;
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let (_, rows, _) = scratch.split(0, pixels * row_len, 0);
                for (p, row) in rows.chunks_exact_mut(row_len).enumerate() {
                    let pixel = first + p;
                    let (n, y, x) = (pixel / (height * width), pixel / width % height, pixel % width);
                    for (k, window) in row.chunks_exact_mut(cin).enumerate() {
                        let (sy, sx) = ((y + k / 3).checked_sub(1), (x + k % 3).checked_sub(1));
                        match (sy, sx) {
                            (Some(sy), Some(sx)) if sy < height && sx < width => {
                                let source = ((n * height + sy) * width + sx) * cin;
                                window.copy_from_slice(&input.data[source..source + cin]);
                            }
                            _ => window.fill(0.0),
                        }
                    }
                }
                matmul([pixels, cout, row_len], out, rows, weights, cout);
            });
            for pixel in out.chunks_exact_mut(cout) {
                for (value, bias) in pixel.iter_mut().zip(&self.bias) {
                    *value += bias;
                    if activation == Activation::Relu {
                        *value = value.max(0.0);
                    }
                }
            }
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            chunks.into_par_iter().for_each(run);
        }
        #[cfg(not(feature = "rayon"))]
        chunks.into_iter().for_each(run);
    }
}

/// `dst = lhs · rhs` for row-major `lhs` (m x k) and `dst` (m x n), and an `k x n` window of a
/// row-major matrix `rhs` whose rows are `rhs_row` long; on the calling thread (the caller
/// parallelises over work items).
fn matmul([m, n, k]: [usize; 3], dst: &mut [f32], lhs: &[f32], rhs: &[f32], rhs_row: usize) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && n <= rhs_row && (k == 0 || rhs.len() >= (k - 1) * rhs_row + n));
    // SAFETY: the assert keeps every element gemm reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_row as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// How a layer's tiles are split into work items: chunks of tiles, times blocks of output
/// channels when there are too few chunks to keep every thread busy.
struct Plan {
    tiles_y: usize,
    tiles_x: usize,
    tiles: usize,
    chunk_tiles: usize,
    chunks: usize,
    channel_block: usize,
    channel_blocks: usize,
}

impl Plan {
    fn new(input: &Nhwc, in_channels: usize, out_channels: usize) -> Self {
        let (tiles_y, tiles_x) = (input.height.div_ceil(2), input.width.div_ceil(2));
        let tiles = input.batch * tiles_y * tiles_x;
        let threads = threads();
        let target = (CHUNK_FLOATS / in_channels.max(out_channels)).clamp(MIN_CHUNK_TILES, MAX_CHUNK_TILES);
        // Equal chunks, as many as a multiple of the threads: 4 chunks of 64, 64, 64 and 4 tiles
        // would leave one thread idle for a third of the layer.
        let mut chunks = tiles.div_ceil(target);
        if chunks > threads {
            chunks = chunks.next_multiple_of(threads);
        }
        let chunk_tiles = tiles.div_ceil(chunks);
        let chunks = tiles.div_ceil(chunk_tiles);
        // Two items per thread balance uneven progress; one thread needs no split at all.
        let wanted = if threads > 1 { 2 * threads } else { 1 };
        let blocks = wanted.div_ceil(chunks).min(out_channels.div_ceil(MIN_CHANNEL_BLOCK)).max(1);
        // Blocks of whole SIMD registers (16 floats) keep the GEMM's columns aligned.
        let channel_block = out_channels.div_ceil(blocks).next_multiple_of(16).min(out_channels);
        let channel_blocks = out_channels.div_ceil(channel_block);
        Self { tiles_y, tiles_x, tiles, chunk_tiles, chunks, channel_block, channel_blocks }
    }

    /// Image, top row and left column of tile `tile`'s 2x2 outputs.
    fn tile_origin(&self, tile: usize) -> (usize, usize, usize) {
        let per_image = self.tiles_y * self.tiles_x;
        let (n, t) = (tile / per_image, tile % per_image);
        (n, 2 * (t / self.tiles_x), 2 * (t % self.tiles_x))
    }
}

/// `G g Gᵀ` for one 3x3 filter `g` (row-major): the 4x4 transformed filter, row-major.
fn transform_filter(g: &[f32; 9]) -> [f32; 16] {
    // G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1], applied to the rows, then to the columns.
    let row = |r: [f32; 3]| [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
    let rows = [[g[0], g[1], g[2]], [g[3], g[4], g[5]], [g[6], g[7], g[8]]];
    let column = |j: usize| [rows[0][j], rows[1][j], rows[2][j]];
    // Gg (4x3), by columns.
    let gg: [[f32; 4]; 3] = [row(column(0)), row(column(1)), row(column(2))];
    let mut u = [0.0; 16];
    for i in 0..4 {
        let transformed = row([gg[0][i], gg[1][i], gg[2][i]]);
        u[i * 4..i * 4 + 4].copy_from_slice(&transformed);
    }
    u
}

/// `Bᵀ d B` for the 4x4 input block whose centre 2x2 is the tile at `(n, y, x)`, for every input
/// channel, into `out[k][local][c]` (zero outside the image: the padding).
fn transform_input_tile(input: &Nhwc, (n, y, x): (usize, usize, usize), zeros: &[f32], local: usize, count: usize, out: &mut [f32]) {
    let c = input.channels;
    let mut d: [&[f32]; 16] = [&zeros[..c]; 16];
    for i in 0..4 {
        let Some(row) = (y + i).checked_sub(1).filter(|&r| r < input.height) else { continue };
        for j in 0..4 {
            if let Some(column) = (x + j).checked_sub(1).filter(|&col| col < input.width) {
                let pixel = (n * input.height + row) * input.width + column;
                d[i * 4 + j] = &input.data[pixel * c..(pixel + 1) * c];
            }
        }
    }
    let mut targets = out.chunks_exact_mut(count * c).map(|plane| &mut plane[local * c..(local + 1) * c]);
    let mut v: [&mut [f32]; 16] = std::array::from_fn(|_| targets.next().expect("16 planes"));
    let mut ch = 0;
    while ch + LANES <= c {
        transform_input_lanes::<LANES>(&d, ch, &mut v);
        ch += LANES;
    }
    while ch < c {
        transform_input_lanes::<1>(&d, ch, &mut v);
        ch += 1;
    }
}

/// Channels handled together: fixed-size arrays of this many floats compile to SIMD registers.
const LANES: usize = 8;

fn lanes<const L: usize>(values: &[f32], at: usize) -> [f32; L] {
    values[at..at + L].try_into().expect("L values")
}

/// `Bᵀ d B` for channels `ch..ch + L`.
#[inline(always)]
fn transform_input_lanes<const L: usize>(d: &[&[f32]; 16], ch: usize, v: &mut [&mut [f32]; 16]) {
    let x: [[f32; L]; 16] = std::array::from_fn(|k| lanes(d[k], ch));
    // Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: combine rows, then the same on columns.
    let mut t = [[0.0f32; L]; 16];
    for j in 0..4 {
        for l in 0..L {
            let (d0, d1, d2, d3) = (x[j][l], x[4 + j][l], x[8 + j][l], x[12 + j][l]);
            t[j][l] = d0 - d2;
            t[4 + j][l] = d1 + d2;
            t[8 + j][l] = d2 - d1;
            t[12 + j][l] = d1 - d3;
        }
    }
    for i in 0..4 {
        let mut out = [[0.0f32; L]; 4];
        for l in 0..L {
            let (t0, t1, t2, t3) = (t[i * 4][l], t[i * 4 + 1][l], t[i * 4 + 2][l], t[i * 4 + 3][l]);
            out[0][l] = t0 - t2;
            out[1][l] = t1 + t2;
            out[2][l] = t2 - t1;
            out[3][l] = t1 - t3;
        }
        for (j, values) in out.iter().enumerate() {
            v[i * 4 + j][ch..ch + L].copy_from_slice(values);
        }
    }
}

/// `Aᵀ M A` for one tile (its 16 products `m[k][local][..]`), plus bias and activation, into the
/// tile's up to four output pixels (`targets` in row-major order; empty = outside the image).
fn transform_output_tile(m: &[f32], local: usize, count: usize, width: usize, bias: &[f32], activation: Activation, targets: [&mut [f32]; 4]) {
    let plane = |k: usize| &m[(k * count + local) * width..(k * count + local + 1) * width];
    let p: [&[f32]; 16] = std::array::from_fn(plane);
    let bias = &bias[..width];
    if targets.iter().all(|t| t.len() == width) {
        let mut t = targets;
        let mut ch = 0;
        while ch + LANES <= width {
            let y = output_lanes::<LANES>(&p, bias, ch, activation);
            for (target, values) in t.iter_mut().zip(&y) {
                target[ch..ch + LANES].copy_from_slice(values);
            }
            ch += LANES;
        }
        while ch < width {
            let y = output_lanes::<1>(&p, bias, ch, activation);
            for (target, values) in t.iter_mut().zip(&y) {
                target[ch] = values[0];
            }
            ch += 1;
        }
    } else {
        // A tile on the bottom or right edge of an odd-sized image: some outputs fall outside.
        let mut targets = targets;
        for ch in 0..width {
            let y = output_lanes::<1>(&p, bias, ch, activation);
            for (target, values) in targets.iter_mut().zip(&y) {
                if let Some(o) = target.get_mut(ch) {
                    *o = values[0];
                }
            }
        }
    }
}

/// `Aᵀ M A` + bias, then the activation, for channels `ch..ch + L`: the tile's outputs
/// (0,0), (0,1), (1,0), (1,1).
#[inline(always)]
fn output_lanes<const L: usize>(p: &[&[f32]; 16], bias: &[f32], ch: usize, activation: Activation) -> [[f32; L]; 4] {
    let m: [[f32; L]; 16] = std::array::from_fn(|k| lanes(p[k], ch));
    let b: [f32; L] = lanes(bias, ch);
    // Aᵀ = [1 1 1 0; 0 1 -1 -1]: combine rows, then columns.
    let mut s = [[[0.0f32; L]; 4]; 2];
    for j in 0..4 {
        for l in 0..L {
            let (m0, m1, m2, m3) = (m[j][l], m[4 + j][l], m[8 + j][l], m[12 + j][l]);
            s[0][j][l] = m0 + m1 + m2;
            s[1][j][l] = m1 - m2 - m3;
        }
    }
    let mut y = [[0.0f32; L]; 4];
    for i in 0..2 {
        for l in 0..L {
            let r = [s[i][0][l], s[i][1][l], s[i][2][l], s[i][3][l]];
            y[2 * i][l] = r[0] + r[1] + r[2] + b[l];
            y[2 * i + 1][l] = r[1] - r[2] - r[3] + b[l];
        }
    }
    if activation == Activation::Relu {
        for row in &mut y {
            for value in row {
                *value = value.max(0.0);
            }
        }
    }
    y
}

/// 2x2 max-pool with stride 2 (odd trailing rows and columns dropped, as PyTorch's floor mode).
pub fn max_pool_2x2(input: &Nhwc) -> Nhwc {
    let (height, width, c) = (input.height / 2, input.width / 2, input.channels);
    let mut data = vec![0.0; input.batch * height * width * c];
    for_each_image_row(&mut data, input.batch * height, width * c, |row, out_row| {
        let (n, y) = (row / height, row % height);
        let source = |dy: usize, x: usize| {
            let pixel = (n * input.height + 2 * y + dy) * input.width + x;
            &input.data[pixel * c..(pixel + 1) * c]
        };
        for x in 0..width {
            let (a, b, d, e) = (source(0, 2 * x), source(0, 2 * x + 1), source(1, 2 * x), source(1, 2 * x + 1));
            for (ch, out) in out_row[x * c..(x + 1) * c].iter_mut().enumerate() {
                *out = a[ch].max(b[ch]).max(d[ch].max(e[ch]));
            }
        }
    });
    Nhwc { data, batch: input.batch, height, width, channels: c }
}

/// The raw output pointer, shared by work items that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);
// SAFETY: see `Conv3x3::forward`: items write disjoint elements.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

/// Per-thread scratch for transformed inputs and products, reused across calls (allocating and
/// zeroing a few MB per work item would cost as much as a small layer's arithmetic).
#[derive(Default)]
struct Scratch {
    /// Stand-in for the pixels outside the image (the zero padding); never written.
    zeros: Vec<f32>,
    buffer: Vec<f32>,
}

impl Scratch {
    /// `zeros` channels of zeros, and two buffers of `first` and `second` floats.
    fn split(&mut self, zeros: usize, first: usize, second: usize) -> (&[f32], &mut [f32], &mut [f32]) {
        if self.zeros.len() < zeros {
            self.zeros.resize(zeros, 0.0);
        }
        if self.buffer.len() < first + second {
            self.buffer.resize(first + second, 0.0);
        }
        let (a, rest) = self.buffer.split_at_mut(first);
        (&self.zeros[..zeros], a, &mut rest[..second])
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Threads the convolutions spread over: rayon's pool with the `rayon` feature, else 1.
pub fn threads() -> usize {
    #[cfg(feature = "rayon")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "rayon"))]
    1
}

fn parallel_for(items: usize, run: impl Fn(usize) + Send + Sync) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..items).into_par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    (0..items).for_each(run);
}

/// Fill `out`, split into rows of `row_len`, with `fill(row_index, row)`, in parallel.
fn for_each_image_row(out: &mut [f32], rows: usize, row_len: usize, fill: impl Fn(usize, &mut [f32]) + Send + Sync) {
    if row_len == 0 || rows == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(row_len).enumerate().for_each(|(row, chunk)| fill(row, chunk));
    }
    #[cfg(not(feature = "rayon"))]
    out.chunks_mut(row_len).enumerate().for_each(|(row, chunk)| fill(row, chunk));
}

/// The plain definition, for tests and as a reference: direct 3x3 convolution, padding 1.
pub fn reference_conv3x3(input: &Nhwc, weight: &[f32], bias: Option<&[f32]>, out_channels: usize, activation: Activation) -> Nhwc {
    let (n_, h, w, cin) = (input.batch, input.height, input.width, input.channels);
    let mut data = vec![0.0; n_ * h * w * out_channels];
    for n in 0..n_ {
        for y in 0..h {
            for x in 0..w {
                for o in 0..out_channels {
                    let mut sum = f64::from(bias.map_or(0.0, |b| b[o]));
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (Some(sy), Some(sx)) = ((y + ky).checked_sub(1), (x + kx).checked_sub(1)) else { continue };
                            if sy >= h || sx >= w {
                                continue;
                            }
                            let pixel = ((n * h + sy) * w + sx) * cin;
                            for i in 0..cin {
                                sum += f64::from(input.data[pixel + i]) * f64::from(weight[((o * cin + i) * 3 + ky) * 3 + kx]);
                            }
                        }
                    }
                    let value = sum as f32;
                    data[((n * h + y) * w + x) * out_channels + o] = match activation {
                        Activation::Identity => value,
                        Activation::Relu => value.max(0.0),
                    };
                }
            }
        }
    }
    Nhwc { data, batch: n_, height: h, width: w, channels: out_channels }
}
