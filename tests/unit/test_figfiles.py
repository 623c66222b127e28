"""Figure files: the one layout pass gives the bytes a full draw before saving gives."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from probing.figfiles import PNG_DPI, _format_options, _metadata, save_figure  # noqa: E402
from probing.style import paper_style  # noqa: E402


def _figure(layout: str | None):
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(1, 2, layout=layout, figsize=(5, 2.5))
    ax[0].plot(rng.normal(size=40), label="a line")
    ax[0].legend(loc="best")
    ax[0].set_title("a long title " * 2)
    image = ax[1].imshow(rng.normal(size=(6, 6)))
    fig.colorbar(image, ax=ax[1])
    fig.suptitle("suptitle")
    return fig


def _drawn_first(fig, stem) -> None:
    """The reference: a full draw (layout included) before measuring and saving each format."""
    with paper_style(None):
        fig.draw_without_rendering()
        bbox = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
        fig.set_layout_engine("none")
        for ext in ("png", "svg"):
            fig.savefig(stem.with_name(f"{stem.name}.{ext}"), format=ext,
                        dpi=PNG_DPI if ext == "png" else None, metadata=_metadata(ext),
                        bbox_inches=bbox, **_format_options(ext))


@pytest.mark.parametrize("layout", ["constrained", "tight", None])
def test_layout_without_a_draw_writes_the_bytes_of_a_drawn_figure(tmp_path, layout):
    ours, reference = _figure(layout), _figure(layout)
    save_figure(ours, tmp_path / "ours")
    _drawn_first(reference, tmp_path / "reference")
    for ext in ("png", "svg"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == \
            (tmp_path / f"reference.{ext}").read_bytes(), ext
    plt.close("all")
