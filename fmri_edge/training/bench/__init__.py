"""How fast is edge inference, against PyTorch and against what this CPU can do (``fmri-edge bench``).

One run (:func:`.run.run_bench`) measures, on the same weights and the same real trials:

- **engines** (:mod:`.timing`) — onnxruntime fp32 (the exported model), onnxruntime int8 (static
  QDQ, calibrated on real trials) and PyTorch eager (the training network in eval mode under
  ``torch.inference_mode``, same thread count): latency at batch 1, trials/s at batch 32, 256,
  4096 (warm-up, then interleaved rounds; medians over every call), each engine in a process of
  its own (:mod:`.timing_worker`); the session options and batch sizes around the chosen ones;
- **FLOPs per trial** (:mod:`.flops`), counted from the ONNX graph (2 × multiply-adds of every
  Conv, Gemm and MatMul at batch 1; element-wise ops and reductions are not counted) and checked
  against the same count from the PyTorch layer shapes; achieved GFLOP/s against a **practical
  peak** (:mod:`.probe`): the float32 GEMM rate of numpy (its BLAS) on the same threads, measured
  in the same run (:mod:`.gemm_rate`), with the machine's description;
- **cold start** and **large input** (:mod:`.coldstart`): wall time of ``fmri-edge predict`` on a
  30-trial file, process start to exit, against the same job done the PyTorch way
  (:mod:`.torch_predict`); ``fmri-edge predict`` on a ≥ 100 000-trial float32 ``.npy`` made by
  the simulator: end-to-end trials/s and peak resident memory (:mod:`.process_usage`); the imports
  each command pays for (:mod:`.cli_imports`);
- **targets** (:mod:`.targets`): each goal with its measured value and verdict.

The result is a JSON-ready dict typed by :class:`.schema.BenchResult` (docs/bench.json);
:mod:`.render` draws it for a terminal and as Markdown. Ratios are computed inside one run;
nothing here asserts a wall time. torch (and onnx) are imported lazily, only by the parts that
need them. This package's ``__init__`` imports nothing, so the processes it starts with
``python -m`` pay only for their own imports.
"""
