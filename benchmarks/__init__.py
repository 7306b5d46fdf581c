"""vaefunc benchmarks: vaefunc against the canonical eager PyTorch VAE, with a measured roofline.

``python -m benchmarks [--quick] [--device cpu|cuda]`` runs every case, writes
``benchmarks/results/<machine>.json`` and renders ``docs/BENCHMARKS.md`` with a
plot. The modules:

* :mod:`benchmarks.reference`: pytorch/examples' VAE loop, the baseline.
* :mod:`benchmarks.roofline`: FLOPs and bytes of a step; the measured GEMM rate
  of the step's own shapes and the copy bandwidth.
* :mod:`benchmarks.cases`: the cases (train step, epoch, batch sweep, widths,
  conv, log-likelihood, cold start, default run), each a JSON row with a
  quality band.
* :mod:`benchmarks.run` and :mod:`benchmarks.report`: collect and render.
* ``bench_*.py``: the same cases as pytest-benchmark tests
  (``python -m pytest benchmarks -o python_files='bench_*.py'``).
"""
