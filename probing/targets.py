"""Which class an explanation explains.

Shared by :mod:`probing.attention` (gradient rollout) and :mod:`probing.attribution` (a floor
below both).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

__all__ = ["resolve_targets"]


def resolve_targets(logits, target: int | Sequence[int] | None):
    """Target class per image.

    Parameters
    ----------
    logits : torch.Tensor
        ``(batch, classes)`` model output.
    target : int, sequence of int or None
        One class for all images, one per image, or None for each image's predicted class.

    Returns
    -------
    torch.Tensor
        ``(batch,)`` long tensor on the logits' device.

    Raises
    ------
    ConfigError
        When ``target`` does not give one valid class per image.
    """
    import torch

    b = logits.shape[0]
    if target is None:
        return logits.argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b or int(t.min()) < 0 or int(t.max()) >= logits.shape[-1]:
        raise ConfigError(
            f"target {target!r} does not give one class in 0..{logits.shape[-1] - 1} per image "
            f"for {b} images; pass an int or one int per image."
        )
    return t
