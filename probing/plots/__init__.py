"""Figures: functions that take result frames and return matplotlib Figures.

Nothing here computes a statistic; every function draws what it is given. One submodule per
family of figures; all share :mod:`probing.plots.style`.
"""

from .style import DIVERGING, OKABE_ITO, SEQUENTIAL, new_figure, paper_style

__all__ = ["DIVERGING", "OKABE_ITO", "SEQUENTIAL", "new_figure", "paper_style"]
