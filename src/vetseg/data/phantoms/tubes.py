"""Tubular shapes for the wide human recipe: vessels, airways, bowel, long bones, metal rods.

Two primitives on a :class:`~vetseg.data.phantoms.shapes.Builder`: a tube that runs along z with
a centre and radius that change with height (aorta, trachea, arms), and a chain of capsules
through 3D points (the aortic arch, the pancreas, the duodenum, femoral necks, screws).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vetseg.data.phantoms.shapes import Builder

Point = tuple[float, float, float]


def tube_along_z(
    bld: Builder, knots: Sequence[tuple[float, float, float, float]]
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """A tube along z through ``knots`` (z, x, y, radius), interpolated linearly in between.

    Args:
        bld: the case being drawn.
        knots: at least two (z, centre x, centre y, radius) in mm, z increasing.

    Returns:
        The box slices and the normalised radius in the box (``< 1`` inside, ``inf`` above and
        below the end knots).
    """
    zs = np.array([k[0] for k in knots], dtype=np.float32)
    xs = np.array([k[1] for k in knots], dtype=np.float32)
    ys = np.array([k[2] for k in knots], dtype=np.float32)
    rs = np.array([k[3] for k in knots], dtype=np.float32)
    r_max = float(rs.max())
    centre = (float(xs.mean()), float(ys.mean()), float(zs.mean()))
    half = (
        float(np.ptp(xs)) / 2 + r_max,
        float(np.ptp(ys)) / 2 + r_max,
        float(np.ptp(zs)) / 2,
    )
    sl = bld.box(centre, half)
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    # Centre and radius follow the slice's own height (1D, cheap); the ends follow the bend.
    z1 = bld.z1[sl[0]]
    cx = np.interp(z1, zs, xs)[:, None, None]
    cy = np.interp(z1, zs, ys)[:, None, None]
    radius = np.interp(z1, zs, rs)[:, None, None]
    rho = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / np.maximum(radius, 1e-3)
    rho[(z < zs[0]) | (z > zs[-1])] = np.inf
    return sl, rho.astype(np.float32)


def capsule_chain(
    bld: Builder, points: Sequence[Point], radii: Sequence[float]
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Capsules between consecutive ``points`` (x, y, z mm), radius interpolated along each.

    Args:
        bld: the case being drawn.
        points: two or more points.
        radii: one radius (mm) per point.

    Returns:
        The box slices and the normalised distance in the box (``< 1`` inside the chain).
    """
    p = np.asarray(points, dtype=np.float32)
    r = np.asarray(radii, dtype=np.float32)
    lo, hi = p.min(axis=0) - r.max(), p.max(axis=0) + r.max()
    sl = bld.box(tuple((lo + hi) / 2), tuple((hi - lo) / 2))
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    best = np.full(x.shape, np.inf, dtype=np.float32)
    for a, b, ra, rb in zip(p[:-1], p[1:], r[:-1], r[1:], strict=True):
        d = b - a
        length2 = max(float(d @ d), 1e-6)
        t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / length2, 0, 1)
        dist = np.sqrt(
            (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2
        )
        np.minimum(best, dist / (ra + t * (rb - ra)), out=best)
    return sl, best
