"""Do position and content conflict? Subspaces of the positional table and of patch content.

Method. A ViT adds its positional table to the patch projections (Dosovitskiy et al. 2021); if
the two occupy separate directions of the residual stream, the sum keeps both recoverable. Over
the dataset, take the patch projections before the positional encoding is added (the stored
"embed" site: one vector per image and patch) as the content, and the patch rows of the
positional table as the position. For each, the top-k principal subspace (leading eigenvectors
of the centred covariance) is computed; the principal angles between the two subspaces
(Björck & Golub 1973; 0 degrees = a shared direction, 90 = orthogonal), the fraction of the
positional variance that lies in the content subspace and the fraction of the content variance
that lies in the positional subspace are reported. The null replaces the other subspace with
Haar-random k-dimensional subspaces of the same width (QR of Gaussian matrices, seeded); its
expected variance fraction is k/D. Angles near 90 degrees and fractions below the null mean
that position lives apart from content; angles and fractions at the null's level mean the
subspaces are no more aligned than chance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from threadpoolctl import threadpool_limits

from probing.constraints import Interval
from probing.errors import ConfigError, ModelError
from probing.findings import Finding
from probing.plots.posenc import plot_subspace_angles
from probing.posenc import learned_table, subspace_overlap
from probing.sections import Figure, Section, Table

if TYPE_CHECKING:
    from probing.run import RunContext

TITLE = "Positional and content subspaces"
DESCRIPTION = "principal angles / variance fractions between PE and pre-PE patch subspaces"
NEEDS = {"kinds": ["patch"], "layers": ["embed"]}
REFERENCES = ["Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT)",
              "Björck & Golub (1973), Numerical methods for computing angles between linear "
              "subspaces"]


def run(ctx: RunContext,
        k: Annotated[int, Interval(int, 1, None)] = 8,
        n_null: Annotated[int, Interval(int, 1, None)] = 200,
        max_images: Annotated[int, Interval(int, 2, None)] = 256) -> Section:
    """Principal angles between the positional and the content subspaces.

    Parameters
    ----------
    ctx : RunContext
        The run's model, store and seed.
    k : int
        Subspace dimension.
    n_null : int
        Random subspaces in the null.
    max_images : int
        Images whose patch projections form the content sample.
    """
    if int(max_images) < 2:
        raise ConfigError(f"pe_subspace.max_images={max_images!r} must be >= 2; e.g. 256.")
    try:
        table = learned_table(ctx.model)
    except ModelError:
        return Section(title=TITLE, references=REFERENCES, text=(
            f"Skipped: the model adds no absolute positional table to its patch projections "
            f"(it has {' and '.join(ctx.layout.position) or 'no positional parameters'}), "
            "so there is no positional subspace to compare with content."))
    ids = ctx.select_images(int(max_images))
    content = ctx.tokens("patch", "embed", image_ids=ids)
    with threadpool_limits(1):  # small matrices: BLAS threads only contend on few cores
        overlap = subspace_overlap(table, content, k=int(k), n_null=int(n_null),
                                   seed=int(ctx.rng("pe_subspace_null").integers(2**31)))
    row = overlap.set_index("metric")
    numbers = {}
    for metric in ("mean_angle_deg", "pe_variance_in_content", "content_variance_in_pe"):
        numbers[metric] = float(row.loc[metric, "value"])
        numbers[f"{metric}_null"] = float(row.loc[metric, "null_mean"])
    width = ctx.model.embed_dim
    return Section(
        title=TITLE,
        text=(__doc__ or "").split("\n\n", 1)[1].strip() + (
            f" Here: k = {k} of D = {width} dimensions, content from {len(content)} patch "
            f"vectors of {len(ids)} images, {ctx.layout.num_patches} positional rows; mean "
            f"angle {numbers['mean_angle_deg']:.1f} degrees (null "
            f"{numbers['mean_angle_deg_null']:.1f}), PE variance in the content subspace "
            f"{numbers['pe_variance_in_content']:.3f} (null "
            f"{numbers['pe_variance_in_content_null']:.3f})."),
        figures=[Figure(
            "pe_subspace", plot_subspace_angles(overlap),
            f"Left: the {k} principal angles (degrees) between the top-{k} principal subspaces "
            f"of the positional table and of the pre-PE patch projections, against {n_null} "
            "random subspaces (mean and 95% band). Right: fraction of each one's variance "
            "inside the other's subspace, against the random null (95% interval).", overlap)],
        tables=[Table("pe_subspace_summary", overlap[overlap["component"].isna()]
                      .reset_index(drop=True),
                      "Mean principal angle (degrees) and variance fractions, observed and under "
                      "the random-subspace null (mean, 2.5 and 97.5 percentiles).")],
        numbers=numbers,
        references=REFERENCES,
        findings=_findings(numbers),
    )


#: Degrees by which the mean principal angle must differ from the null's to count as a difference.
ANGLE_MARGIN = 5.0


def _findings(numbers: dict[str, float]) -> list[Finding]:
    """Whether position and content share directions, against random subspaces."""
    diff = numbers["mean_angle_deg"] - numbers["mean_angle_deg_null"]
    word = ("position lies in directions of its own, more apart from content than chance"
            if diff > ANGLE_MARGIN else
            "position shares directions with content" if diff < -ANGLE_MARGIN else
            "position and content are about as apart as random subspaces")
    return [Finding("Is position kept apart from content?",
                    "The positional table and the patch content subspaces meet at a mean "
                    "principal angle of {mean_angle_deg:.1f} degrees (random subspaces: "
                    f"{{mean_angle_deg_null:.1f}}): {word}.")]
