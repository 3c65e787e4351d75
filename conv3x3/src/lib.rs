//! 3x3, stride-1, zero-padded ("same") convolutions for CPU inference — every convolution of
//! VGG-style networks — on images laid out channels-last (NHWC).
//!
//! Why not a generic conv2d: a generic op re-lays out its weights on every call and converts
//! between layouts around every layer. Here a layer's weights are transformed once, when the
//! [`Conv3x3`] is built, activations stay NHWC from layer to layer, bias and ReLU are applied
//! while the output is written, and there is one level of parallelism (tiles of the image,
//! spread over rayon's pool; never nested inside the matrix products).
//!
//! The arithmetic is Winograd's minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016), with output tiles of m = 2 or 4: each m x m block
//! of outputs comes from an (m+2) x (m+2) block of inputs through (m+2)² element-wise products
//! instead of 9m² multiplications, and across channels those products are (m+2)² matrix
//! products ([`gemm`]):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A      (per output tile, summed over input channels)
//! ```
//!
//! `U = G g Gᵀ` is computed at construction; per tile, `V = Bᵀ d B` (the input transform), then
//! `M_k = V_k · U_k` for every position `k` (the GEMMs, over a chunk of tiles at once), then
//! `Aᵀ M A` (the output transform) with bias and ReLU. A layer with few input channels (an RGB
//! first layer) is one GEMM over 3x3 neighbourhoods (im2col) instead.
//!
//! Which tile ([`WinogradTile`]): F(4x4, 3x3) needs 2.25 products per output where F(2x2, 3x3)
//! needs 4, and the GEMMs are most of a layer's time, so it runs the Winograd layers of VGG16's
//! blocks 1-3 about 1.5x faster (the conv3x3 bench at 224x224, 2 cores: 66.6 ms → 45.1 ms). Its
//! transformed weights are 36/9 = 4x the filter's (F(2x2, 3x3): 16/9), and on VGG16's
//! 512-channel layers, whose maps are small (28x28 and 14x14 at 224x224), its 4x4 tiles overhang
//! the edges and give the GEMMs few rows: there it was no faster (40.3 ms vs 40.4 ms) and would
//! add 115 MB of weights. So layers with more than [`LARGE_TILE_MAX_CHANNELS`] output
//! channels use F(2x2, 3x3). F(4x4, 3x3)'s transforms use the points 0, ±1, ±2, whose small
//! constants keep f32 rounding within a few 1e-5 of the largest output (tests/winograd.rs).

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

/// The input block of a `side x side` output tile: one more pixel on every side.
const fn block_of(side: usize) -> usize {
    side + 2
}

/// Positions of a tile's transformed input block: one GEMM each.
const fn positions_of(side: usize) -> usize {
    block_of(side) * block_of(side)
}

/// Output tile sides of F(2x2, 3x3) and F(4x4, 3x3).
const SMALL_SIDE: usize = 2;
const LARGE_SIDE: usize = 4;

/// The largest input block and number of positions (F(4x4, 3x3)), and its outputs per tile: the
/// size of the per-tile arrays, of which F(2x2, 3x3) uses the first 4, 16 and 4.
const MAX_BLOCK: usize = block_of(LARGE_SIDE);
const MAX_POSITIONS: usize = positions_of(LARGE_SIDE);
const MAX_TILE_OUTPUTS: usize = LARGE_SIDE * LARGE_SIDE;
/// Layers with at most this many output channels use 4x4 output tiles, wider ones 2x2 (see the
/// crate's documentation).
pub const LARGE_TILE_MAX_CHANNELS: usize = 256;
/// Tiles a work item handles at once: the item's transformed inputs (positions x tiles x
/// channels floats) stay around 2 MB, so they and the products are still in cache when read back.
const CHUNK_FLOATS: usize = 1 << 19;
const MIN_CHUNK_TILES: usize = 8;
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
    /// `U = G g Gᵀ` for every (input, output) channel pair, laid out `[position][in][out]`:
    /// each position of the transformed block is one row-major `in x out` matrix, the right-hand
    /// side of a GEMM.
    Winograd { tile: WinogradTile, transformed: Vec<f32> },
    /// Few input channels (an RGB first layer): Winograd's products would each be a GEMM with
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
            let tile = WinogradTile::for_layer(out_channels);
            let positions = tile.positions();
            let mut transformed = vec![0.0; positions * in_channels * out_channels];
            let target = SharedOutput(transformed.as_mut_ptr());
            // Input channels in parallel (packing is part of a model's load time), output
            // channels innermost: the writes per filter then advance through contiguous rows
            // instead of striding across the whole matrix.
            parallel_for(in_channels, |i| {
                for o in 0..out_channels {
                    let start = (o * in_channels + i) * 9;
                    let g: &[f32; 9] = weight[start..start + 9].try_into().expect("a slice of 9");
                    for (k, u) in tile.transform_filter(g).into_iter().take(positions).enumerate() {
                        // SAFETY: inside the buffer (k < positions, i < in, o < out), and row
                        // (k, i) of every position's matrix is written by input channel i alone.
                        unsafe { *target.at((k * in_channels + i) * out_channels + o) = u };
                    }
                }
            });
            Method::Winograd { tile, transformed }
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
        match &self.method {
            Method::Winograd { tile: WinogradTile::Small, transformed } => {
                self.forward_winograd::<SMALL_SIDE>(input, transformed, activation, &mut output)
            }
            Method::Winograd { tile: WinogradTile::Large, transformed } => {
                self.forward_winograd::<LARGE_SIDE>(input, transformed, activation, &mut output)
            }
            Method::Im2col { weights } => self.forward_im2col(input, weights, activation, &mut output.data),
        }
        Ok(output)
    }

    /// Which output tile the layer uses (`None`: im2col).
    pub fn winograd_tile(&self) -> Option<WinogradTile> {
        match self.method {
            Method::Winograd { tile, .. } => Some(tile),
            Method::Im2col { .. } => None,
        }
    }

    /// [`Method::Winograd`] with `T x T` output tiles.
    fn forward_winograd<const T: usize>(&self, input: &Nhwc, transformed: &[f32], activation: Activation, output: &mut Nhwc) {
        let plan = Plan::new(input, T, self.in_channels, self.out_channels);
        let out_ptr = SharedOutput(output.data.as_mut_ptr());
        let run = |item: usize| {
            let (chunk, block) = (item / plan.channel_blocks, item % plan.channel_blocks);
            let tiles = chunk * plan.chunk_tiles..((chunk + 1) * plan.chunk_tiles).min(plan.tiles);
            let first = block * plan.channel_block;
            let channels = first..(first + plan.channel_block).min(self.out_channels);
            // SAFETY: every work item writes only the outputs of its own tiles (disjoint T x T
            // pixel blocks) in its own range of output channels, so no two items write the same
            // element, and `output` outlives the parallel loop.
            unsafe { self.run_item::<T>(input, transformed, &plan, tiles, channels, activation, out_ptr) };
        };
        parallel_for(plan.chunks * plan.channel_blocks, run);
    }

    /// Transform the inputs of `tiles`, multiply, and write outputs `channels` of those tiles.
    ///
    /// # Safety
    /// `output` points to the `[N, H, W, out]` output of `input`'s shape; no other thread writes
    /// the elements of these tiles and channels meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_item<const T: usize>(
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
        let positions = positions_of(T);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (zeros, transformed_input, products) = scratch.split(cin, positions * count * cin, positions * count * width);
            for (local, tile) in tiles.clone().enumerate() {
                transform_input_tile::<T>(input, plan.tile_origin(tile), zeros, local, count, transformed_input);
            }
            for k in 0..positions {
                let lhs = &transformed_input[k * count * cin..(k + 1) * count * cin];
                let rhs = &transformed[k * cin * cout + channels.start..];
                let dst = &mut products[k * count * width..(k + 1) * count * width];
                // rhs: a cin x width window of the cin x cout matrix.
                matmul([count, width, cin], dst, lhs, rhs, cout);
            }
            let bias = &self.bias[channels.clone()];
            for (local, tile) in tiles.enumerate() {
                let (n, y, x) = plan.tile_origin(tile);
                // The T x T outputs of this tile that lie inside the image.
                let rows = T.min(input.height - y);
                let columns = T.min(input.width - x);
                let mut targets: [&mut [f32]; MAX_TILE_OUTPUTS] = Default::default();
                for (slot, target) in targets.iter_mut().enumerate().take(T * T) {
                    let (dy, dx) = (slot / T, slot % T);
                    if dy < rows && dx < columns {
                        let pixel = (n * input.height + y + dy) * input.width + x + dx;
                        // SAFETY: inside the output (the pixel exists, channels ⊆ 0..cout), and
                        // owned by this item (see the caller).
                        *target = unsafe { std::slice::from_raw_parts_mut(output.at(pixel * cout + channels.start), width) };
                    }
                }
                transform_output_tile::<T>(products, local, count, width, bias, activation, targets);
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
    /// Output tile side.
    side: usize,
    tiles_y: usize,
    tiles_x: usize,
    tiles: usize,
    chunk_tiles: usize,
    chunks: usize,
    channel_block: usize,
    channel_blocks: usize,
}

impl Plan {
    /// For `side x side` output tiles.
    fn new(input: &Nhwc, side: usize, in_channels: usize, out_channels: usize) -> Self {
        let (tiles_y, tiles_x) = (input.height.div_ceil(side), input.width.div_ceil(side));
        let tiles = input.batch * tiles_y * tiles_x;
        let threads = threads();
        let target = (CHUNK_FLOATS / positions_of(side) / in_channels.max(out_channels)).clamp(MIN_CHUNK_TILES, MAX_CHUNK_TILES);
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
        Self { side, tiles_y, tiles_x, tiles, chunk_tiles, chunks, channel_block, channel_blocks }
    }

    /// Image, top row and left column of tile `tile`'s outputs.
    fn tile_origin(&self, tile: usize) -> (usize, usize, usize) {
        let per_image = self.tiles_y * self.tiles_x;
        let (n, t) = (tile / per_image, tile % per_image);
        (n, self.side * (t / self.tiles_x), self.side * (t % self.tiles_x))
    }
}

/// The output tile of a Winograd layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 2x2 outputs from 4x4 inputs, 16 products.
    Small,
    /// F(4x4, 3x3): 4x4 outputs from 6x6 inputs, 36 products.
    Large,
}

impl WinogradTile {
    fn for_layer(out_channels: usize) -> Self {
        if out_channels <= LARGE_TILE_MAX_CHANNELS { Self::Large } else { Self::Small }
    }

    /// Output tile side (`forward` runs `forward_winograd::<side>`).
    fn side(self) -> usize {
        match self {
            Self::Small => SMALL_SIDE,
            Self::Large => LARGE_SIDE,
        }
    }

    fn positions(self) -> usize {
        positions_of(self.side())
    }

    /// `G g Gᵀ` for one 3x3 filter `g` (row-major): the transformed filter, row-major, in the
    /// first [`Self::positions`] entries. In f64, rounded once: F(4x4, 3x3)'s sixths and
    /// twenty-fourths are not exact in f32.
    fn transform_filter(self, g: &[f32; 9]) -> [f32; MAX_POSITIONS] {
        const SMALL: [[f64; 3]; MAX_BLOCK] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0], [0.0; 3], [0.0; 3]];
        const LARGE: [[f64; 3]; MAX_BLOCK] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let g_matrix = match self {
            Self::Small => &SMALL,
            Self::Large => &LARGE,
        };
        let block = block_of(self.side());
        // G g: block x 3.
        let gg: [[f64; 3]; MAX_BLOCK] =
            std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| g_matrix[i][k] * f64::from(g[k * 3 + j])).sum()));
        let mut u = [0.0; MAX_POSITIONS];
        for i in 0..block {
            for j in 0..block {
                u[i * block + j] = (0..3).map(|k| gg[i][k] * g_matrix[j][k]).sum::<f64>() as f32;
            }
        }
        u
    }
}

/// `Bᵀ d B` for the (T+2) x (T+2) input block around the tile at `(n, y, x)` (one pixel of
/// padding on every side of its T x T outputs), for every input channel, into
/// `out[k][local][c]` (zero outside the image: the padding).
fn transform_input_tile<const T: usize>(input: &Nhwc, (n, y, x): (usize, usize, usize), zeros: &[f32], local: usize, count: usize, out: &mut [f32]) {
    let block = block_of(T);
    let c = input.channels;
    let mut d: [&[f32]; MAX_POSITIONS] = [&zeros[..c]; MAX_POSITIONS];
    for i in 0..block {
        let Some(row) = (y + i).checked_sub(1).filter(|&r| r < input.height) else { continue };
        for j in 0..block {
            if let Some(column) = (x + j).checked_sub(1).filter(|&col| col < input.width) {
                let pixel = (n * input.height + row) * input.width + column;
                d[i * block + j] = &input.data[pixel * c..(pixel + 1) * c];
            }
        }
    }
    let mut targets = out.chunks_exact_mut(count * c).map(|plane| &mut plane[local * c..(local + 1) * c]);
    let mut v: [&mut [f32]; MAX_POSITIONS] = std::array::from_fn(|_| Default::default());
    for slot in v.iter_mut().take(block * block) {
        *slot = targets.next().expect("a plane per position");
    }
    let mut ch = 0;
    while ch + LANES <= c {
        transform_input_lanes::<T, LANES>(&d, ch, &mut v);
        ch += LANES;
    }
    while ch < c {
        transform_input_lanes::<T, 1>(&d, ch, &mut v);
        ch += 1;
    }
}

/// Channels handled together: fixed-size arrays of this many floats compile to SIMD registers.
const LANES: usize = 8;

fn lanes<const L: usize>(values: &[f32], at: usize) -> [f32; L] {
    values[at..at + L].try_into().expect("L values")
}

/// `Bᵀ` applied to the T+2 values of a column or row of the block (the first T+2 entries of `d`),
/// lane by lane. F(2x2, 3x3): `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`. F(4x4, 3x3):
/// `Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`.
#[inline(always)]
fn input_transform<const T: usize, const L: usize>(d: &[[f32; L]; MAX_BLOCK]) -> [[f32; L]; MAX_BLOCK] {
    let mut t = [[0.0f32; L]; MAX_BLOCK];
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        if T == 2 {
            t[0][l] = d0 - d2;
            t[1][l] = d1 + d2;
            t[2][l] = d2 - d1;
            t[3][l] = d1 - d3;
        } else {
            // Shared sums: rows 1-2 and 3-4 differ only in the sign of their odd part.
            let (even_12, odd_12) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
            let (even_34, odd_34) = (d4 - d2, 2.0 * (d3 - d1));
            t[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
            t[1][l] = even_12 + odd_12;
            t[2][l] = even_12 - odd_12;
            t[3][l] = even_34 + odd_34;
            t[4][l] = even_34 - odd_34;
            t[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
        }
    }
    t
}

/// `Bᵀ d B` for channels `ch..ch + L`.
#[inline(always)]
fn transform_input_lanes<const T: usize, const L: usize>(d: &[&[f32]; MAX_POSITIONS], ch: usize, v: &mut [&mut [f32]; MAX_POSITIONS]) {
    let block = block_of(T);
    // Columns first (Bᵀ d), then the rows of the result (· B).
    let mut columns = [[[0.0f32; L]; MAX_BLOCK]; MAX_BLOCK];
    for (j, column) in columns.iter_mut().enumerate().take(block) {
        let values = std::array::from_fn(|i| if i < block { lanes(d[i * block + j], ch) } else { [0.0; L] });
        *column = input_transform::<T, L>(&values);
    }
    for i in 0..block {
        let row = input_transform::<T, L>(&std::array::from_fn(|j| columns[j][i]));
        for (j, values) in row.iter().enumerate().take(block) {
            v[i * block + j][ch..ch + L].copy_from_slice(values);
        }
    }
}

/// `Aᵀ M A` for one tile (its products `m[k][local][..]`), plus bias and activation, into the
/// tile's up to T x T output pixels (the first T² `targets`, row-major; empty = outside the image).
fn transform_output_tile<const T: usize>(
    m: &[f32],
    local: usize,
    count: usize,
    width: usize,
    bias: &[f32],
    activation: Activation,
    targets: [&mut [f32]; MAX_TILE_OUTPUTS],
) {
    let positions = positions_of(T);
    let plane = |k: usize| if k < positions { &m[(k * count + local) * width..(k * count + local + 1) * width] } else { &[][..] };
    let p: [&[f32]; MAX_POSITIONS] = std::array::from_fn(plane);
    let bias = &bias[..width];
    if targets.iter().take(T * T).all(|t| t.len() == width) {
        let mut t = targets;
        let mut ch = 0;
        while ch + LANES <= width {
            let y = output_lanes::<T, LANES>(&p, bias, ch, activation);
            for (target, values) in t.iter_mut().zip(&y).take(T * T) {
                target[ch..ch + LANES].copy_from_slice(values);
            }
            ch += LANES;
        }
        while ch < width {
            let y = output_lanes::<T, 1>(&p, bias, ch, activation);
            for (target, values) in t.iter_mut().zip(&y).take(T * T) {
                target[ch] = values[0];
            }
            ch += 1;
        }
    } else {
        // A tile on the bottom or right edge: some of its outputs fall outside the image.
        let mut targets = targets;
        for ch in 0..width {
            let y = output_lanes::<T, 1>(&p, bias, ch, activation);
            for (target, values) in targets.iter_mut().zip(&y).take(T * T) {
                if let Some(o) = target.get_mut(ch) {
                    *o = values[0];
                }
            }
        }
    }
}

/// `Aᵀ` applied to the T+2 values of a column or row (the first T+2 entries of `m`), lane by lane,
/// giving T values. F(2x2, 3x3): `Aᵀ = [1 1 1 0; 0 1 -1 -1]`. F(4x4, 3x3): `Aᵀ = [1 1 1 1 1 0;
/// 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
fn output_transform<const T: usize, const L: usize>(m: &[[f32; L]; MAX_BLOCK]) -> [[f32; L]; MAX_BLOCK] {
    let mut y = [[0.0f32; L]; MAX_BLOCK];
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        if T == 2 {
            y[0][l] = m0 + m1 + m2;
            y[1][l] = m1 - m2 - m3;
        } else {
            let (sum_12, difference_12) = (m1 + m2, m1 - m2);
            let (sum_34, difference_34) = (m3 + m4, m3 - m4);
            y[0][l] = m0 + sum_12 + sum_34;
            y[1][l] = difference_12 + 2.0 * difference_34;
            y[2][l] = sum_12 + 4.0 * sum_34;
            y[3][l] = difference_12 + 8.0 * difference_34 + m5;
        }
    }
    y
}

/// `Aᵀ M A` + bias, then the activation, for channels `ch..ch + L`: the tile's T x T outputs in
/// row-major order (the first T² entries).
#[inline(always)]
fn output_lanes<const T: usize, const L: usize>(
    p: &[&[f32]; MAX_POSITIONS],
    bias: &[f32],
    ch: usize,
    activation: Activation,
) -> [[f32; L]; MAX_TILE_OUTPUTS] {
    let block = block_of(T);
    let b: [f32; L] = lanes(bias, ch);
    // Columns first (Aᵀ M: T x (T+2)), then its rows (· A: T x T).
    let mut columns = [[[0.0f32; L]; MAX_BLOCK]; MAX_BLOCK];
    for (j, column) in columns.iter_mut().enumerate().take(block) {
        let values = std::array::from_fn(|i| if i < block { lanes(p[i * block + j], ch) } else { [0.0; L] });
        *column = output_transform::<T, L>(&values);
    }
    let mut y = [[0.0f32; L]; MAX_TILE_OUTPUTS];
    for i in 0..T {
        let row = output_transform::<T, L>(&std::array::from_fn(|j| columns[j][i]));
        for (j, values) in row.into_iter().enumerate().take(T) {
            let out = &mut y[i * T + j];
            for l in 0..L {
                let value = values[l] + b[l];
                out[l] = if activation == Activation::Relu { value.max(0.0) } else { value };
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

/// A raw output pointer, shared by work items that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOutput(*mut f32);

// SAFETY: see `Conv3x3::new` and `Conv3x3::forward`: items write disjoint elements.
unsafe impl Send for SharedOutput {}
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The element `offset` places in (a method, so closures capture the whole `Sync` wrapper
    /// rather than its raw pointer field).
    ///
    /// # Safety
    /// `offset` lies inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

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
