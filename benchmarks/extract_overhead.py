"""Extraction overhead against a plain forward pass, and peak memory of streamed extraction.

(a) CLS + patch tokens of every layer into a token frame, vs the plain (fused) forward;
(b) the same with attention weights of every block (non-fused attention), vs the plain forward;
(c) peak RSS of a streamed extraction into a store at N and 4N images (fresh processes).

Targets: (a) <= 1.05, (b) <= 1.15, RSS(4N) <= 1.1 x RSS(N). Each ratio compares medians of
several runs measured in the same process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from benchmarks._common import Row, paired_times, print_rows

MODELS = {
    "vit_tiny": ("vit_tiny_patch16_224", {}),
    "vit_small": ("vit_small_patch16_224", {}),
    "demo": ("demo", {}),
}

_RSS_SCRIPT = """
import resource, sys, tempfile, torch
torch.set_num_threads(2)
from probing import extract, load_model
m = load_model("demo")
with tempfile.TemporaryDirectory() as d:
    extract(m, "shapes:n=" + sys.argv[1], store=d + "/s", batch_size=64, shard_size=256,
            attention=True, pooled="mean", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_kib(n: int) -> int:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    """Measure every figure; ``quick`` uses smaller batches and fewer repeats."""
    from probing import extract, load_model

    torch.set_num_threads(2)
    rows: list[Row] = []
    repeat = 3 if quick else 9
    for label, (name, kw) in MODELS.items():
        if quick and label == "vit_small":
            continue
        torch.manual_seed(0)
        loaded = load_model(name, pretrained=False, **kw) if name != "demo" else load_model(name)
        size = loaded.data_config["input_size"]
        batch = 256 if label == "demo" else (8 if quick else 16)
        x = torch.randn(batch, *size)

        def plain(loaded=loaded, x=x) -> None:
            with torch.inference_mode():
                loaded.model(x)

        def tokens(loaded=loaded, x=x, batch=batch) -> None:
            extract(loaded, x, layers="all", kinds=("cls", "patch"), batch_size=batch,
                    progress=False)

        def with_attention(loaded=loaded, x=x, batch=batch) -> None:
            extract(loaded, x, layers="all", kinds=("cls", "patch"), attention=True,
                    batch_size=batch, progress=False)

        base, a = paired_times(plain, tokens, repeat)
        base2, b = paired_times(plain, with_attention, repeat)
        rows.append(Row(f"(a) {label}: CLS+patch, all layers -> frame ({batch} img)", a,
                        base, "s", "<= 1.05"))
        rows.append(Row(f"(b) {label}: + attention weights ({batch} img)", b, base2, "s",
                        "<= 1.15"))
    n = 256 if quick else 1024
    rss_n = _peak_rss_kib(n)
    rss_4n = _peak_rss_kib(4 * n)
    rows.append(Row(f"(c) demo: peak RSS streamed to a store, {4 * n} vs {n} images",
                    rss_4n / 1024, rss_n / 1024, "MiB", "<= 1.1"))
    return rows


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print_rows(result)
    if "--json" in sys.argv:
        print(json.dumps([r.as_dict() for r in result], indent=2))
