"""Train the built-in demo model on generated ``shapes`` images (``probing train-demo``).

Deterministic from ``seed``: data come from :mod:`probing.shapes` (train seed ``seed``,
held-out seed ``seed + 1``), initialisation and batch order from ``torch.manual_seed(seed)``.
Prints held-out accuracy per epoch and writes the weights as safetensors plus a JSON record.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..shapes import render_shape, shape_factors
from . import ARCH, DATA_CONFIG, RECORD, SHAPES_OPTIONS, WEIGHTS

log = logging.getLogger("probing")

__all__ = ["shapes_arrays", "train_demo"]


def shapes_arrays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` demo-distribution images normalised as the demo model expects.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Images ``(n, 3, 32, 32)`` float32 and shape ids ``(n,)`` int64.
    """
    opts = SHAPES_OPTIONS
    facs = [shape_factors(i, seed, opts["size"], backgrounds=opts["backgrounds"],
                          rotation=opts["rotation"]) for i in range(n)]
    x = np.stack([render_shape(f, opts["size"]) for f in facs]).astype(np.float32) / 255.0
    mean = np.asarray(DATA_CONFIG["mean"], dtype=np.float32)
    std = np.asarray(DATA_CONFIG["std"], dtype=np.float32)
    x = (x - mean) / std
    y = np.array([f["shape_id"] for f in facs], dtype=np.int64)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        pred = torch.cat([model(xb).argmax(-1) for xb in x.split(512)])
    return float((pred == y).float().mean())


def train_demo(
    out: Path | None = None,
    n_train: int = 20000,
    n_test: int = 2000,
    epochs: int = 12,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> dict:
    """Train the demo ViT and write ``demo_vit.safetensors`` and ``demo_vit.json``.

    Parameters
    ----------
    out : pathlib.Path, optional
        Directory to write to (``demo-model`` in the working directory by default). It must not
        hold a ``demo_vit.safetensors`` / ``demo_vit.json`` that ``train-demo`` did not write,
        nor lie inside the installed package (the shipped weights are never overwritten).
    n_train, n_test : int
        Number of generated training and held-out images.
    epochs, batch_size, lr : int, int, float
        AdamW schedule (cosine decay, weight decay 0.05).
    seed : int
        Seed of data, initialisation and batch order.

    Returns
    -------
    dict
        The record written to JSON (held-out accuracy, seconds, settings).
    """
    import timm
    from safetensors.torch import save_file

    out = Path(out) if out is not None else Path("demo-model")
    check_train_output(out)

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    x_train, y_train = shapes_arrays(n_train, seed)
    x_test, y_test = shapes_arrays(n_test, seed + 1)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ARCH)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        for idx in order.split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            sched.step()
        acc = _accuracy(model, x_test, y_test)
        log.info("epoch %d/%d: loss %.3f, held-out accuracy %.4f", epoch + 1, epochs,
                 loss.item(), acc)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS.name), metadata={"arch": json.dumps(ARCH)})
    record = {
        "architecture": "timm VisionTransformer",
        "arch": ARCH,
        "data_config": DATA_CONFIG,
        "shapes_options": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in SHAPES_OPTIONS.items()},
        "n_train": n_train,
        "n_test": n_test,
        "epochs": epochs,
        "seed": seed,
        "held_out_accuracy": round(acc, 4),
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "made_by": MADE_BY,
    }
    (out / RECORD.name).write_text(json.dumps(record, indent=2) + "\n")
    log.info("held-out shape accuracy %.4f after %d epochs, %.0f s; wrote %s; use it with "
             "load_model('%s')", acc, epochs, seconds, out / WEIGHTS.name, out / WEIGHTS.name)
    return record


MADE_BY = "probing train-demo"


def check_train_output(out: Path) -> None:
    """Raise ConfigError before training when writing into ``out`` could overwrite a file that
    ``train-demo`` did not write, or the package's shipped weights."""
    from ..errors import ConfigError
    from ..ownership import is_within

    if is_within(out, WEIGHTS.parent.parent):
        raise ConfigError(f"train-demo --out {out} lies inside the probing package; choose a "
                          "folder outside it (the shipped weights are never overwritten).")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train-demo --out {out} is a file; choose a folder.")
    try:
        ours = json.loads((out / RECORD.name).read_text()).get("made_by") == MADE_BY
    except (OSError, ValueError, AttributeError):
        ours = False
    clash = [p.name for p in (out / WEIGHTS.name, out / RECORD.name) if p.exists()]
    if clash and not ours:
        raise ConfigError(f"train-demo --out {out} already holds {', '.join(clash)} that "
                          "train-demo did not write; choose an empty or new folder.")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress on stderr
    train_demo()
