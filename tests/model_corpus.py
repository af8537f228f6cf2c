"""A corpus of public architectures nobody here wrote: torchvision's, timm's and Hugging
Face transformers' models.

Each entry builds a model with random weights (seeded) whose BatchNorm statistics are
measured on a seeded calibration batch (realistic: mean != 0, var != 1), on a small input.
``run(entry, path, target)`` imports it through torch.export (``"torch"``) or through
torch's ONNX exporter (``"onnx"``), builds it with tvm-cruise, runs it and compares with
PyTorch. The result is one row of docs/model_coverage.md:

- ``pass``: it built, ran and the output is within the bound;
- ``refused``: the model could not be imported, with a tvm-cruise error naming the node and
  the reason (``ModelLoadError``: the exporter's or TVM's importer's limits);
- ``fail``: it ran and the numbers are wrong (beyond the bound);
- ``error``: anything else (a crash in tvm-cruise or TVM: a bug).

The bound: fp32 on the host 1e-4 of the output's largest magnitude, or four times the model's
fp32 floor (PyTorch fp32 vs PyTorch fp64: deep FPNs reach 1e-4 from summation order
alone) where that is larger. On an accelerator
(fp16 arithmetic) 2e-2, or twice the model's own fp16 error where that is larger: a
random-weight network amplifies fp16 rounding differently per architecture, so the same
model run in fp16 by PyTorch (``module.half()`` on the CPU: fp16 tensors, fp32 inner
accumulation, as on the NPU) measures what fp16 itself costs on it. A compiler bug shows
as an error far above that floor.

torchvision's PyPI wheel is a CUDA build whose C++ ops do not load beside the CPU torch
this project pins; its Python models do. ``import_torchvision()`` declares the two op
schemas torchvision's import registers fake kernels for, so it imports; models that call
those ops (detection post-processing) are not in the corpus.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

FP32_BOUND = 1e-4
FP16_BOUND = 2e-2
TARGETS = ("llvm", "cruise-npu", "cruise-npu-lite")
PATHS = ("torch", "onnx")


def import_torchvision():
    """``torchvision``, importable beside the CPU torch (see the module docstring).

    Call it before importing timm too (timm imports torchvision).
    """
    import glob
    import importlib.util
    import os

    import torch

    if "torchvision" not in sys.modules and not torch._C._jit_get_schemas_for_operator(
            "torchvision::nms"):
        spec = importlib.util.find_spec("torchvision")
        libs = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")) if spec else []
        try:
            torch.ops.load_library(libs[0])  # a torchvision built for this torch: real ops
        except (IndexError, OSError):
            lib = torch.library.Library("torchvision", "FRAGMENT")
            for schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                           "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):
                lib.define(schema)
            _KEEP.append(lib)
    import torchvision

    return torchvision


_KEEP: list = []


@dataclass(frozen=True)
class Entry:
    name: str
    family: str          # cnn, transformer, detection, segmentation
    source: str          # torchvision / timm
    make: Callable       # () -> torch.nn.Module
    shape: tuple[int, ...] = (1, 3, 64, 64)
    fast: bool = False   # in the default test suite
    note: str = ""


# -- wrappers that pick a model's tensors (detection: backbone + heads, no NMS) -------------
def _tv(name, **kw):
    def make():
        tv = import_torchvision()
        return tv.models.get_model(name, weights=None, **kw)
    return make


def _tm(name, **kw):
    def make():
        import_torchvision()
        import timm

        return timm.create_model(name, pretrained=False, **kw)
    return make


def _segmentation(name, **kw):
    def make():
        import torch

        tv = import_torchvision()
        inner = tv.models.get_model(name, weights=None, weights_backbone=None, **kw)

        class Seg(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = inner

            def forward(self, x):
                return self.model(x)["out"]

        return Seg()
    return make


def _detection(name, **kw):
    """Backbone (+FPN) and the detection head's raw outputs (no anchors decoding or NMS,
    which are data-dependent and run on the host in any deployment)."""
    def make():
        import torch

        tv = import_torchvision()
        det = tv.models.get_model(name, weights=None, weights_backbone=None, **kw)

        class Heads(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone, self.head = det.backbone, det.head

            def forward(self, x):
                feats = self.backbone(x)
                feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
                out = self.head(feats)
                return tuple(out[k] for k in sorted(out))

        return Heads()
    return make


def _timm_features(name, **kw):
    """A timm backbone as a dense-prediction encoder (multi-scale feature maps)."""
    def make():
        import_torchvision()
        import timm
        import torch

        inner = timm.create_model(name, pretrained=False, features_only=True, **kw)

        class Features(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return tuple(self.inner(x))

        return Features()
    return make


def _hf(kind: str):
    """Hugging Face transformers models from a config (random init, no download), wrapped
    to return their tensors."""
    def make():
        import_torchvision()  # transformers imports timm/torchvision when present
        import torch
        import transformers as hf

        if kind == "segformer":
            inner, pick = hf.SegformerForSemanticSegmentation(hf.SegformerConfig()), ["logits"]
        elif kind == "yolos":
            inner = hf.YolosForObjectDetection(hf.YolosConfig(
                image_size=[64, 64], hidden_size=192, num_hidden_layers=4,
                num_attention_heads=3, intermediate_size=768, num_detection_tokens=20))
            pick = ["logits", "pred_boxes"]
        elif kind == "detr":
            inner = hf.DetrForObjectDetection(hf.DetrConfig(
                use_pretrained_backbone=False, backbone="resnet18", num_queries=20,
                encoder_layers=2, decoder_layers=2))
            pick = ["logits", "pred_boxes"]
        else:
            inner = hf.DPTForDepthEstimation(hf.DPTConfig(
                hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                intermediate_size=768, image_size=64, patch_size=16,
                backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[24, 48, 96, 192],
                fusion_hidden_size=64))
            pick = ["predicted_depth"]

        class Outputs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = inner

            def forward(self, x):
                out = self.model(pixel_values=x)
                return tuple(getattr(out, k) for k in pick)

        return Outputs()
    return make


CORPUS: dict[str, Entry] = {e.name: e for e in (
    # convolutional classifiers
    Entry("resnet50", "cnn", "torchvision", _tv("resnet50")),
    Entry("resnext50_32x4d", "cnn", "torchvision", _tv("resnext50_32x4d")),
    Entry("mobilenet_v2", "cnn", "torchvision", _tv("mobilenet_v2")),
    Entry("mobilenet_v3_small", "cnn", "torchvision", _tv("mobilenet_v3_small"), fast=True),
    Entry("efficientnet_b0", "cnn", "torchvision", _tv("efficientnet_b0")),
    Entry("convnext_tiny", "cnn", "torchvision", _tv("convnext_tiny")),
    Entry("regnet_y_400mf", "cnn", "torchvision", _tv("regnet_y_400mf")),
    Entry("shufflenet_v2_x1_0", "cnn", "torchvision", _tv("shufflenet_v2_x1_0")),
    Entry("squeezenet1_1", "cnn", "torchvision", _tv("squeezenet1_1"), fast=True),
    Entry("densenet121", "cnn", "torchvision", _tv("densenet121")),
    Entry("googlenet", "cnn", "torchvision", _tv("googlenet", aux_logits=False,
                                                   init_weights=True)),
    Entry("cspdarknet53", "cnn", "timm", _tm("cspdarknet53")),
    Entry("ghostnet_100", "cnn", "timm", _tm("ghostnet_100")),
    Entry("repvgg_a0", "cnn", "timm", _tm("repvgg_a0")),
    Entry("mobilenetv4_conv_small", "cnn", "timm", _tm("mobilenetv4_conv_small")),
    # vision transformers and hybrids
    Entry("vit_tiny", "transformer", "timm", _tm("vit_tiny_patch16_224", img_size=64),
          fast=True),
    Entry("swin_t", "transformer", "torchvision", _tv("swin_t")),
    Entry("mobilevit_xxs", "transformer", "timm", _tm("mobilevit_xxs")),
    Entry("levit_128s", "transformer", "timm", _tm("levit_128s", img_size=64)),
    Entry("pvt_v2_b0", "transformer", "timm", _tm("pvt_v2_b0")),
    Entry("poolformer_s12", "transformer", "timm", _tm("poolformer_s12")),
    # its attention biases are sized for 224x224 inputs
    Entry("efficientformer_l1", "transformer", "timm", _tm("efficientformer_l1"),
          shape=(1, 3, 224, 224)),
    Entry("edgenext_xx_small", "transformer", "timm", _tm("edgenext_xx_small")),
    # detection (backbone + FPN + heads) and segmentation
    Entry("retinanet_resnet50_fpn", "detection", "torchvision",
          _detection("retinanet_resnet50_fpn"), shape=(1, 3, 128, 128)),
    Entry("ssdlite320_mobilenet_v3_large", "detection", "torchvision",
          _detection("ssdlite320_mobilenet_v3_large"), shape=(1, 3, 128, 128)),
    Entry("fcos_resnet50_fpn", "detection", "torchvision", _detection("fcos_resnet50_fpn"),
          shape=(1, 3, 128, 128)),
    Entry("deeplabv3_mobilenet_v3_large", "segmentation", "torchvision",
          _segmentation("deeplabv3_mobilenet_v3_large", aux_loss=False)),
    Entry("lraspp_mobilenet_v3_large", "segmentation", "torchvision",
          _segmentation("lraspp_mobilenet_v3_large")),
    Entry("fcn_resnet50", "segmentation", "torchvision",
          _segmentation("fcn_resnet50", aux_loss=False)),
    Entry("pvt_v2_b0_features", "segmentation", "timm", _timm_features("pvt_v2_b0")),
    # Hugging Face transformers (config-initialised)
    Entry("segformer_b0", "segmentation", "transformers", _hf("segformer")),
    Entry("dpt_small", "segmentation", "transformers", _hf("dpt")),
    Entry("yolos_small", "detection", "transformers", _hf("yolos")),
    Entry("detr_resnet18", "detection", "transformers", _hf("detr")),
    Entry("hrnet_w18_small", "segmentation", "timm", _timm_features("hrnet_w18_small")),
)}


# -- building the reference ----------------------------------------------------------------
def instantiate(entry: Entry, seed: int = 0):
    """``(module, input, reference outputs)``: seeded weights, BN statistics measured on a
    seeded calibration batch, eval mode."""
    import torch

    torch.manual_seed(seed)
    module = entry.make()
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if bns:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        module.train()
        with torch.no_grad():
            for _ in range(2):
                module(torch.randn((4,) + entry.shape[1:], generator=gen))
    module.eval()
    x = torch.randn(entry.shape, generator=torch.Generator().manual_seed(seed + 2))
    with torch.no_grad():
        ref = _flat(module(x))
    return module, x, ref


def _flat(out) -> list[np.ndarray]:
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    if isinstance(out, dict):
        return [a for k in sorted(out) for a in _flat(out[k])]
    return [out.detach().float().numpy()]


def fp32_floor(module, x, ref) -> float:
    """The error of PyTorch's own fp32 result against fp64."""
    import torch

    exact = copy.deepcopy(module).double()
    with torch.no_grad():
        out = _flat(exact(x.double()))
    return max(rel_err(r, o) for o, r in zip(out, ref))


def fp16_floor(module, x, ref) -> float | None:
    """The error of the model run in fp16 by PyTorch (None where PyTorch cannot)."""
    import torch

    try:
        half = copy.deepcopy(module).half()
        with torch.no_grad():
            out = _flat(half(x.half()))
    except Exception:  # some CPU kernels have no fp16 version
        return None
    return max(rel_err(o, r) for o, r in zip(out, ref))


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        return float("inf")
    scale = np.abs(ref).max()
    return float(np.abs(out - ref).max() / scale) if scale > 0 else float(np.abs(out).max())


def export_onnx(module, x, path: str) -> str:
    """torch's default ONNX exporter (dynamo); the legacy exporter where it fails."""
    import logging

    import torch

    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        try:
            torch.onnx.export(module, (x,), path, input_names=["x"], dynamo=True,
                              external_data=False, verbose=False)
            return "dynamo"
        except Exception:
            torch.onnx.export(module, (x,), path, input_names=["x"], dynamo=False,
                              opset_version=17)
            return "legacy"
    finally:
        log.setLevel(level)


@dataclass
class Result:
    model: str
    path: str
    target: str
    status: str                  # pass / refused / fail / error
    error: float | None = None
    bound: float | None = None
    floor: float | None = None
    npu_op_share: float | None = None
    seconds: float = 0.0
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))


class Prepared:
    """One corpus model, instantiated once and exported once, for several builds."""

    def __init__(self, entry: Entry, workdir: str | None = None):
        self.entry = entry
        self.module, self.x, self.ref = instantiate(entry)
        self.floor = fp16_floor(self.module, self.x, self.ref)
        self.floor32 = fp32_floor(self.module, self.x, self.ref)
        self.workdir = workdir or tempfile.mkdtemp(prefix="corpus-")
        self._onnx: str | None = None
        self.exporter = None

    def model_for(self, path: str):
        if path == "torch":
            return self.module, (self.x,)
        if self._onnx is None:
            file = os.path.join(self.workdir, f"{self.entry.name}.onnx")
            self.exporter = export_onnx(self.module, self.x, file)
            self._onnx = file
        return self._onnx, None

    def bound(self, accelerated: bool) -> float:
        if not accelerated:
            return max(FP32_BOUND, 4 * self.floor32)
        return max(FP16_BOUND, 2 * self.floor) if self.floor is not None else FP16_BOUND


def run(prepared: Prepared, path: str, target: str, **build_kwargs) -> Result:
    import tvm_cruise

    entry = prepared.entry
    start = time.time()
    res = Result(entry.name, path, target, "error")
    try:
        try:
            model, example = prepared.model_for(path)
        except Exception as err:  # the exporter, not us
            res.status, res.detail = "refused", f"torch ONNX export failed: {err}"[:300]
            return res
        art = tvm_cruise.build(model, target=target, example_inputs=example,
                               name=entry.name, **build_kwargs)
        outs = art.run(prepared.x.numpy())
        outs = outs if isinstance(outs, list) else [outs]
        placement = art.placement
        accelerated = placement is not None and any(o.device != "host" for o in placement.ops)
        if placement is not None:
            res.npu_op_share = placement.summary()["op_share"]
        res.bound = prepared.bound(accelerated)
        res.floor = prepared.floor if accelerated else prepared.floor32
        if len(outs) != len(prepared.ref):
            res.status = "fail"
            res.detail = f"{len(outs)} outputs, PyTorch gives {len(prepared.ref)}"
            return res
        res.error = max(rel_err(o, r) for o, r in zip(outs, prepared.ref))
        res.status = "pass" if res.error <= res.bound else "fail"
    except Exception as err:
        from tvm_cruise.errors import InputMismatchError, ModelLoadError

        text = f"{type(err).__name__}: {err}"
        # A refusal names what the model uses that cannot be compiled; a BuildError or
        # anything else from the compiler itself is a bug (what the partitioner accepts
        # must lower, or go to the host with a reason).
        if isinstance(err, (ModelLoadError, InputMismatchError)):
            res.status, res.detail = "refused", text[:400]
        else:
            res.status = "error"
            res.detail = text[:400] + "\n" + traceback.format_exc()[-1500:]
    finally:
        res.seconds = round(time.time() - start, 1)
    return res
