"""Peer for benches/forward.rs: the same 13-conv VGG16 graph, built from the same safetensors,
timed in onnxruntime on the CPU. Prints one JSON line: {"batch": ms_per_image, ...}.
With --export, writes the graph to a file instead (the browser bench's onnxruntime-web peer).

usage: python3 benches/onnx_vgg16.py WEIGHTS.safetensors THREADS BATCH [BATCH...]
       python3 benches/onnx_vgg16.py --export OUT.onnx WEIGHTS.safetensors
needs: pip install onnx onnxruntime safetensors numpy (--export: onnx safetensors numpy)
"""
import json
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
POOL_AFTER = {2, 7, 14, 21, 28}  # a 2x2 max-pool follows these convs (torchvision layout)


def build_graph(weights):
    nodes, inits, x = [], [], "input"
    for i in CONV_INDICES:
        w, b = f"features.{i}.weight", f"features.{i}.bias"
        inits += [numpy_helper.from_array(weights[w], w), numpy_helper.from_array(weights[b], b)]
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{i}"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        x = f"relu{i}"
        if i in POOL_AFTER:
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"pool{i}"
    graph = helper.make_graph(
        nodes, "vgg16_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 512, 7, 7])],
        inits,
    )
    # IR version 8 (ONNX 1.10): what opset 13 needs, and old enough for onnxruntime-web to load.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def main():
    if sys.argv[1] == "--export":
        onnx.save(build_graph(load_file(sys.argv[3])), sys.argv[2])
        return
    path, threads, batches = sys.argv[1], int(sys.argv[2]), [int(b) for b in sys.argv[3:]]
    import onnxruntime as ort

    model = build_graph(load_file(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    result = {}
    for batch in batches:
        x = np.random.default_rng(0).normal(0, 50, (batch, 3, 224, 224)).astype(np.float32)
        session.run(None, {"input": x})  # warm-up
        runs, start = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - start < 5.0:
            session.run(None, {"input": x})
            runs += 1
        result[str(batch)] = (time.perf_counter() - start) / runs / batch * 1000.0
    print(json.dumps(result))


if __name__ == "__main__":
    main()
