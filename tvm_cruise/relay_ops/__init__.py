"""Graph-level custom operators AV perception models need, as Relax operators.

The folder keeps the product brief's name (``relay_ops``); Relay no longer exists in TVM
and these are Relax operators (``relax.cruise.*``). Each module defines one operator family:
its Relax op and TIR legalization, its CPU schedule, a ``torch.library`` custom op
(``torch.ops.cruise.*``) with reference and fake kernels so models ``torch.export``
cleanly, and converters from the torch and ONNX importers (see :mod:`.registry`).

- :mod:`.deform_conv`: ``deformable_conv2d`` (DCNv2, modulated), from
  ``torchvision::deform_conv2d``, ONNX ``DeformConv`` (opset 19) and mmdeploy's
  ``MMCVModulatedDeformConv2d``;
- :mod:`.msda`: ``multi_scale_deformable_attention`` (Deformable DETR, BEVFormer);
- :mod:`.pillar_scatter`: ``pillar_scatter`` (PointPillars' BEV pseudo-image);
- :mod:`.detection`: torchvision's ``nms`` and ``roi_align`` mapped onto TVM's ops.

No accelerator spec implements them: the placement report sends them to the host with the
rule ``custom-op``.
"""

from . import registry  # noqa: F401
from . import deform_conv, detection, msda, pillar_scatter  # noqa: F401  (registration)
