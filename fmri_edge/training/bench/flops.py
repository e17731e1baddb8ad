"""What the model costs: FLOPs per trial counted from the ONNX graph (every Conv, Gemm and MatMul
as the matrix product it is) and from the PyTorch layers, and the achieved rate against a peak."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def gemm_nodes(path: str | Path, batch: int = 1) -> tuple[list[dict], int, int]:
    """Every Conv, Gemm and MatMul of the ONNX graph at ``batch`` trials, as the matrix product it
    is: ``{"op", "name", "m", "k", "n", "flops"}`` with flops = 2·m·k·n (a Conv as its im2col
    product: m = batch·output positions, k = in channels·kernel, n = out channels; a batched
    MatMul as one product over the flattened leading axes). Shapes from onnx shape inference.
    Also returns the element count of every other op's output and the parameter count."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    g = model.graph
    for vi in (g.input[0], *g.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del g.value_info[:]
    g = shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = [
            d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
        ]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    nodes, other = [], 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # (out, in/groups, k…)
            m, k, n = int(np.prod(out)) // out[1], int(np.prod(w[1:])), out[1]
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            k = a[0] if "transA" in attrs and attrs["transA"].i else a[1]
            m, n = out[0], out[1]
        elif node.op_type == "MatMul":
            a = shapes[node.input[0]]
            m, k, n = int(np.prod(out[:-1])), a[-1], out[-1]
        else:
            if out and all(d is not None for d in out):
                other += int(np.prod(out))
            continue
        nodes.append(
            {
                "op": node.op_type,
                "name": node.name or node.output[0],
                "m": int(m),
                "k": int(k),
                "n": int(n),
                "flops": 2 * int(m) * int(k) * int(n),
            }
        )
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return nodes, other, params


def flops_onnx(path: str | Path) -> dict:
    """FLOPs per trial counted from the ONNX graph at batch 1: 2 × multiply-adds of every Conv,
    Gemm and MatMul (:func:`gemm_nodes`). Element-wise ops and reductions are counted separately
    as output elements (``other_elements``), not as FLOPs."""
    nodes, other, params = gemm_nodes(path, 1)
    by_op: dict[str, int] = {}
    for nd in nodes:
        by_op[nd["op"]] = by_op.get(nd["op"], 0) + nd["flops"]
    return {
        "per_trial": int(sum(by_op.values())),
        "by_op": by_op,
        "other_elements": other,
        "parameters": params,
        "method": "ONNX graph at batch 1: 2 × multiply-adds of Conv, Gemm, MatMul",
    }


def efficiency(trials_per_s: float, flops_per_trial: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s (trials/s × FLOPs per trial) and its percentage of a peak rate."""
    gflops = trials_per_s * flops_per_trial / 1e9
    return {
        "gflops": round(gflops, 3),
        "pct_of_gemm_peak": round(100 * gflops / peak_gflops, 1) if peak_gflops else None,
    }


def flops_torch(members, n_times: int, n_regions: int = 246) -> int:
    """The same count from the PyTorch layers (Conv1d, Linear) seen in one batch-1 forward pass."""
    import torch
    from torch import nn

    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv1d):
            total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0]
        elif isinstance(mod, nn.Linear):
            total[0] += 2 * out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for net in members
        for m in net.modules()
        if isinstance(m, (nn.Conv1d, nn.Linear))
    ]
    try:
        with torch.inference_mode():
            for net in members:
                net(torch.zeros(1, n_regions, n_times))
    finally:
        for h in handles:
            h.remove()
    return total[0]
