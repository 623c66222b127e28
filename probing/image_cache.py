"""Preprocessed images of a source kept in memory, when the whole source fits a small budget.

A run reads the same images several times: the extraction, the model card, the random-init
control and analyses that need pixels (attribution, head ablation, the raw-pixel probe
baseline). Decoding (or generating) and preprocessing an image costs about 0.8 ms even at
32 x 32, so the demo's 512 images were prepared 2,700 times. :class:`ImageCache`, held by the
source object once :meth:`probing.data.ImageSource.keep_images` is called (the runner does,
for its run's source), keeps each preprocessed image the first time it is read, but only
when every image of the source fits :data:`CACHE_BYTES` together: a run on a large image set
holds nothing (its memory does not grow with the number of images), a small one reads each
image once.

Conventions: the key is the preprocessing (the transform's settings) and the image's
position in the source; values are the ``(C, H, W)`` float32 tensors the transform gives,
never handed out themselves (batches are new tensors stacked from them), so a caller that
edits a batch in place cannot change what a later read sees. A source's images are taken to
be fixed once read (an :class:`~probing.data.ArraySource` whose array is edited afterwards
needs a new source object).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import torch

__all__ = ["CACHE_BYTES", "ImageCache"]

#: The most bytes of preprocessed images one source keeps (all of them or none).
CACHE_BYTES = 64 * 2**20


class ImageCache:
    """Preprocessed images of one source by (preprocessing, position).

    Parameters
    ----------
    n_images : int
        Number of images in the source.
    """

    def __init__(self, n_images: int) -> None:
        self.n_images = int(n_images)
        self._images: dict[tuple[str, int], torch.Tensor] = {}

    def __reduce__(self):  # a pickled source (sent to another process) starts empty
        return ImageCache, (self.n_images,)

    @staticmethod
    def key(data_config: dict) -> str:
        """The preprocessing's identity: its settings as sorted JSON."""
        return json.dumps(data_config, sort_keys=True, default=str)

    def enabled(self, data_config: dict) -> bool:
        """Whether every image of the source, preprocessed for ``data_config``, fits
        :data:`CACHE_BYTES` (float32 ``input_size``)."""
        size = data_config.get("input_size")
        if not size:
            return False
        return self.n_images * math.prod(int(s) for s in size) * 4 <= CACHE_BYTES

    def get(self, key: str, positions: Sequence[int]) -> list[torch.Tensor] | None:
        """The cached images at ``positions``, or None unless all of them are cached."""
        try:
            return [self._images[key, int(p)] for p in positions]
        except KeyError:
            return None

    def put(self, key: str, positions: Sequence[int], images: torch.Tensor) -> None:
        """Keep ``images`` ``(len(positions), C, H, W)`` (copied, so the batch stays the
        caller's)."""
        for p, image in zip(positions, images.detach().cpu()):
            self._images[key, int(p)] = image.clone()
