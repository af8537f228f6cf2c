"""How every kernel gets its schedule: tuned records, else tvm-cruise's defaults.

- ``cpu``: the default schedule of every CPU kernel that no tuning record covers
  (register-blocked reductions, threads over the outer spatial loops, vectors;
  bit-identical to TVM's lowering).
- ``layout``: build-time weight packing for convolutions whose rows are not whole vectors
  (vectorized over output channels by ``cpu``) and, on AVX2, for dense layers (blocks of
  columns, one contiguous stream per register tile).
- ``winograd``: stride-1 3x3 convolutions with enough channels and tiles as Winograd
  F(4x4, 3x3) (fast math) or F(2x2, 3x3) on AVX2 (weight transformed at build time; input
  transform, 36 or 16 matrix products, output transform with the epilogue fused).

- ``records``: the tuning-log store (layout, stamps, locking, robust reading; host records
  keyed by CPU target, NPU tilings by spec hash) and ``open_logs`` for builds;
- ``apply``: host records onto a build's kernels (MetaSchedule's database), never failing
  the build.

The jobs that write records are ``tvm_cruise.autotune`` (above the pipeline). CUDA kernels
without a record get dlight's defaults (``pipeline.finalize_passes``).
"""
