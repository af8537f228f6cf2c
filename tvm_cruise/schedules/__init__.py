"""TensorIR schedules for host kernels.

- ``cpu``: the default schedule of every CPU kernel that no tuning record covers (threads
  over the outer spatial loops, vectorized output rows; bit-identical to TVM's lowering).

Tuned kernels get MetaSchedule's schedules from the tuning logs (``tvm_cruise.autotune``);
CUDA kernels without a record get dlight's defaults (``pipeline.finalize_passes``).
"""
