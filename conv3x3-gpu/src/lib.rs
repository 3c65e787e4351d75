//! VGG-style 3x3 convolutions (stride 1, padding 1) for GPU inference, as a burn backend
//! extension on burn's CubeCL backend (WebGPU in the browser, Vulkan/Metal/DX12 natively).
//!
//! burn's own conv2d on WGSL-only adapters runs `conv_direct` (one output per invocation, no
//! tiling); here a workgroup computes a tile of outputs as an implicit GEMM through shared memory
//! (see [`kernel`]). Activations stay channels-last (`[N, H, W, C]`) from layer to layer, weights
//! are packed once ([`PackedConv3x3::new`]), and bias + ReLU are applied as outputs are written.
//! Where the adapter computes in f16 ([`supports_f16`]), activations and weights can be stored in
//! half precision ([`Storage::F16`]: half the memory traffic; the sums stay f32).
//! Inference only: no autodiff, so training keeps burn's ops.

pub mod kernel;

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, FloatDType, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::{CubeCount, CubeDim, calculate_cube_count_elemwise};

use kernel::{TILE_CHANNELS, TILE_PIXELS, UNITS_PER_SIDE};

/// The operations this crate adds to burn's backends (only its CubeCL backend implements them).
#[backend_extension(Cube)]
pub trait VggConvOps: Backend {
    /// `input` `[N, H, W, C_in]`, `weight` `[9 · C_in, C_out]`, `bias` `[C_out]` → `[N, H, W, C_out]`.
    fn conv3x3_nhwc(input: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, relu: bool) -> FloatTensor<Self>;
    /// `[N, H, W, C]` → `[N, H/2, W/2, C]`.
    fn max_pool_2x2_nhwc(input: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Workgroups per grid axis that every adapter accepts (WebGPU's default limit is 65,535).
const MAX_WORKGROUPS_PER_AXIS: usize = 32_768;

impl VggConvOps for CubeBackend {
    fn conv3x3_nhwc(input: CubeTensor, weight: CubeTensor, bias: CubeTensor, relu: bool) -> CubeTensor {
        input.assert_is_on_same_device(&weight);
        input.assert_is_on_same_device(&bias);
        let input = into_contiguous(input);
        let weight = into_contiguous(weight);
        let bias = into_contiguous(bias);
        let [batch, height, width, in_channels] = input.shape().dims::<4>();
        let [depth, out_channels] = weight.shape().dims::<2>();
        assert_eq!(depth, 9 * in_channels, "packed 3x3 weights need 9 · C_in rows");
        assert_eq!(bias.shape().num_elements(), out_channels, "one bias per output channel");

        let dtype = input.dtype;
        assert!(weight.dtype == dtype && bias.dtype == dtype, "input, weights and bias in one float type");
        let output = empty_device_dtype(input.client.clone(), input.device.clone(), [batch, height, width, out_channels].into(), dtype);
        let pixel_tiles = (batch * height * width).div_ceil(TILE_PIXELS);
        let channel_tiles = out_channels.div_ceil(TILE_CHANNELS);
        let across = pixel_tiles.min(MAX_WORKGROUPS_PER_AXIS);
        let layers = pixel_tiles.div_ceil(across);
        // SAFETY: the kernel guards every index against the shapes asserted above.
        unsafe {
            kernel::conv3x3_nhwc::launch_unchecked(
                &output.client,
                CubeCount::Static(across as u32, channel_tiles as u32, layers as u32),
                CubeDim::new_2d(UNITS_PER_SIDE, UNITS_PER_SIDE),
                input.into_tensor_arg(),
                weight.into_tensor_arg(),
                bias.into_tensor_arg(),
                output.clone().into_tensor_arg(),
                relu,
                dtype_to_storage_type(dtype),
            );
        }
        output
    }

    fn max_pool_2x2_nhwc(input: CubeTensor) -> CubeTensor {
        let input = into_contiguous(input);
        let [batch, height, width, channels] = input.shape().dims::<4>();
        let dtype = input.dtype;
        let output = empty_device_dtype(input.client.clone(), input.device.clone(), [batch, height / 2, width / 2, channels].into(), dtype);
        let cube_dim = CubeDim::new_1d(256);
        let cube_count = calculate_cube_count_elemwise(&output.client, output.shape().num_elements(), cube_dim);
        // SAFETY: the kernel stops past the output's end and reads windows inside the input
        // (the output's sides are the input's halved, rounded down).
        unsafe {
            kernel::max_pool_2x2_nhwc::launch_unchecked(
                &output.client,
                cube_count,
                cube_dim,
                input.into_tensor_arg(),
                output.clone().into_tensor_arg(),
                dtype_to_storage_type(dtype),
            );
        }
        output
    }
}

/// Whether this crate's kernels run on `device`: burn's CubeCL backend, without autodiff.
pub fn runs_on(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// Whether `device` computes in f16 (WebGPU's `shader-f16`; on Vulkan, 16-bit floats in shaders
/// and storage buffers), so that [`Storage::F16`] can run there.
pub fn supports_f16(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => cube.client().properties().supports_type(ElemType::Float(FloatKind::F16)),
        _ => false,
    }
}

/// What the kernels keep activations and weights in; their sums are f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// Half the memory traffic and shared-memory tiles; each stored value is rounded to 11
    /// significant bits (a relative error up to 2^-11 ≈ 4.9e-4).
    F16,
}

impl Storage {
    /// [`Storage::F16`] where `device` supports it, else [`Storage::F32`].
    pub fn fastest_on(device: &Device) -> Self {
        if supports_f16(device) { Self::F16 } else { Self::F32 }
    }

    fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
        }
    }
}

/// A 3x3 convolution's weights, packed for [`kernel::conv3x3_nhwc`] once.
#[derive(Clone, Debug)]
pub struct PackedConv3x3 {
    /// `[9 · C_in, C_out]`, rows in (ky, kx, c_in) order.
    weight: Tensor<2>,
    bias: Tensor<1>,
}

impl PackedConv3x3 {
    /// From burn's (and PyTorch's) layout, `weight` `[C_out, C_in, 3, 3]`, on the weight's device,
    /// kept as `storage` (which the device must support: [`supports_f16`]).
    pub fn new(weight: Tensor<4>, bias: Option<Tensor<1>>, storage: Storage) -> Self {
        let [out_channels, in_channels, kernel_height, kernel_width] = weight.dims();
        assert_eq!([kernel_height, kernel_width], [3, 3], "a 3x3 convolution");
        let bias = bias.unwrap_or_else(|| Tensor::zeros([out_channels], &weight.device()));
        let weight = weight.permute([2, 3, 1, 0]).reshape([9 * in_channels, out_channels]);
        Self { weight: weight.cast(storage.dtype()), bias: bias.cast(storage.dtype()) }
    }

    /// The float type the weights are kept in, and [`PackedConv3x3::forward`] computes in.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dims()[1]
    }

    /// `x` `[N, H, W, C_in]` → `[N, H, W, C_out]`, through ReLU when `relu`; computed in (and
    /// returned as) the weights' [`PackedConv3x3::dtype`], `x` converted first if it differs.
    ///
    /// # Panics
    /// If `x` is not on a device [`runs_on`] accepts, or its channels are not the weights'.
    pub fn forward(&self, x: Tensor<4>, relu: bool) -> Tensor<4> {
        let x = x.cast(self.dtype());
        Tensor::from_dispatch(Dispatch::conv3x3_nhwc(x.into_dispatch(), self.weight.clone().into_dispatch(), self.bias.clone().into_dispatch(), relu))
    }
}

/// `[N, H, W, C]` → `[N, H/2, W/2, C]`: 2x2 max-pool, stride 2, channels last.
pub fn max_pool_2x2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::max_pool_2x2_nhwc(x.into_dispatch()))
}
