"""TensorIR schedules: defaults for host kernels (llvm, cuda) and the NPU's tile intrinsics.

Today the host uses TVM's lowering as is (CPU) and dlight's default GPU schedules (CUDA);
hand-written defaults for what tuning has not covered are still to come.
"""
