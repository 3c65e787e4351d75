//! `--device` names → burn devices, with a clear error when a GPU backend cannot start.

use anyhow::{Result, bail};
use burn::tensor::Device;

pub const DEVICE_HELP: &str = "flex (CPU), wgpu (any native GPU API), vulkan, cuda (needs the `cuda` build feature)";

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu_options()
            .init()
            .map_err(|e| anyhow::anyhow!("no usable wgpu adapter: {e:?}")),
        #[cfg(feature = "wgpu")]
        "vulkan" => Device::wgpu_options()
            .graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan)
            .init()
            .map_err(|e| anyhow::anyhow!("no usable Vulkan adapter: {e:?}")),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        other => bail!("unknown or disabled device '{other}': use {DEVICE_HELP}"),
    }
}
