"""The built-in demo model: a small timm ViT trained on the ``shapes`` dataset.

The weights (``demo_vit.safetensors``) and their record (``demo_vit.json``: architecture, data,
seed, held-out accuracy, training time) ship inside the package; :mod:`probing.demo.train`
(``probing train-demo``) reproduces them from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
WEIGHTS = DEMO_DIR / "demo_vit.safetensors"
RECORD = DEMO_DIR / "demo_vit.json"

#: timm ``VisionTransformer`` keyword arguments of the demo model.
ARCH: dict = {
    "img_size": 32,
    "patch_size": 4,
    "in_chans": 3,
    "num_classes": 4,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "class_token": True,
    "global_pool": "token",
}
#: Preprocessing of the demo model (timm data-config keys).
DATA_CONFIG: dict = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 1.0,
    "crop_mode": "center",
}
#: The ``shapes`` options the demo model was trained on (and the demo data uses).
SHAPES_OPTIONS: dict = {"size": 32, "backgrounds": ("plain",), "rotation": False}
