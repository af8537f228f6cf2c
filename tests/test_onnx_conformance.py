"""Operator conformance on the accelerators: ONNX's own node tests for every op the specs
claim, built for cruise-npu and cruise-npu-lite. Each case either matches ONNX's reference
(fp16 accuracy where the op runs on the NPU) or is refused by the importer with an error
naming the node; never wrong numbers, never a crash.

The default suite runs the cases that exercise an accelerator attribute (dilations,
ceil_mode, padding forms, broadcasts, matmul ranks, concat axes, BatchNorm broadcasts);
``-m slow`` runs every case of those ops.
"""

from __future__ import annotations

import pytest

import tvm_cruise
from tvm_cruise.errors import ModelLoadError

import onnx_cases

NPU_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Add",
           "Sub", "Mul", "Max", "Min", "Relu", "Clip", "Sigmoid", "Tanh", "Gelu", "HardSwish",
           "HardSigmoid", "Concat", "Resize", "BatchNormalization", "Reshape", "Flatten",
           "Squeeze", "Unsqueeze", "Identity"]
NPU_BOUND = 2e-2
TARGETS = ["cruise-npu", "cruise-npu-lite"]

# the attribute space the issue names, one case each, in the default suite
DEFAULT = [
    "test_maxpool_2d_dilations", "test_averagepool_2d_dilations", "test_maxpool_2d_ceil",
    "test_averagepool_2d_ceil", "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_averagepool_2d_pads_count_include_pad", "test_maxpool_2d_same_upper",
    "test_averagepool_2d_same_lower", "test_maxpool_2d_strides", "test_globalaveragepool",
    "test_matmul_1d_1d", "test_matmul_1d_3d", "test_matmul_4d_1d", "test_matmul_4d",
    "test_matmul_bcast", "test_matmul_2d", "test_gemm_all_attributes",
    "test_gemm_default_scalar_bias",
    "test_concat_1d_axis_0", "test_concat_2d_axis_0", "test_concat_2d_axis_1",
    "test_concat_3d_axis_negative_1",
    "test_batchnorm_example", "test_batchnorm_epsilon",
    "test_add_bcast", "test_sub_bcast", "test_mul_bcast", "test_max_one_input",
    "test_min_two_inputs", "test_add_int8",
    "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
    "test_clip_splitbounds", "test_relu", "test_gelu_default_1", "test_hardswish",
    "test_resize_upsample_scales_nearest", "test_resize_upsample_scales_linear",
    "test_resize_upsample_scales_linear_align_corners",
    "test_flatten_axis2", "test_unsqueeze_axis_0",
]


def run_case(c, target):
    """``(outcome, detail)``: pass, refused, fail or error."""
    model, inputs, expected = onnx_cases.constantized(c)
    try:
        art = tvm_cruise.build(model, target=target, name=c.name)
        outs = art.run(*inputs)
    except ModelLoadError as err:
        node = c.model.graph.node[0]
        assert node.op_type in str(err) or node.name in str(err) or "ONNX" in str(err), err
        return "refused", str(err)
    outs = outs if isinstance(outs, list) else [outs]
    on_npu = any(o.device != "host" for o in art.placement.ops)
    tol = NPU_BOUND if on_npu else max(float(c.rtol), 1e-4)
    problem = onnx_cases.compare(outs, expected, tol)
    return ("fail" if problem else "pass"), (problem or ("npu" if on_npu else "host"))


def _params(names, marks=()):
    return [pytest.param(n, t, id=f"{n}-{t}", marks=list(marks)) for n in names
            for t in TARGETS]


@pytest.mark.parametrize("name, target", _params(DEFAULT))
def test_attribute_space(name, target):
    outcome, detail = run_case(onnx_cases.case(name), target)
    assert outcome in ("pass", "refused"), f"{name} on {target}: {outcome}: {detail}"


def _all_names():
    return [c.name for c in onnx_cases.cases_for(NPU_OPS) if c.name not in DEFAULT]


@pytest.mark.slow
@pytest.mark.parametrize("name, target", _params(_all_names()))
def test_every_node_case(name, target):
    outcome, detail = run_case(onnx_cases.case(name), target)
    assert outcome in ("pass", "refused"), f"{name} on {target}: {outcome}: {detail}"


@pytest.mark.parametrize("target", TARGETS)
def test_the_accelerator_really_runs_the_attribute_cases(target):
    """Most attribute cases must run on the NPU (else this suite would test the host)."""
    on_npu = 0
    for name in ["test_maxpool_2d_ceil", "test_averagepool_2d_pads_count_include_pad",
                 "test_matmul_2d", "test_add_bcast", "test_mul_bcast", "test_relu",
                 "test_batchnorm_example", "test_conv_with_strides_and_asymmetric_padding"]:
        outcome, detail = run_case(onnx_cases.case(name), target)
        assert outcome == "pass", (name, detail)
        on_npu += detail == "npu"
    assert on_npu >= 6, on_npu
