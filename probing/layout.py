"""Token layout: which sequence positions hold which token kinds, and the patch grid.

A ViT's token sequence is ``prefix tokens`` (CLS, distillation, register tokens, in the order the
model concatenates them) followed by ``rows * cols`` patch tokens in row-major order. The layout is
derived from the model (:meth:`TokenLayout.from_model`), never assumed: nothing in probing may
assume that token 0 is CLS or that the grid is square.

Conventions
-----------
- ``token`` is the position in the sequence, 0-based.
- Patch ``p`` (0-based among patches) sits at ``row = p // cols``, ``col = p % cols``.
- Patch centres in pixels are ``((row + 0.5) * patch_h, (col + 0.5) * patch_w)`` measured from the
  image's top-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import LayoutError, ModelError

__all__ = ["TOKEN_KINDS", "PREFIX_KINDS", "TokenKind", "TokenLayout"]

TokenKind = Literal["cls", "reg", "dist", "patch", "pooled"]
#: Every token kind a token frame may hold, in category order.
TOKEN_KINDS: tuple[str, ...] = ("cls", "reg", "dist", "patch", "pooled")
#: Kinds that occupy prefix (non-patch) sequence positions.
PREFIX_KINDS: tuple[str, ...] = ("cls", "reg", "dist")


@dataclass(frozen=True)
class TokenLayout:
    """The token layout of a ViT.

    Parameters
    ----------
    grid : tuple of int
        Patch grid ``(rows, cols)``.
    patch_size : tuple of int
        Patch size in pixels ``(height, width)``.
    prefix : tuple of str
        Kind of each prefix token in sequence order, each one of ``"cls"``, ``"reg"``, ``"dist"``.
        Empty for models without prefix tokens.
    no_embed_class : bool
        True when the absolute positional embedding covers patch tokens only (timm
        ``no_embed_class=True``); False when it also covers the prefix tokens.
    position : tuple of str
        Positional schemes the model uses: any of ``"learned"`` (absolute table added to the
        tokens), ``"rope"`` (rotary, applied inside attention), ``"relpos"`` (relative-position
        bias inside attention). Empty when the model has no positional information.
    global_pool : str
        The model's pooling for its head: ``"token"`` (CLS), ``"avg"`` (mean of patch tokens), or
        timm's other values (``"map"``, ``"avgmax"``, ``""``).
    """

    grid: tuple[int, int]
    patch_size: tuple[int, int]
    prefix: tuple[str, ...] = ("cls",)
    no_embed_class: bool = False
    position: tuple[str, ...] = ("learned",)
    global_pool: str = "token"
    _kinds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grid = tuple(int(g) for g in self.grid)
        patch = tuple(int(p) for p in self.patch_size)
        if len(grid) != 2 or min(grid) < 1:
            raise LayoutError(
                f"grid {self.grid!r} is not two positive integers; pass (rows, cols)."
            )
        if len(patch) != 2 or min(patch) < 1:
            raise LayoutError(
                f"patch_size {self.patch_size!r} is not two positive integers; pass "
                "(height, width)."
            )
        bad = [k for k in self.prefix if k not in PREFIX_KINDS]
        if bad:
            raise LayoutError(
                f"prefix kind {bad[0]!r} is unknown; use one of {', '.join(PREFIX_KINDS)}."
            )
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "prefix", tuple(self.prefix))
        object.__setattr__(self, "position", tuple(self.position))
        kinds = np.array(list(self.prefix) + ["patch"] * (grid[0] * grid[1]), dtype=object)
        object.__setattr__(self, "_kinds", kinds)

    # ------------------------------------------------------------------ sizes
    @property
    def rows(self) -> int:
        """Number of patch rows."""
        return self.grid[0]

    @property
    def cols(self) -> int:
        """Number of patch columns."""
        return self.grid[1]

    @property
    def num_patches(self) -> int:
        """Number of patch tokens, ``rows * cols``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_prefix_tokens(self) -> int:
        """Number of prefix (non-patch) tokens."""
        return len(self.prefix)

    @property
    def n_tokens(self) -> int:
        """Sequence length, prefix plus patches."""
        return self.num_prefix_tokens + self.num_patches

    @property
    def has_cls(self) -> bool:
        """Whether the model has a CLS token."""
        return "cls" in self.prefix

    @property
    def cls_index(self) -> int | None:
        """Sequence position of the CLS token, or None for models without one."""
        return self.prefix.index("cls") if self.has_cls else None

    @property
    def kinds(self) -> tuple[str, ...]:
        """Token kinds present in the sequence (prefix kinds, then ``"patch"``)."""
        seen = dict.fromkeys(self.prefix)
        return tuple(seen) + ("patch",)

    @property
    def patch_slice(self) -> slice:
        """Slice of the sequence that holds the patch tokens."""
        return slice(self.num_prefix_tokens, self.n_tokens)

    @property
    def pos_embed_offset(self) -> int:
        """Number of prefix rows in the absolute positional table (0 with ``no_embed_class``)."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    # -------------------------------------------------------------- positions
    def positions(self, kind: str) -> np.ndarray:
        """Sequence positions of every token of ``kind``.

        Parameters
        ----------
        kind : str
            ``"cls"``, ``"reg"``, ``"dist"`` or ``"patch"``.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` int64 positions in sequence order.

        Raises
        ------
        LayoutError
            When the model has no token of that kind.
        """
        if kind not in self.kinds:
            raise LayoutError(
                f"token kind {kind!r} does not exist in this model (it has "
                f"{', '.join(self.kinds)}); ask for one of those."
            )
        return np.flatnonzero(self._kinds == kind).astype(np.int64)

    def kind_of(self, token: int) -> str:
        """Kind of the token at sequence position ``token`` (negative counts from the end)."""
        return str(self._kinds[self._check_token(token)])

    def row_col(self, token: int) -> tuple[int, int] | None:
        """Grid ``(row, col)`` of a patch token, or None for a prefix token."""
        t = self._check_token(token) - self.num_prefix_tokens
        if t < 0:
            return None
        return divmod(t, self.cols)

    def token_of(self, row: int, col: int) -> int:
        """Sequence position of the patch at ``(row, col)``."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise LayoutError(
                f"patch ({row}, {col}) is outside the {self.rows}x{self.cols} grid; "
                "use 0 <= row < rows and 0 <= col < cols."
            )
        return self.num_prefix_tokens + row * self.cols + col

    def grid_coords(self) -> np.ndarray:
        """``(num_patches, 2)`` int64 ``(row, col)`` of each patch token in sequence order."""
        r, c = np.divmod(np.arange(self.num_patches), self.cols)
        return np.stack([r, c], axis=1).astype(np.int64)

    def patch_centers_px(self) -> np.ndarray:
        """``(num_patches, 2)`` float64 patch centres ``(y, x)`` in pixels from the top-left."""
        rc = self.grid_coords().astype(np.float64) + 0.5
        return rc * np.asarray(self.patch_size, dtype=np.float64)

    def token_table(self) -> dict[str, np.ndarray]:
        """Per-token columns for a frame: ``token``, ``kind``, ``row``, ``col``.

        Returns
        -------
        dict of numpy.ndarray
            Each ``(n_tokens,)``; ``row`` and ``col`` are float64 with NaN for prefix tokens.
        """
        n_pre = self.num_prefix_tokens
        row = np.full(self.n_tokens, np.nan)
        col = np.full(self.n_tokens, np.nan)
        rc = self.grid_coords()
        row[n_pre:] = rc[:, 0]
        col[n_pre:] = rc[:, 1]
        return {
            "token": np.arange(self.n_tokens, dtype=np.int64),
            "kind": self._kinds.copy(),
            "row": row,
            "col": col,
        }

    def query_index(self, query: int | str | None = None) -> int | None:
        """Resolve an attention query to a sequence position.

        ``None`` or ``"cls"`` means the CLS token, or None (mean over patch queries) for models
        without one; an int is a sequence position; ``"pooled"`` (the toolkit's name of the
        mean over patch tokens) is always None. ``"dist"`` and ``"reg"`` are the first token of
        that kind.

        Raises
        ------
        LayoutError
            When the model has no token of the asked kind, the position is outside the
            sequence, or the query is ``"mean"`` (the name is ``"pooled"``).
        """
        if query is None or query == "cls":
            if query == "cls" and not self.has_cls:
                raise LayoutError(
                    "query 'cls' was asked for but this model has no CLS token; use query=None "
                    "or 'pooled' (mean over patch queries) or a token index."
                )
            return self.cls_index
        if query == "pooled":
            return None
        if query == "mean":
            raise LayoutError(
                "query 'mean' is unknown (did you mean 'pooled'?); pass query='pooled' for the "
                "mean over patch queries."
            )
        if isinstance(query, str):
            return int(self.positions(query)[0])
        return self._check_token(int(query))

    def _check_token(self, token: int) -> int:
        n = self.n_tokens
        if not -n <= token < n:
            raise LayoutError(
                f"token {token} is outside the sequence of {n} tokens; use 0..{n - 1} "
                "(or a negative index from the end)."
            )
        return token % n

    # ------------------------------------------------------------ from models
    @classmethod
    def from_model(cls, model: object, img_size: Sequence[int] | None = None) -> TokenLayout:
        """Derive the layout of a timm Vision Transformer.

        Parameters
        ----------
        model : torch.nn.Module
            A timm ``VisionTransformer``, ``Eva``, ``VisionTransformerRelPos`` or any module with
            timm's ``patch_embed`` / ``num_prefix_tokens`` attributes.
        img_size : tuple of int, optional
            Input ``(height, width)`` for models built with ``dynamic_img_size=True``; defaults to
            the size the model was built for.

        Raises
        ------
        ModelError
            When the module is not a ViT (it lacks ``patch_embed`` or ``blocks``).
        """
        missing = [a for a in ("patch_embed", "blocks") if not hasattr(model, a)]
        if missing:
            raise ModelError(
                f"{type(model).__name__} is not a Vision Transformer: it has no "
                f"{' or '.join(missing)}; pass a timm ViT (e.g. 'vit_tiny_patch16_224')."
            )
        pe = model.patch_embed
        patch = tuple(int(p) for p in _pair(getattr(pe, "patch_size", 16)))
        if img_size is not None:
            h, w = (int(s) for s in _pair(img_size))
            if hasattr(pe, "dynamic_feat_size"):
                grid = tuple(int(g) for g in pe.dynamic_feat_size((h, w)))
            else:
                grid = (h // patch[0], w // patch[1])
        else:
            grid = tuple(int(g) for g in _pair(pe.grid_size))
        prefix: list[str] = []
        if getattr(model, "cls_token", None) is not None:
            prefix.append("cls")
        if getattr(model, "dist_token", None) is not None:
            prefix.append("dist")
        n_reg = int(getattr(model, "num_reg_tokens", 0) or 0)
        if n_reg == 0 and getattr(model, "reg_token", None) is not None:
            n_reg = int(model.reg_token.shape[1])
        prefix.extend(["reg"] * n_reg)
        n_prefix = getattr(model, "num_prefix_tokens", None)
        if n_prefix is not None and int(n_prefix) != len(prefix):
            raise ModelError(
                f"{type(model).__name__} reports {n_prefix} prefix tokens but probing found "
                f"{prefix}; pass a timm ViT whose prefix tokens are cls/dist/reg tokens."
            )
        position: list[str] = []
        if getattr(model, "pos_embed", None) is not None:
            position.append("learned")
        if getattr(model, "rope", None) is not None:
            position.append("rope")
        if any(getattr(b, "attn", None) is not None and hasattr(b.attn, "rel_pos")
               for b in model.blocks) or getattr(model, "rel_pos", None) is not None:
            position.append("relpos")
        pool = getattr(model, "global_pool", "token")
        return cls(
            grid=grid,  # type: ignore[arg-type]
            patch_size=patch,  # type: ignore[arg-type]
            prefix=tuple(prefix),
            no_embed_class=bool(getattr(model, "no_embed_class", False)),
            position=tuple(position),
            global_pool=pool if isinstance(pool, str) else "token",
        )

    def describe(self) -> str:
        """A human-readable multi-line description (what ``probing info`` prints)."""
        cls_pos = self.cls_index
        lines = [
            f"sequence length   {self.n_tokens}",
            f"prefix tokens     {self.num_prefix_tokens} {list(self.prefix)}",
            f"CLS position      {cls_pos if cls_pos is not None else 'none (no CLS token)'}",
            f"patch grid        {self.rows} x {self.cols} = {self.num_patches} patches "
            f"(tokens {self.num_prefix_tokens}..{self.n_tokens - 1}, row-major)",
            f"patch size        {self.patch_size[0]} x {self.patch_size[1]} px",
            f"positional        {', '.join(self.position) or 'none'}"
            + (" (table covers patches only: no_embed_class)" if self.no_embed_class else ""),
            f"global pool       {self.global_pool or 'none'}",
        ]
        return "\n".join(lines)


def _pair(x: object) -> tuple:
    if isinstance(x, (tuple, list)):
        return tuple(x) if len(x) == 2 else (x[0], x[0])
    if hasattr(x, "tolist"):
        return _pair(x.tolist())
    return (x, x)
