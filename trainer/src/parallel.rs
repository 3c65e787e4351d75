//! Data parallelism: each batch split across several devices, one thread and one model replica
//! per device, the gradients summed on the first — the whole batch's gradient, as on one device.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};
use image::RgbImage;

use crate::labels::ImageLabel;

/// One device's part of a batch.
pub struct Shard<'a> {
    pub labels: Vec<&'a ImageLabel>,
    /// Decoded images, or none when the features come from the cache.
    pub images: Vec<RgbImage>,
    /// Sample weights (Eq. 1) of `labels`.
    pub weights: Vec<f32>,
}

/// Splits a batch into up to `parts` contiguous shards, each with its share of the batch's total
/// sample weight (the factor its weighted-mean loss gets, so the shards add up to the batch's loss).
pub fn split_into_shards<'a>(labels: &[&'a ImageLabel], images: Vec<RgbImage>, weights: &[f32], parts: usize) -> Vec<(Shard<'a>, f64)> {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let size = labels.len().div_ceil(parts.max(1));
    let mut images = images.into_iter();
    labels
        .chunks(size)
        .zip(weights.chunks(size))
        .map(|(labels, weights)| {
            let shard_images: Vec<RgbImage> = images.by_ref().take(labels.len()).collect();
            let share = weights.iter().map(|&w| f64::from(w)).sum::<f64>() / total;
            (Shard { labels: labels.to_vec(), images: shard_images, weights: weights.to_vec() }, share)
        })
        .collect()
}

/// Data parallelism: shard k runs on a replica of `net` forked to `devices[k]` (its own thread),
/// its loss — a weighted mean over the shard — is scaled by the shard's `share` of the batch's
/// sample weight, and the gradients are summed on the first device (where `net` lives). The sum
/// equals the whole batch's gradient on one device. Returns the batch loss and that gradient.
/// burn-train's multi-device strategy does the same with burn's `GradientsAccumulator`; Loupe
/// keeps its own loop for the plateau schedule, checkpoints and feature cache.
pub fn data_parallel_gradients<M, S, F>(net: &M, devices: &[Device], shards: Vec<(S, f64)>, shard_loss: F) -> (f64, GradientsParams)
where
    M: Module,
    S: Send,
    F: Fn(&M, S, &Device) -> Tensor<1> + Sync,
{
    let step = |replica: &M, shard: S, share: f64, device: &Device| {
        let loss = shard_loss(replica, shard, device);
        let value = f64::from(loss.clone().into_scalar::<f32>()) * share;
        let grads = GradientsParams::from_grads(loss.mul_scalar(share).backward(), replica);
        (value, grads.to_device(&devices[0], replica))
    };
    let results: Vec<(f64, GradientsParams)> = if devices.len() == 1 {
        // One device: the model itself, on this thread (no replica, no thread).
        shards.into_iter().map(|(shard, share)| step(net, shard, share, &devices[0])).collect()
    } else {
        std::thread::scope(|scope| {
            let step = &step;
            let workers: Vec<_> = shards
                .into_iter()
                .zip(devices)
                .map(|((shard, share), device)| {
                    let replica = net.clone().fork(device);
                    scope.spawn(move || step(&replica, shard, share, device))
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a training thread panicked")).collect()
        })
    };
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut loss = 0.0;
    for (value, grads) in results {
        loss += value;
        accumulator.accumulate(net, grads);
    }
    (loss, accumulator.grads())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    use crate::losses::weighted_mse;

    /// 8 images with different scores and sample weights; a linear model on 3 made-up features.
    fn batch() -> (Vec<ImageLabel>, Vec<f32>) {
        let labels = (0..8u64)
            .map(|id| {
                let mut counts = [0; 10];
                counts[id as usize % 6 + 2] = 3;
                counts[5] = 1;
                ImageLabel { id, counts }
            })
            .collect();
        (labels, vec![1.0, 4.0, 0.5, 2.0, 9.0, 1.0, 3.0, 0.25])
    }

    fn shard_loss(model: &Linear, shard: Shard, device: &Device) -> Tensor<1> {
        let n = shard.labels.len();
        let x: Vec<f32> = shard.labels.iter().flat_map(|l| [l.id as f32, (l.id * l.id) as f32 / 10.0, 1.0]).collect();
        let y: Vec<f32> = shard.labels.iter().map(|l| l.mean()).collect();
        let predicted = model.forward(Tensor::<2>::from_data(TensorData::new(x, [n, 3]), device)).reshape([n]);
        let target = Tensor::<1>::from_data(TensorData::new(y, [n]), device);
        weighted_mse(predicted, target, Tensor::from_data(TensorData::new(shard.weights, [n]), device))
    }

    #[test]
    fn a_batch_split_across_devices_gives_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let model: Linear = LinearConfig::new(3, 1).init(&device);
        let (labels, weights) = batch();
        let refs: Vec<&ImageLabel> = labels.iter().collect();

        let one = split_into_shards(&refs, Vec::new(), &weights, 1);
        assert_eq!(one.len(), 1);
        let (loss_one, grads_one) = data_parallel_gradients(&model, std::slice::from_ref(&device), one, shard_loss);

        // Three devices (all flex here; GPUs in real use): shards of 3, 3 and 2 images, each
        // weighted by its share of the batch's sample weight, computed on three threads.
        let three = split_into_shards(&refs, Vec::new(), &weights, 3);
        assert_eq!(three.iter().map(|(s, _)| s.labels.len()).collect::<Vec<_>>(), vec![3, 3, 2]);
        let shares: f64 = three.iter().map(|(_, share)| share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        assert!((three[1].1 - 12.0 / 20.75).abs() < 1e-9, "the middle shard holds 12 of 20.75 weight");
        let devices = vec![device.clone(), device.clone(), device.clone()];
        let (loss_three, grads_three) = data_parallel_gradients(&model, &devices, three, shard_loss);

        assert!((loss_one - loss_three).abs() < 1e-4 * loss_one, "loss {loss_one} vs {loss_three}");
        let weight_one = grads_one.get::<2>(model.weight.id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let weight_three = grads_three.get::<2>(model.weight.id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let bias_id = model.bias.as_ref().unwrap().id;
        let bias_one = grads_one.get::<1>(bias_id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let bias_three = grads_three.get::<1>(bias_id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in weight_one.iter().chain(&bias_one).zip(weight_three.iter().chain(&bias_three)) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "gradient {a} vs {b}");
        }
        // Not trivially equal: the gradient is not zero.
        assert!(weight_one.iter().any(|g| g.abs() > 1e-3));
    }
}
