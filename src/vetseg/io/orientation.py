"""Posture: an orientation override for headers that do not say how the animal lay, and a check.

Micro-CT headers often carry an identity direction whatever way the animal lay (prone or
supine, head or tail first), so "axial" from the header can run along the body. Two tools:

* :func:`apply_orientation_override` replaces a header's direction with an orientation code
  the user gives (``--orientation PIR``). The code uses the DICOM / SimpleITK ``DICOMOrient``
  convention that :func:`vetseg.io.image.orientation_matrix` uses: letter ``k`` names the
  anatomical direction that array index axis ``k`` (x, y, z in ITK order, i.e. numpy axes 2, 1,
  0 of ``array[z, y, x]``) points TO, in increasing index. ``PIR``: x runs towards the
  animal's posterior (back), y towards inferior (tail), z towards its right. (This is the
  letter of ``ImageMeta.orientation``, and the opposite of ITK's ``RAI``-style enum names,
  which name where each axis comes FROM.)
* :func:`check_posture` measures the body's long axis after reorientation to canonical and
  says, with figures and a computed code to try, when it does not run along the slice axis.

Nothing here touches the user's files: the override lives in memory (and in the workspace
database), outputs are written on the scan's own header geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from vetseg.errors import InputError
from vetseg.io.image import ImageMeta, orientation_matrix, to_canonical
from vetseg.io.units import AIR_HU

#: Below this ratio of the body's largest to second principal standard deviation the body
#: has no clear long axis (a ball of tissue), and no warning is given.
MIN_ELONGATION = 1.2
#: A long axis further than this from every array axis lies obliquely: an orientation code
#: (a permutation with flips) cannot straighten it. 34 of the 41 mouse heads lie 31-51
#: degrees off (measured), AKR_J 22.
OBLIQUE_DEG = 30.0
#: A body that fills at least this share of its fullest slice in both end slices is cut by the
#: scan at both ends of the slice axis: it runs on beyond the scan along that axis, as a trunk
#: does in clinical CT, which covers less length than width. Measured (the smaller end): the
#: five real human scans of ../shared/data 0.53-0.98; the mouse template and heads 0 (a head
#: fits in the scan, the neck cut at one end at most).
CUT_SHARE = 0.4
_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def parse_orientation(code: str | None) -> str | None:
    """A validated, upper-case orientation code, or None.

    Raises:
        InputError: the code is not three letters naming one of L/R, P/A, S/I each.
    """
    if code is None or not code.strip():
        return None
    try:
        orientation_matrix(code.strip())
    except ValueError:
        raise InputError(
            f"--orientation {code!r} is not an orientation code: give three letters, one of "
            "L/R, one of P/A and one of S/I, naming where array axes x, y, z point (e.g. PIR)."
        ) from None
    return code.strip().upper()


def apply_orientation_override(
    meta: ImageMeta, code: str | None, shape_zyx: Sequence[int]
) -> ImageMeta:
    """``meta`` with its direction replaced by ``code``; spacing kept, the centre kept in place.

    The volume's centre stays at the same physical point, so that the scan and anything drawn
    on it stay near where a viewer showed them; only the axes' directions change.

    Args:
        meta: the header's geometry.
        code: where index axes x, y, z point (``"PIR"``); None returns ``meta`` unchanged.
        shape_zyx: the array shape ``[..., z, y, x]`` (its last three entries are used).

    Returns:
        The new geometry (provenance fields kept).

    Raises:
        InputError: a bad code.
    """
    code = parse_orientation(code)
    if code is None:
        return meta
    size_xyz = np.asarray(tuple(shape_zyx)[-3:][::-1], dtype=float)
    centre_index = (size_xyz - 1) / 2
    centre = meta.index_to_physical(centre_index[::-1])
    direction = orientation_matrix(code)
    origin = centre - direction @ (centre_index * np.asarray(meta.spacing))
    return replace(meta, origin=tuple(origin), direction=tuple(direction.ravel()))


@dataclass(frozen=True)
class PostureCheck:
    """The body's long axis after reorientation to canonical ``[z, y, x]``.

    Attributes:
        extents_mm: the body's extent along canonical axes 0 (slice), 1, 2 (1st to 99th
            percentile of its voxels, so stray specks do not count).
        long_axis_mm: its extent along its own longest principal axis.
        long_axis: the canonical axis nearest that principal axis (0 = the slice axis).
        tilt_deg: angle between the principal axis and the slice axis.
        elongation: largest / second principal standard deviation (1 = no long axis).
        oblique_deg: angle between the principal axis and the nearest array axis.
        cut_through: the body is cut at both ends of the slice axis (:data:`CUT_SHARE`), so
            it runs on beyond the scan along it: its extents there are lower bounds and no
            warning is given (a trunk CT covers less length than width).
        suggestion: an ``--orientation`` code that puts the long axis on the slice axis, or
            None when it is already there or the body has no clear long axis.
    """

    extents_mm: tuple[float, float, float]
    long_axis_mm: float
    long_axis: int
    tilt_deg: float
    elongation: float
    suggestion: str | None
    oblique_deg: float = 0.0
    cut_through: bool = False

    @property
    def ok(self) -> bool:
        """Whether the long axis is nearest the slice axis (or there is no long axis)."""
        return self.suggestion is None

    @property
    def oblique(self) -> bool:
        """Whether a clear long axis lies far from every array axis (no code can fix that)."""
        clear = self.elongation >= MIN_ELONGATION and not self.cut_through
        return clear and self.oblique_deg > OBLIQUE_DEG

    def _oblique_text(self) -> str:
        return (
            f" The long axis also lies obliquely, {self.oblique_deg:.0f} degrees from the "
            "nearest array axis: an --orientation code only swaps and flips axes, so slices "
            "will cut it at a slant; resample the scan (e.g. register it to a template) if "
            "that matters."
        )

    def message(self, scan: str) -> str:
        """The warning for ``scan`` (one paragraph), or ``""`` when all is well."""
        if self.ok:
            if not self.oblique:
                return ""
            return (
                f"{scan}: the body's long axis ({self.long_axis_mm:.1f} mm) runs along the "
                f"slice axis but {self.tilt_deg:.0f} degrees off it." + self._oblique_text()
            )
        names = ("slice (cranio-caudal)", "row", "column")
        extents = ", ".join(
            f"{e:.1f} mm along the {n} axis" for e, n in zip(self.extents_mm, names, strict=True)
        )
        return (
            f"{scan}: the body's longest extent ({self.long_axis_mm:.1f} mm) runs "
            f"along the {names[self.long_axis]} axis, not across the slices ({extents}; "
            f"{self.tilt_deg:.0f} degrees from the slice axis), so axial slices would cut "
            "along the body. If the header does not say how the animal lay, try "
            f"--orientation {self.suggestion} and check head/tail and back/belly in "
            "`vetseg preview` (swap a letter for its opposite to flip an axis). For a scan of "
            "the head or a limb alone this is that part's own long axis: ignore this if the "
            "slices already cut across it as you want."
        ) + (self._oblique_text() if self.oblique else "")


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a sample of values (between background and body)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(high - low) or high - low <= 256 * np.spacing(max(abs(low), abs(high))):
        # One value, or a range too narrow (or too wide) for 256 finite bins (fuzzing found
        # both in label maps of float voxels near 1e38): no threshold between two classes.
        return low
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(float)
    mass = np.cumsum(hist * centres)
    below_mean = mass / np.maximum(weight, 1)
    above_mean = (mass[-1] - mass) / np.maximum(weight[-1] - weight, 1)
    between = weight * (weight[-1] - weight) * (below_mean - above_mean) ** 2
    return float(centres[int(np.argmax(between))])


def body_threshold(array: np.ndarray) -> float:
    """A threshold above which voxels are body, in the array's own units.

    HU data (air near -1000) uses -300 HU (soft tissue and bone, not air or lung); other data
    (rescaled micro-CT, label maps) Otsu's threshold between background and the rest.
    """
    sample = np.asarray(array).ravel()[:: max(1, array.size // 2_000_000)]
    if float(sample.min()) <= AIR_HU:
        return -300.0
    return _otsu(sample.astype(np.float64))


def _suggest(meta: ImageMeta, long_axis: int, orientation: str) -> str:
    """The code that swaps the file axes behind canonical axes ``long_axis`` and 0.

    The letters of the file axis behind the slice axis and the one behind the long axis are
    swapped; one of them is reversed when needed so that the determinant (handedness) stays
    that of the header, or left and right would change sides.
    """
    from vetseg.io.image import _axis_plan

    plan = _axis_plan(meta.direction_matrix, orientation_matrix(orientation))
    # Canonical numpy axis n is ITK axis 2 - n; plan.source[k] is the file axis behind it.
    slice_file_axis = plan.source[2]
    long_file_axis = plan.source[2 - long_axis]
    letters = list(meta.orientation)
    letters[slice_file_axis], letters[long_file_axis] = (
        letters[long_file_axis],
        letters[slice_file_axis],
    )
    old_det = np.linalg.det(orientation_matrix(meta.orientation))
    if np.linalg.det(orientation_matrix("".join(letters))) * old_det < 0:
        letters[long_file_axis] = _OPPOSITE[letters[long_file_axis]]
    return "".join(letters)


def check_posture(
    array: np.ndarray,
    meta: ImageMeta,
    orientation: str = "LPS",
    threshold: float | None = None,
    max_points: int = 200_000,
    max_voxels: int = 1_000_000,
) -> PostureCheck | None:
    """Measure the body's long axis after reorientation, and suggest a code when it is wrong.

    The long axis is the first principal axis of the body's voxel positions (in mm), which
    follows an elongated body even when it lies obliquely; it is "on" the canonical axis it
    is most parallel to.

    Args:
        array: ``[z, y, x]`` as read (HU, rescaled intensities or a label map).
        meta: its geometry (after any override).
        orientation: the canonical orientation (``PreprocessConfig.orientation``).
        threshold: body voxels are above it; None: :func:`body_threshold`.
        max_points: voxel positions used at most (an even subsample).
        max_voxels: the volume is read with a stride that leaves about this many voxels.

    Returns:
        The measurements, or None when too few body voxels were found to measure.
    """
    # A strided view keeps a 512 x 512 x 400 CT to about a million voxels: the extents need
    # no finer grid, and neither a full canonical copy nor every body voxel's index is made.
    array = np.asarray(array)
    step = max(1, int(np.ceil((array.size / max_voxels) ** (1 / 3))))
    small = array[::step, ::step, ::step]
    small_meta = replace(meta, spacing=tuple(s * step for s in meta.spacing))
    canonical, canonical_meta = to_canonical(small, small_meta, orientation)
    level = body_threshold(canonical) if threshold is None else threshold
    body = canonical > level
    points = np.argwhere(body)
    if len(points) < 100:
        return None
    area = body.reshape(body.shape[0], -1).sum(axis=1)
    cut_through = bool(len(area) > 1 and min(area[0], area[-1]) >= CUT_SHARE * area.max())
    points = points[:: max(1, len(points) // max_points)].astype(np.float64)
    points *= np.asarray(canonical_meta.spacing[::-1])  # [z, y, x] mm
    low, high = np.percentile(points, [1, 99], axis=0)
    extents = tuple(float(v) for v in high - low)
    points -= points.mean(axis=0)
    variances, vectors = np.linalg.eigh(np.cov(points.T))
    main = vectors[:, -1]
    projection = points @ main
    long_mm = float(np.percentile(projection, 99) - np.percentile(projection, 1))
    elongation = float(np.sqrt(variances[-1] / max(variances[-2], 1e-12)))
    long_axis = int(np.argmax(np.abs(main)))
    tilt = float(np.degrees(np.arccos(min(1.0, abs(main[0])))))
    oblique = float(np.degrees(np.arccos(min(1.0, float(np.max(np.abs(main)))))))
    suggestion = None
    if long_axis != 0 and elongation >= MIN_ELONGATION and not cut_through:
        suggestion = _suggest(meta, long_axis, orientation)
    return PostureCheck(
        extents_mm=extents,  # type: ignore[arg-type]
        long_axis_mm=long_mm,
        long_axis=long_axis,
        tilt_deg=tilt,
        elongation=elongation,
        suggestion=suggestion,
        oblique_deg=oblique,
        cut_through=cut_through,
    )


def posture_warning(array: np.ndarray, meta: ImageMeta, scan: str, orientation: str = "LPS") -> str:
    """The posture warning for a scan, or ``""``; never raises on odd data (it only advises)."""
    try:
        check = check_posture(array, meta, orientation)
    except (ValueError, np.linalg.LinAlgError, MemoryError):
        return ""
    return check.message(scan) if check is not None else ""
