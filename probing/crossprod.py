"""Symmetric cross-products ``Z^T Z`` accumulated over row chunks, one BLAS ``syrk`` each.

``Z^T Z`` is symmetric, so half of it determines it: BLAS ``?syrk`` computes the upper triangle
only (half the multiply-adds of a general product). numpy's ``z.T @ z`` does not reach
``syrk`` on a C-ordered chunk, and ``syrk`` on the Fortran view ``z.T`` needs no copy (the
gain on layer CKA: ``benchmarks/probes_similarity.py``, row (b)).

Convention: an accumulator is a Fortran-ordered ``(d, d)`` array whose **upper** triangle
(diagonal included) holds the sum; its strict lower triangle is left as it was (zeros from
:func:`accumulator`). :func:`symmetrised` fills the lower triangle from the upper one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accumulator", "add_cross_product", "symmetrised"]


def accumulator(d: int, dtype: type = np.float64) -> np.ndarray:
    """A zero ``(d, d)`` Fortran-ordered accumulator for :func:`add_cross_product`."""
    return np.zeros((d, d), dtype=dtype, order="F")


def add_cross_product(acc: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Add ``z^T z`` to the upper triangle of ``acc``, in place where the dtypes agree.

    Parameters
    ----------
    acc : numpy.ndarray
        ``(d, d)`` accumulator from :func:`accumulator` (float32 or float64).
    z : numpy.ndarray
        ``(rows, d)`` chunk, float32 or float64. Its products run in ``z``'s precision; a
        float32 chunk added to a float64 accumulator is summed in float64.

    Returns
    -------
    numpy.ndarray
        ``acc`` (the same array).
    """
    from scipy.linalg.blas import dsyrk, ssyrk

    zt = np.asfortranarray(z.T)  # a view when z is C-ordered
    if z.dtype == acc.dtype and acc.flags.f_contiguous:
        syrk = dsyrk if acc.dtype == np.float64 else ssyrk
        out = syrk(1.0, zt, beta=1.0, c=acc, trans=0, lower=0, overwrite_c=1)
        if out is not acc:  # f2py copied (it should not for a Fortran-ordered match)
            acc[...] = out
        return acc
    syrk = dsyrk if z.dtype == np.float64 else ssyrk
    part = syrk(1.0, zt, trans=0, lower=0)
    acc += np.triu(part)
    return acc


def symmetrised(acc: np.ndarray) -> np.ndarray:
    """The full symmetric ``(d, d)`` matrix whose upper triangle ``acc`` holds (a new array)."""
    upper = np.triu(acc)
    return upper + np.triu(upper, 1).T
