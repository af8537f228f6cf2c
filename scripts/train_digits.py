#!/usr/bin/env python
"""Train the bundled ``digits-cnn`` reference model and write its weights and data split.

    pip install scikit-learn        # only this script needs it (the digits ship in its wheel)
    python scripts/train_digits.py  # writes tvm_cruise/models/data/digits.npz

scikit-learn's 8x8 handwritten digits (1797 images, 16 grey levels; UCI "Optical
Recognition of Handwritten Digits", CC BY 4.0) are split 80/20, stratified, seeded: the
model trains on the 80% and the package ships the 20% held out, so fp32 / fp16 / int8
builds have a top-1 accuracy that means something without downloads. A seeded slice of
the training images is shipped too, as int8 calibration data. Deterministic on a CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tvm_cruise" / "models" / "data" / "digits.npz"
SEED, EPOCHS, CALIBRATION = 0, 40, 64


def main() -> int:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from tvm_cruise.models.zoo import DigitsCNN

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2,
                                              stratify=labels, random_state=SEED)
    torch.manual_seed(SEED)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        train_acc = (model(xt).argmax(1) == yt).float().mean().item()
        test_acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
    rng = np.random.default_rng(SEED)
    calib = x_tr[rng.choice(len(x_tr), CALIBRATION, replace=False)]
    weights = {f"w.{k}": v.numpy() for k, v in model.state_dict().items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, heldout_images=x_te, heldout_labels=y_te,
                        calibration_images=calib, **weights)
    print(f"trained {EPOCHS} epochs: train top-1 {train_acc:.4f}, held-out top-1 "
          f"{test_acc:.4f} ({len(y_te)} images); wrote {OUT.relative_to(ROOT)} "
          f"({OUT.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
