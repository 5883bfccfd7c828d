"""Benchmarks of the hatch ops against what a user would write themselves (naive PyTorch, eager and
under torch.compile; kornia for the reprojection step), speed and peak memory, recorded as data.

    benchmarks.cases      the ops and problem sizes (paper scale, dense grids, sweeps)
    benchmarks.providers  who computes each op (hatch, naive, naive_compiled, kornia)
    benchmarks.measure    timing (median, IQR) and peak-memory primitives, CPU and CUDA
    benchmarks.harness    runs one (case, provider) per subprocess and returns result rows
    benchmarks.report     `python -m benchmarks.report`: runs everything, writes CSV/JSON, the markdown
                          table with ratios and targets, and the plots
    benchmarks.test_ops   the pytest-benchmark suite (`pytest benchmarks/ --benchmark-only`)
"""
