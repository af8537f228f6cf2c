"""torchvision's C++ operators, for tests on a machine where they do not load.

torchvision's PyPI wheel is a CUDA build: its ``_C.so`` needs ``libtorch_cuda.so``, which
the CPU torch this project pins does not have, so ``torch.ops.torchvision.*`` are missing
and ``torchvision.ops.deform_conv2d`` / ``roi_align`` / ``nms`` cannot run or export.
:func:`ensure` declares one op under torchvision's exact schema (copied from torchvision's
``csrc/ops/*.cpp`` registrations) with a CPU kernel and a fake kernel given by the test, so
that a model calling ``torchvision.ops.X`` exports with the same FX node
(``torchvision.X.default``) a user's export has. Where torchvision's own library is loaded
(a CPU build), nothing is declared and its real kernels are used.

The kernels given here are tvm-cruise's references, checked in their own tests against
independent implementations (ONNX's reference evaluator, ONNX Runtime, torch's
``grid_sample``): what these tests establish is the importer's mapping of torchvision's
operator and arguments.
"""

from __future__ import annotations

from model_corpus import import_torchvision

SCHEMAS = {
    "deform_conv2d": ("deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, "
                      "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
                      "SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, "
                      "bool use_mask) -> Tensor"),
    "roi_align": ("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                  "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"),
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBS: list = []
_DONE: set[str] = set()
_REAL: list[bool] = []  # whether torchvision's own C++ ops loaded (decided once)


def ensure(name: str, kernel, fake=None):
    """Make ``torch.ops.torchvision.<name>`` callable (CPU) and exportable; returns
    torchvision. ``fake`` is needed where torchvision's import registered none (all but
    ``nms``)."""
    import torch

    torchvision = import_torchvision()
    if not _REAL:
        _REAL.append(bool(torchvision.extension._has_ops()))
    if name in _DONE or _REAL[0]:
        return torchvision
    qualname = f"torchvision::{name}"
    if not torch._C._jit_get_schemas_for_operator(qualname):
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define(SCHEMAS[name])
        _LIBS.append(lib)
    impl = torch.library.Library("torchvision", "IMPL", "CPU")
    impl.impl(name, kernel)
    _LIBS.append(impl)
    if fake is not None:
        torch.library.register_fake(qualname, fake)
    _DONE.add(name)
    # torchvision.ops.* refuse to run without its extension; the ops they call exist now
    torchvision.extension._has_ops = lambda: True
    return torchvision
