//! `--device` names → burn devices, with a clear error when a GPU backend cannot start.

use anyhow::{Context, Result, bail};
use loupe::burn::tensor::Device;

pub const DEVICE_HELP: &str = "flex (CPU), wgpu (any native GPU API), vulkan, cuda (needs the `cuda` build feature); \
    wgpu:N, vulkan:N, cuda:N pick the N-th GPU";

/// One device: `flex`, `wgpu`, `vulkan`, `cuda`, or a GPU kind with an index (`cuda:1`).
pub fn parse_device(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index.parse().with_context(|| format!("'{name}': the device index must be a number"))?;
            (kind, Some(index))
        }
        None => (name, None),
    };
    #[cfg(feature = "wgpu")]
    let wgpu = |api: Option<loupe::burn::tensor::wgpu::WgpuBackend>| {
        let mut options = Device::wgpu_options();
        if let Some(index) = index {
            options = options.device_kind(loupe::burn::tensor::DeviceKind::DiscreteGpu(index));
        }
        if let Some(api) = api {
            options = options.graphics_api(api);
        }
        let device = options.init().map_err(|e| anyhow::anyhow!("no usable {kind} adapter for '{name}': {e}"))?;
        first_operation_on(device, name)
    };
    match kind {
        "flex" | "cpu" if index.is_none() => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => wgpu(None),
        #[cfg(feature = "wgpu")]
        "vulkan" => wgpu(Some(loupe::burn::tensor::wgpu::WgpuBackend::Vulkan)),
        #[cfg(feature = "cuda")]
        "cuda" => first_operation_on(Device::cuda(index.unwrap_or(0)), name),
        _ => bail!("unknown or disabled device '{name}': use {DEVICE_HELP}"),
    }
}

/// The device, once one tiny operation has run on it. GPU runtimes start lazily and some panic
/// there (cubecl-cuda on a missing driver or device index): that becomes an error here, before
/// any work, instead of a panic in the middle of it.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn first_operation_on(device: Device, name: &str) -> Result<Device> {
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loupe::burn::tensor::Tensor::<1>::zeros([1], &device).into_data()));
    match probe {
        Ok(_) => Ok(device),
        Err(_) => bail!("the device '{name}' failed on its first operation (see the message above): is its driver installed?"),
    }
}

/// A comma-separated list (`cuda:0,cuda:1`): training splits each batch across them.
pub fn parse_devices(list: &str) -> Result<Vec<Device>> {
    let devices = list.split(',').map(|name| parse_device(name.trim())).collect::<Result<Vec<_>>>()?;
    if devices.is_empty() {
        bail!("no device given");
    }
    Ok(devices)
}
