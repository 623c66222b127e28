"""GPU check: ``python -m benchmarks.gpu_check [--model NAME] [--batches 64,128,256]``.

One short script (under 4 minutes on one GPU) for a machine with CUDA. For
``vit_base_patch16_224`` (random init, ``pretrained=False``: the check is about speed and
numerics, not accuracy) it prints, per batch size:

- images/s of the plain forward (float32, and under bf16 / fp16 autocast): the floor;
- images/s of :func:`probing.extract` with every block's CLS + patch tokens into a frame, and
  the same with the attention weights of every block, in float32, bf16 and fp16 autocast;
- peak GPU memory of each (``torch.cuda.max_memory_allocated``, reset before each);
- the autocast tolerance: the largest per-vector relative error
  ``||x_amp - x_fp32|| / ||x_fp32||`` of the extracted tokens against float32 (the documented
  bound in :func:`probing.extract` is 0.05 for bf16 and 0.01 for fp16 on the demo model; the
  error grows with depth, so a 12-block model is printed, not asserted), and the largest
  absolute difference of attention weights, at the first batch size.

This is not in ``python -m benchmarks`` (that table is for CPUs) and never in the tests.
Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch


def _timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after one warm-up, synchronised."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _peak_mib(fn) -> float:
    """Peak GPU memory of one ``fn()`` call in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _relative_error(ref, got) -> float:
    from probing.frames import embedding_matrix

    x = embedding_matrix(ref).astype(np.float64)
    y = embedding_matrix(got).astype(np.float64)
    return float((np.linalg.norm(y - x, axis=1) / np.linalg.norm(x, axis=1)).max())


def _check_batch(loaded, batch: int, repeat: int, tolerance: bool) -> list[tuple]:
    """Print the speed rows of one batch size; return its tolerance rows (when asked)."""
    from probing import extract

    size = loaded.data_config["input_size"]
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, *size, device="cuda", generator=gen)
    refs: dict[str, object] = {}
    tol_rows = []
    for precision in ("float32", "bf16", "fp16"):
        amp = None if precision == "float32" else precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)

        def plain(amp=amp, dtype=dtype) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype,
                                                        enabled=amp is not None):
                loaded.model(x)

        def tokens(amp=amp) -> object:
            return extract(loaded, x, layers="all", kinds=("cls", "patch"),
                           batch_size=batch, autocast=amp, progress=False)

        def attention(amp=amp) -> object:
            return extract(loaded, x, layers="all", kinds=("cls", "patch"), attention=True,
                           batch_size=batch, autocast=amp, progress=False)

        base = _timed(plain, repeat)
        for what, fn in (("plain forward", plain), ("extract all blocks", tokens),
                         ("extract + attention", attention)):
            t = base if fn is plain else _timed(fn, max(2, repeat // 2))
            peak = _peak_mib(fn)
            print(f"{batch:>5}  {what:<28} {precision:<9} {batch / t:>9.1f} "
                  f"{t / base:>8.2f} {peak:>9.0f}", flush=True)
        if not tolerance:
            continue
        out = attention()
        if precision == "float32":
            refs["tokens"], refs["attention"] = out
        else:
            err = _relative_error(refs["tokens"], out[0])
            a_ref = np.stack(refs["attention"]["weights"].to_numpy())
            a_got = np.stack(out[1]["weights"].to_numpy())
            tol_rows.append((batch, precision, err, float(np.abs(a_got - a_ref).max())))
    return tol_rows


def main(argv: list[str] | None = None) -> int:
    """Run the check and print its table; 0 unless something failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batches", default="64,256",
                        help="batch sizes; tolerances are measured at the first")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to measure.")
        return 0
    from probing import load_model

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for the tolerances
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_model(args.model, pretrained=False, device="cuda")
    size = loaded.data_config["input_size"]
    print(f"gpu_check: {args.model} on {torch.cuda.get_device_name(0)}, torch "
          f"{torch.__version__}, input {tuple(size)}")
    head = (f"{'batch':>5}  {'what':<28} {'precision':<9} {'img/s':>9} {'x plain':>8} "
            f"{'peak MiB':>9}")
    print(head)
    print("-" * len(head))
    tol_rows = []
    for i, batch in enumerate(int(b) for b in args.batches.split(",")):
        tol_rows += _check_batch(loaded, batch, args.repeat, tolerance=i == 0)
        torch.cuda.empty_cache()
    print("\nautocast tolerance against float32 (all blocks, tokens of every layer):")
    print(f"{'batch':>5}  {'precision':<9} {'max rel. error (tokens)':>24} "
          f"{'max abs. diff (attention)':>26}")
    for batch, precision, err, aerr in tol_rows:
        print(f"{batch:>5}  {precision:<9} {err:>24.4f} {aerr:>26.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
