"""Figures: functions that take result frames and return matplotlib Figures.

Nothing here computes a statistic; every function draws what it is given. One submodule per
family of figures; all share :mod:`probing.style`. Map grids (attention maps, rollout,
attribution) come as lists of figures, one per page no taller than :data:`MAX_HEIGHT`. Text
from data (labels, categories, ids, column names) is drawn literally, through :data:`LITERAL`
and :func:`data_legend`.
"""

from ..style import (
    DIVERGING,
    LITERAL,
    MAX_HEIGHT,
    METHOD_COLOURS,
    OKABE_ITO,
    SEQUENTIAL,
    class_colours,
    data_legend,
    new_figure,
    paper_style,
    style_overrides,
)
from .ablation import plot_head_ablation
from .attention import (
    attention_grid_pages,
    plot_attention_distance,
    plot_attention_grid,
    plot_multihead,
)
from .attribution import method_map_pages, plot_faithfulness, plot_method_maps, plot_sanity
from .embedding import plot_embedding_maps, plot_explained_variance
from .lens import plot_logit_lens
from .posenc import plot_decay_1d, plot_decay_2d, plot_similarity_grid, plot_subspace_angles
from .probes import plot_probe_layers
from .similarity import plot_cka_heatmap, plot_similarity_vs_layer

__all__ = [
    "DIVERGING",
    "LITERAL",
    "MAX_HEIGHT",
    "METHOD_COLOURS",
    "OKABE_ITO",
    "SEQUENTIAL",
    "attention_grid_pages",
    "class_colours",
    "data_legend",
    "method_map_pages",
    "new_figure",
    "paper_style",
    "plot_attention_distance",
    "plot_attention_grid",
    "plot_cka_heatmap",
    "plot_decay_1d",
    "plot_decay_2d",
    "plot_embedding_maps",
    "plot_explained_variance",
    "plot_faithfulness",
    "plot_head_ablation",
    "plot_logit_lens",
    "plot_method_maps",
    "plot_multihead",
    "plot_probe_layers",
    "plot_sanity",
    "plot_similarity_grid",
    "plot_similarity_vs_layer",
    "plot_subspace_angles",
    "style_overrides",
]
