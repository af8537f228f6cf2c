"""Reference models shipped with the package (plain PyTorch, seeded, no downloads).

>>> from tvm_cruise import models
>>> model, inputs = models.get("perception-cnn")
>>> model(*inputs).shape
torch.Size([1, 128, 16, 32])
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownModelError


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    description: str
    input_shape: tuple[int, ...]
    seed: int

    def build(self):
        """The seeded ``torch.nn.Module`` in eval mode."""
        from . import zoo

        if self.name == "digits-cnn":  # trained, not seeded
            return zoo.trained_digits()
        return zoo.seeded(self._class(), self.input_shape, self.seed)

    def _class(self):
        from . import zoo

        return {
            "perception-cnn": zoo.PerceptionCNN,
            "resnet18": zoo.ResNet18,
            "transformer": zoo.TransformerEncoder,
            "pillar-bev": zoo.PillarBEV,
            "digits-cnn": zoo.DigitsCNN,
        }[self.name]

    def example_inputs(self, seed: int | None = None):
        """A tuple with one seeded N(0, 1) float32 input tensor of the model's shape (for
        ``digits-cnn``, without a seed: the first held-out image; ``pillar-bev`` draws its
        pillars and their cells, see ``zoo.PillarBEV.sample_inputs``)."""
        import torch

        if self.name == "digits-cnn" and seed is None:
            from .zoo import digits_data

            return (torch.from_numpy(digits_data()["heldout_images"][:1].copy()),)

        gen = torch.Generator().manual_seed(self.seed + 7 if seed is None else seed)
        if hasattr(self._class(), "sample_inputs"):  # models with several inputs draw their own
            return tuple(self._class().sample_inputs(gen))
        return (torch.randn(self.input_shape, generator=gen),)


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.name: m
    for m in (
        ReferenceModel(
            "perception-cnn",
            "camera backbone: five conv3x3+BN+ReLU, strides 2-1-2-1-2, 1x3x128x256",
            (1, 3, 128, 256),
            seed=11,
        ),
        ReferenceModel("resnet18", "ResNet-18 classifier, 1x3x224x224, 1000 classes",
                       (1, 3, 224, 224), seed=18),
        ReferenceModel("digits-cnn", "trained 8x8 digit classifier (scikit-learn's digits, "
                       "97.8% held-out top-1), 1x1x8x8, 10 classes", (1, 1, 8, 8), seed=0),
        ReferenceModel(
            "transformer",
            "4-layer transformer encoder, d_model 256, 4 heads, ff 1024, seq 128",
            (1, 128, 256),
            seed=4,
        ),
        ReferenceModel(
            "pillar-bev",
            "PointPillars-style BEV detector using the custom ops: pillar_scatter, "
            "multi-scale deformable attention neck, DCNv2 head; 512 pillars, 64x64 grid",
            (512, 16, 4),
            seed=21,
        ),
    )
}


def names() -> list[str]:
    return list(REFERENCE_MODELS)


def info(name: str) -> ReferenceModel:
    try:
        return REFERENCE_MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown reference model {name!r}; the bundled ones are: "
            f"{', '.join(REFERENCE_MODELS)} (or pass a path to a .onnx or .pt2 file)"
        ) from None


def get(name: str):
    """Return ``(torch_module, example_inputs)`` for a bundled reference model."""
    ref = info(name)
    return ref.build(), ref.example_inputs()


# Models whose ONNX form needs a newer opset (DeformConv exists from opset 19).
_ONNX_OPSET = {"pillar-bev": 19}


def export_onnx(name: str, path, opset: int | None = None) -> str:
    """Export a bundled model to one self-contained ``.onnx`` file (input ``x``, or ``x0``,
    ``x1``, ... for several; output ``y``); custom operators as their ONNX nodes
    (``com.cruise`` domain, see docs/custom_ops.md)."""
    import logging

    import torch

    from ..relay_ops.registry import onnx_translation_table

    model, inputs = get(name)
    opset = opset or _ONNX_OPSET.get(name, 18)
    names = ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]
    # torch's exporter warns once per torchvision op it cannot register; not ours to show.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        torch.onnx.export(model, inputs, str(path), input_names=names, output_names=["y"],
                          opset_version=opset, dynamo=True, external_data=False,
                          verbose=False, custom_translation_table=onnx_translation_table())
    finally:
        onnx_log.setLevel(level)
    return str(path)
