//! The CubeCL kernels: a 3x3 stride-1 'same' convolution as an implicit GEMM over
//! channels-last activations, and the 2x2 max-pool between VGG's blocks.
//!
//! The convolution is the GEMM `output[pixel, out] = Σ_k patch[pixel, k] · weight[k, out]` with
//! `k = (ky · 3 + kx) · C_in + c_in`: the patch matrix is never built, each workgroup gathers its
//! slice of it straight from the input (zeros outside the image: the padding) into shared
//! memory. A workgroup of 16x16 invocations owns a tile of 64 pixels x 64 output channels and
//! walks the depth 16 at a time; each invocation keeps a 4x4 block of that tile in registers,
//! so every value read from shared memory feeds four multiply-adds.
//!
//! Activations and weights are stored as `F`, f32 or f16 (on adapters with WebGPU's
//! `shader-f16`): f16 halves the memory traffic and the shared tiles, while the sums are always
//! kept in f32, since a VGG16 layer adds up to 4,608 products and f16 holds only 11 bits.
//!
//! Both kernels launch unchecked (no bounds test added to each memory access by CubeCL): every
//! index is guarded explicitly against the shapes, so the tests would be paid for twice.

use cubecl::{cube, prelude::*};

/// Output pixels per workgroup tile (GEMM rows).
pub const TILE_PIXELS: usize = 64;
/// Output channels per workgroup tile (GEMM columns).
pub const TILE_CHANNELS: usize = 64;
/// Depth (`k`) loaded into shared memory per step.
pub const TILE_DEPTH: usize = 16;
/// Invocations per side of the workgroup: 16x16 = 256, WebGPU's guaranteed maximum.
pub const UNITS_PER_SIDE: u32 = 16;

/// `input` `[N, H, W, C_in]`, `weight` `[9 · C_in, C_out]` (see the module docs), `bias`
/// `[C_out]` → `output` `[N, H, W, C_out]`, ReLU applied as it is written when `relu`.
///
/// Pixel tiles are numbered across the cube grid's x and z axes (one axis alone is capped at
/// 65,535 workgroups); channel tiles along y.
#[cube(launch_unchecked)]
pub fn conv3x3_nhwc<F: Float>(
    input: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] relu: bool,
    #[define(F)] _dtype: ElemType,
) {
    let height = input.shape(1);
    let width = input.shape(2);
    let in_channels = input.shape(3);
    let out_channels = output.shape(3);
    let pixels = input.shape(0) * height * width;
    let depth = 9 * in_channels;

    let pixel_tile = CUBE_POS_Z as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    let first_pixel = pixel_tile * TILE_PIXELS;
    // Uniform across the workgroup, so leaving before the barriers below is safe.
    if first_pixel >= pixels {
        terminate!();
    }
    let first_channel = CUBE_POS_Y as usize * TILE_CHANNELS;

    let unit = UNIT_POS as usize;
    let unit_channel = UNIT_POS_X as usize;
    let unit_pixel = UNIT_POS_Y as usize;

    // [depth][pixel] and [depth][channel].
    let mut patches = Shared::<[F]>::new_slice(TILE_DEPTH * TILE_PIXELS);
    let mut weights = Shared::<[F]>::new_slice(TILE_DEPTH * TILE_CHANNELS);
    let mut sums = Array::<f32>::new(16usize);
    #[unroll]
    for i in 0..16usize {
        sums[i] = 0.0;
    }

    // What this invocation loads each step: for the patches one depth row (neighbouring
    // invocations read neighbouring input channels) at four pixels; for the weights one output
    // channel at four depth rows.
    let load_depth = unit % TILE_DEPTH;
    let load_pixel = unit / TILE_DEPTH;
    let load_channel = unit % TILE_CHANNELS;
    let load_weight_row = unit / TILE_CHANNELS;

    let mut step = 0usize;
    while step < depth {
        let k = step + load_depth;
        let tap = k / in_channels;
        let in_channel = k % in_channels;
        // Offsets of the tap from the output pixel, plus one (unsigned arithmetic).
        let tap_y = tap / 3;
        let tap_x = tap % 3;
        #[unroll]
        for i in 0..4usize {
            let local = load_pixel + 16 * i;
            let pixel = first_pixel + local;
            let mut value = F::new(0.0);
            if pixel < pixels && k < depth {
                let x = pixel % width;
                let row = pixel / width;
                let y = row % height;
                let image = row / height;
                let source_y = y + tap_y;
                let source_x = x + tap_x;
                if source_y >= 1 && source_y <= height && source_x >= 1 && source_x <= width {
                    value = input[((image * height + source_y - 1) * width + source_x - 1) * in_channels + in_channel];
                }
            }
            patches[load_depth * TILE_PIXELS + local] = value;
        }
        #[unroll]
        for i in 0..4usize {
            let row = load_weight_row + 4 * i;
            let k = step + row;
            let channel = first_channel + load_channel;
            let mut value = F::new(0.0);
            if k < depth && channel < out_channels {
                value = weight[k * out_channels + channel];
            }
            weights[row * TILE_CHANNELS + load_channel] = value;
        }
        sync_cube();

        #[unroll]
        for row in 0..TILE_DEPTH {
            let mut a = Array::<f32>::new(4usize);
            let mut b = Array::<f32>::new(4usize);
            #[unroll]
            for i in 0..4usize {
                a[i] = f32::cast_from(patches[row * TILE_PIXELS + unit_pixel + 16 * i]);
                b[i] = f32::cast_from(weights[row * TILE_CHANNELS + unit_channel + 16 * i]);
            }
            #[unroll]
            for i in 0..4usize {
                #[unroll]
                for j in 0..4usize {
                    sums[i * 4 + j] += a[i] * b[j];
                }
            }
        }
        sync_cube();
        step += TILE_DEPTH;
    }

    // Invocation (x, y) owns pixels y, y + 16, ... and channels x, x + 16, ... of the tile, so
    // neighbouring invocations write neighbouring channels.
    #[unroll]
    for i in 0..4usize {
        let pixel = first_pixel + unit_pixel + 16 * i;
        if pixel < pixels {
            #[unroll]
            for j in 0..4usize {
                let channel = first_channel + unit_channel + 16 * j;
                if channel < out_channels {
                    let mut value = sums[i * 4 + j] + f32::cast_from(bias[channel]);
                    if relu {
                        value = f32::max(value, 0.0);
                    }
                    output[pixel * out_channels + channel] = F::cast_from(value);
                }
            }
        }
    }
}

/// `input` `[N, H, W, C]` → `output` `[N, ⌊H/2⌋, ⌊W/2⌋, C]`, each the largest of a 2x2 window
/// (as `MaxPool2d` with kernel 2, stride 2, no padding). One invocation per output value.
#[cube(launch_unchecked)]
pub fn max_pool_2x2_nhwc<F: Float>(input: &Tensor<F>, output: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let index = ABSOLUTE_POS;
    if index >= output.len() {
        terminate!();
    }
    let channels = output.shape(3);
    let out_width = output.shape(2);
    let out_height = output.shape(1);
    let channel = index % channels;
    let column = (index / channels) % out_width;
    let row = (index / (channels * out_width)) % out_height;
    let image = index / (channels * out_width * out_height);

    let in_width = input.shape(2);
    let in_height = input.shape(1);
    let top_left = ((image * in_height + 2 * row) * in_width + 2 * column) * channels + channel;
    let below = in_width * channels;
    let top = F::max(input[top_left], input[top_left + channels]);
    let bottom = F::max(input[top_left + below], input[top_left + below + channels]);
    output[index] = F::max(top, bottom);
}
