"""TensorIR schedules for host kernels.

- ``cpu``: the default schedule of every CPU kernel that no tuning record covers
  (register-blocked reductions, threads over the outer spatial loops, vectors;
  bit-identical to TVM's lowering).
- ``layout``: build-time weight packing for narrow-row convolutions (vectorized over
  output channels by ``cpu``).

Tuned kernels get MetaSchedule's schedules from the tuning logs (``tvm_cruise.autotune``);
CUDA kernels without a record get dlight's defaults (``pipeline.finalize_passes``).
"""
