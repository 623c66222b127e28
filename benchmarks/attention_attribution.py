"""Cost of attention rollout and captum attributions relative to plain model passes.

Rows (each a ratio against a baseline measured in the same run, on a timm
``vit_tiny_patch16_224`` with random weights; ``quick`` uses 64 x 64 inputs, 16 patches):

- rollout (numpy, from captured attention) vs one forward pass of the same batch (<= 0.05), both
  the full ``(batch, N, N)`` joint attention and :func:`rollout_map` (the CLS row only);
- integrated gradients, n_steps = 50, one image vs one forward+backward of a batch of 50 (<= 1.2);
- occlusion cost per patch vs one forward pass of one image (informative, no target);
- gradient rollout vs one forward+backward of the same batch (informative, no target).
"""

from __future__ import annotations

import torch

from benchmarks._common import Row, median_time, paired_times, print_rows


def run(quick: bool = False) -> list[Row]:
    """Measure the rows above; ``quick`` keeps the whole run under a minute on 2 CPU cores."""
    import timm

    from probing.attention import gradient_rollout, rollout, rollout_map
    from probing.attention_hooks import capture_attention
    from probing.attribution import attribution_maps
    from probing.layout import TokenLayout

    torch.manual_seed(0)
    size = 64 if quick else 224
    repeat = 5 if quick else 7
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size).eval()
    layout = TokenLayout.from_model(model)
    batch = 8
    x = torch.randn(batch, 3, size, size)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    with torch.no_grad(), capture_attention(model) as store:
        model(x)
    attn = dict(store)
    t_rollout, t_forward = paired_times(lambda: rollout(attn, layout=layout), forward, repeat)
    t_map, t_forward2 = paired_times(lambda: rollout_map(attn, layout), forward, repeat)

    one = x[:1]
    x50 = one.repeat(50, 1, 1, 1).requires_grad_(True)

    def fwd_bwd_50() -> None:
        model(x50)[:, 0].sum().backward()

    t_ig, t_fb50 = paired_times(
        lambda: attribution_maps(model, one, layout, "integrated_gradients", target=0,
                                 n_steps=50),
        fwd_bwd_50,
        repeat,
    )

    def forward_one() -> None:
        with torch.no_grad():
            model(one)

    t_one = median_time(forward_one, repeat=repeat)
    t_occ = median_time(
        lambda: attribution_maps(model, one, layout, "occlusion", target=0,
                                 internal_batch_size=64),
        repeat=max(1, repeat - 2),
    )
    per_patch = t_occ / layout.num_patches

    xg = x.clone().requires_grad_(True)

    def fwd_bwd() -> None:
        model(xg)[:, 0].sum().backward()

    t_grad, t_fb = paired_times(
        lambda: gradient_rollout(model, x, layout, target=0), fwd_bwd, repeat
    )
    tag = f"{size}px, batch {batch}"
    return [
        Row(f"rollout joint NxN vs forward ({tag})", t_rollout, t_forward, "s", "<= 0.05"),
        Row(f"rollout_map (CLS row) vs forward ({tag})", t_map, t_forward2, "s", "<= 0.05"),
        Row(f"IG n_steps=50 vs fwd+bwd of 50 ({size}px)", t_ig, t_fb50, "s", "<= 1.2"),
        Row(f"occlusion per patch vs forward of 1 ({layout.num_patches} patches)", per_patch,
            t_one, "s", ""),
        Row(f"gradient rollout vs fwd+bwd ({tag})", t_grad, t_fb, "s", ""),
    ]


if __name__ == "__main__":
    print_rows(run())
