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
  image's top-left corner. ``patch_size`` is the *effective* patch: input pixels per token (input
  size / token grid), also for stems that are not one convolution (a hybrid ResNet stem, an MbConv
  stem, XCiT's conv stack), so distances in pixels are in units of the input image.
- Late-joining prefix tokens: in CaiT and XCiT the CLS token enters only in the class-attention
  blocks after ``model.blocks``, in ConViT before block ``local_up_to_layer + 1``. Blocks before
  that hold patch tokens only: :meth:`TokenLayout.block_layout` gives the layout each block
  really holds, and ``token`` numbers stay those of the full layout in every frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from .errors import LayoutError, ModelError

__all__ = ["POSITION_SCHEMES", "TOKEN_KINDS", "PREFIX_KINDS", "TokenKind", "TokenLayout"]

TokenKind = Literal["cls", "reg", "dist", "patch", "pooled"]
#: Every token kind a token frame may hold, in category order.
TOKEN_KINDS: tuple[str, ...] = ("cls", "reg", "dist", "patch", "pooled")
#: Kinds that occupy prefix (non-patch) sequence positions.
PREFIX_KINDS: tuple[str, ...] = ("cls", "reg", "dist")
#: Every positional scheme a layout may name, with what it is in timm.
POSITION_SCHEMES: dict[str, str] = {
    "learned": "a learned absolute table (pos_embed) added to the tokens",
    "sincos": "a fixed sinusoidal (Fourier) absolute encoding added to the tokens (XCiT)",
    "rope": "rotary position embedding applied to q and k inside attention",
    "relpos": "a learned relative-position bias of timm's vit_relpos models (a table or an MLP "
              "of log offsets, per block or shared: attn.rel_pos / shared_rel_pos)",
    "relpos-beit": "BEiT's relative-position bias table (with CLS-to-token terms), per block or "
                   "shared (rel_pos_bias)",
    "relpos-sam": "SAM's decomposed relative position: per-axis tables read by q and added to the "
                  "attention logits (attn.rel_pos_h / rel_pos_w)",
    "gpsa": "ConViT's gated positional self-attention: a learned attention over relative patch "
            "offsets mixed per head with content attention by a gate",
}


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
        Positional schemes the model uses, names of :data:`POSITION_SCHEMES`: ``"learned"``
        (absolute table added to the tokens), ``"sincos"`` (fixed sinusoidal encoding),
        ``"rope"`` (rotary, inside attention), ``"relpos"`` / ``"relpos-beit"`` /
        ``"relpos-sam"`` (relative-position biases of each kind), ``"gpsa"`` (ConViT's gated
        positional self-attention). Empty when the model has no positional information.
    global_pool : str
        The model's pooling for its head: ``"token"`` (CLS), ``"avg"`` (mean of patch tokens), or
        timm's other values (``"map"``, ``"avgmax"``, ``""``).
    prefix_joins : int
        1-based number of the first block whose tokens include the prefix tokens: 1 for most
        ViTs; ``local_up_to_layer + 1`` for ConViT; ``depth + 1`` for CaiT and XCiT, whose CLS
        token joins in the class-attention blocks after ``model.blocks`` (so among the capture
        sites only ``"norm"`` holds it). See :meth:`block_layout`.
    """

    grid: tuple[int, int]
    patch_size: tuple[int, int]
    prefix: tuple[str, ...] = ("cls",)
    no_embed_class: bool = False
    position: tuple[str, ...] = ("learned",)
    global_pool: str = "token"
    prefix_joins: int = 1
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
        if int(self.prefix_joins) < 1:
            raise LayoutError(
                f"prefix_joins {self.prefix_joins!r} is not a block number; pass 1 (the prefix "
                "is there from the first block) or the 1-based block where it joins."
            )
        object.__setattr__(self, "prefix_joins", int(self.prefix_joins))
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

    @property
    def has_relpos(self) -> bool:
        """Whether attention carries a relative-position term (any ``relpos*`` or ``gpsa``)."""
        return any(p.startswith("relpos") or p == "gpsa" for p in self.position)

    # ------------------------------------------------------------ per block
    def block_layout(self, block: int) -> TokenLayout:
        """The tokens block ``block`` really holds (its input and its output).

        Parameters
        ----------
        block : int
            1-based block number as in :mod:`probing.selection`; ``0`` is the input of the
            first block (the stored layer 0). Numbers past ``len(model.blocks)`` (CaiT's and
            XCiT's class-attention blocks) hold the full sequence.

        Returns
        -------
        TokenLayout
            ``self`` for blocks from :attr:`prefix_joins` on; before that a layout of the patch
            tokens only (no prefix, patch ``p`` at position ``p``). Its positions are offset from
            the full layout's by ``self.num_prefix_tokens - block.num_prefix_tokens``; frames
            keep the full layout's token numbers.

        Raises
        ------
        LayoutError
            When ``block`` is negative.
        """
        if int(block) < 0:
            raise LayoutError(
                f"block {block} is not a block number; pass 0 (the first block's input) or "
                "1..depth (a block's output)."
            )
        if max(int(block), 1) >= self.prefix_joins or not self.prefix:
            return self
        return self.patch_layout()

    def patch_layout(self) -> TokenLayout:
        """This layout without its prefix tokens (what ``patch_embed`` outputs)."""
        if not self.prefix:
            return self
        return replace(self, prefix=(), prefix_joins=1)

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
        cached = self.__dict__.get("_token_table")
        if cached is None:  # built once per layout (extraction asks per layer and kind)
            n_pre = self.num_prefix_tokens
            row = np.full(self.n_tokens, np.nan)
            col = np.full(self.n_tokens, np.nan)
            rc = self.grid_coords()
            row[n_pre:] = rc[:, 0]
            col[n_pre:] = rc[:, 1]
            cached = {"token": np.arange(self.n_tokens, dtype=np.int64), "kind": self._kinds,
                      "row": row, "col": col}
            object.__setattr__(self, "_token_table", cached)
        return {name: values.copy() for name, values in cached.items()}

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
            A timm ``VisionTransformer`` (also hybrid and MbConv stems), ``Eva``,
            ``VisionTransformerRelPos``, ``Beit``, ``VisionTransformerSAM``, ``Cait``,
            ``ConVit``, ``Xcit`` or any module with timm's ``patch_embed`` / ``blocks`` /
            ``num_prefix_tokens`` attributes.
        img_size : tuple of int, optional
            Input ``(height, width)`` for models built with ``dynamic_img_size=True``; defaults to
            the size the model was built for.

        Returns
        -------
        TokenLayout
            With the effective patch size (input pixels per token), every positional scheme the
            model uses and where a late-joining CLS token joins (:attr:`prefix_joins`).

        Raises
        ------
        ModelError
            When the module is not a ViT (it lacks ``patch_embed`` or ``blocks``), belongs to a
            family probing cannot lay out (CrossViT, TNT, NaFlexViT: the message names the
            family and why), or its attributes do not describe a token layout.
        """
        name = type(model).__name__
        family = _UNSUPPORTED.get(name)
        if family is not None:
            raise ModelError(
                f"{name} ({family[0]}) is not supported by probing: {family[1]}; use a ViT with "
                "one sequence of prefix and patch tokens (e.g. 'vit_tiny_patch16_224')."
            )
        missing = [a for a in ("patch_embed", "blocks") if not hasattr(model, a)]
        if missing:
            raise ModelError(
                f"{name} is not a Vision Transformer: it has no "
                f"{' or '.join(missing)}; pass a timm ViT (e.g. 'vit_tiny_patch16_224')."
            )
        try:
            return _from_model(cls, model, img_size)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(
                f"{name} has a patch_embed and blocks but probing cannot read its token layout "
                f"from them ({type(exc).__name__}: {exc}); pass a timm ViT whose patch_embed "
                "has img_size and grid_size (e.g. 'vit_tiny_patch16_224')."
            ) from exc

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
        if self.prefix and self.prefix_joins > 1:
            lines.append(f"prefix joins      at block {self.prefix_joins} (layers "
                         f"0..{self.prefix_joins - 1} hold patch tokens only)")
        return "\n".join(lines)


def _pair(x: object) -> tuple:
    if isinstance(x, (tuple, list)):
        return tuple(x) if len(x) == 2 else (x[0], x[0])
    if hasattr(x, "tolist"):
        return _pair(x.tolist())
    return (x, x)


# class name -> (family, why probing cannot lay out its tokens)
_UNSUPPORTED: dict[str, tuple[str, str]] = {
    "CrossVit": ("the CrossViT family", "it runs two token sequences of different patch sizes "
                 "side by side (two patch grids, two CLS tokens), so there is no single token "
                 "layout"),
    "TNT": ("the TNT family", "its tokens are nested (every patch token carries an inner "
            "sequence of pixel tokens), and its blocks pass pairs of sequences"),
    "NaFlexVit": ("the NaFlexViT family", "it packs variable-length patch sequences with "
                  "per-token position indices and masks (its embeds module has no fixed patch "
                  "grid)"),
}


def _from_model(cls: type[TokenLayout], model, img_size) -> TokenLayout:
    pe = model.patch_embed
    patch = _effective_patch(pe)
    if img_size is not None:
        h, w = (int(s) for s in _pair(img_size))
        if hasattr(pe, "dynamic_feat_size"):
            grid = tuple(int(g) for g in pe.dynamic_feat_size((h, w)))
        else:
            grid = (h // patch[0], w // patch[1])
    else:
        grid = _static_grid(pe, patch)
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
    depth = len(model.blocks)
    joins = _prefix_joins(model, depth)
    if joins > depth + 1 or (joins == depth + 1 and not _has_class_blocks(model)):
        prefix, joins = [], 1  # ConViT with local_up_to_layer >= depth: the CLS never joins
    pos = getattr(model, "pos_embed", None)
    no_embed_class = bool(getattr(model, "no_embed_class", False))
    if not hasattr(model, "no_embed_class") and prefix and getattr(pos, "ndim", 0) == 3:
        no_embed_class = int(pos.shape[1]) == grid[0] * grid[1]  # a table of patches only
    if joins > 1:
        no_embed_class = True  # positions are added before the prefix joins
    pool = getattr(model, "global_pool", "token")
    return cls(
        grid=grid,  # type: ignore[arg-type]
        patch_size=patch,  # type: ignore[arg-type]
        prefix=tuple(prefix),
        no_embed_class=no_embed_class,
        position=_position_schemes(model),
        global_pool=pool if isinstance(pool, str) else "token",
        prefix_joins=joins,
    )


def _effective_patch(pe) -> tuple[int, int]:
    """Input pixels per token: input size / grid, else timm's total reduction ``feat_ratio``."""
    img, grid = getattr(pe, "img_size", None), getattr(pe, "grid_size", None)
    if img is not None and grid is not None:
        img, grid = _pair(img), _pair(grid)
        if all(int(i) % int(g) == 0 for i, g in zip(img, grid)):
            return (int(img[0]) // int(grid[0]), int(img[1]) // int(grid[1]))
    if hasattr(pe, "feat_ratio"):
        try:  # HybridEmbed: backbone reduction * patch; PatchEmbed: patch_size
            return tuple(int(r) for r in _pair(pe.feat_ratio(as_scalar=False)))
        except TypeError:
            pass
    return tuple(int(p) for p in _pair(pe.patch_size))


def _static_grid(pe, patch: tuple[int, int]) -> tuple[int, int]:
    if getattr(pe, "grid_size", None) is not None:
        return tuple(int(g) for g in _pair(pe.grid_size))
    img = _pair(pe.img_size)  # XCiT's ConvPatchEmbed: img_size and patch_size only
    return (int(img[0]) // patch[0], int(img[1]) // patch[1])


def _has_class_blocks(model) -> bool:
    """CaiT (``blocks_token_only``) and XCiT (``cls_attn_blocks``): CLS joins after the blocks."""
    return any(getattr(model, a, None) is not None
               for a in ("blocks_token_only", "cls_attn_blocks"))


def _prefix_joins(model, depth: int) -> int:
    if _has_class_blocks(model):
        return depth + 1
    local = getattr(model, "local_up_to_layer", None)  # ConViT: CLS joins before this block
    if local is not None and getattr(model, "cls_token", None) is not None:
        return int(local) + 1
    return 1


def _position_schemes(model) -> tuple[str, ...]:
    """Every positional scheme of ``model``, in :data:`POSITION_SCHEMES` order."""
    found: set[str] = set()
    pos = getattr(model, "pos_embed", None)
    if pos is not None:
        # a parameter table is learned (also when frozen); a module or buffer computes a fixed one
        found.add("learned" if type(pos).__name__ == "Parameter" else "sincos")
    if getattr(model, "rope", None) is not None:
        found.add("rope")
    if getattr(model, "shared_rel_pos", None) is not None:
        found.add("relpos")
    if getattr(model, "rel_pos_bias", None) is not None:
        found.add("relpos-beit")
    for block in model.blocks:
        attn = getattr(block, "attn", None)
        if attn is None:
            continue
        if getattr(attn, "rel_pos", None) is not None:
            found.add("relpos")
        if getattr(attn, "relative_position_bias_table", None) is not None:
            found.add("relpos-beit")
        if getattr(attn, "use_rel_pos", False) and hasattr(attn, "rel_pos_h"):
            found.add("relpos-sam")
        if getattr(attn, "rope", None) is not None:  # SAM's per-block rotary module
            found.add("rope")
        if type(attn).__name__ == "GPSA":
            found.add("gpsa")
    return tuple(p for p in POSITION_SCHEMES if p in found)
