"""Are a scan's values in the units the model works in?

A model trained on CT in Hounsfield units (its intensity window reaches down to air, e.g.
``[-1000, 1000]``) gives confident nonsense on a scan whose file stores the scanner's raw
values (0..4095, the DICOM rescale intercept of about -1024 not applied, as some converters and
exports leave it): every value sits about 1024 too high, soft tissue reads as bone. A CT in HU
always shows air near -1000 (outside the body, the lungs, bowel gas, or the -1024..-3024 that
fills the outside of the reconstruction circle), so a scan with no value below -500 is not in
HU, or is a crop that holds no air at all. :func:`units_problem` says so; ``vetseg segment``
refuses such a scan unless it is told the intercept (``--rescale-intercept``) or told to go on
(``--skip-units-check``).

Training checks the same (:func:`training_units_problem`): ``vetseg train-human``,
``transfer``, ``refine`` and ``rl-tune`` refuse training data in which a case shows no air when
the model works in HU (one raw-valued case among ten teaches the model that soft tissue can
read as bone), unless told ``--skip-units-check``; ``vetseg prelabel`` drafts nothing for such a
scan.

Models trained on other units (8-bit micro-CT with window ``[0, 255]``) are not checked: a
window that does not reach air says nothing about what the model's scans looked like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vetseg.errors import InputError

#: Air is about -1000 HU; a CT in Hounsfield units has values at or below this somewhere.
AIR_HU = -500.0


@dataclass(frozen=True)
class ScanUnits:
    """How to read a scan's values before a model sees them.

    Attributes:
        rescale_intercept: added to every value first (``-1024`` turns raw values of most
            scanners into HU); 0: the values are used as stored.
        check: refuse a scan whose values do not look like the model's units.
    """

    rescale_intercept: float = 0.0
    check: bool = True

    def __post_init__(self) -> None:
        if not np.isfinite(self.rescale_intercept):
            raise InputError(f"--rescale-intercept must be a number, got {self.rescale_intercept}.")

    def apply(self, volume: np.ndarray, window: tuple[float, float], what: str) -> np.ndarray:
        """``volume`` with the intercept added (float32 when one is), checked against ``window``.

        Raises:
            InputError: the check is on and :func:`units_problem` finds one.
        """
        if self.rescale_intercept != 0.0:
            volume = volume.astype(np.float32) + np.float32(self.rescale_intercept)
        if self.check:
            problem = units_problem(volume, window)
            if problem is not None:
                raise InputError(f"{what}: {problem}")
        return volume


def expects_hu(window: tuple[float, float]) -> bool:
    """Whether a model with this intensity window works in Hounsfield units (reaches air)."""
    return float(window[0]) <= AIR_HU


def lowest_value(volume: np.ndarray) -> float:
    """The smallest value of ``volume`` (every voxel: a thin line of air must count)."""
    return float(np.min(volume)) if volume.size else 0.0


def units_problem(volume: np.ndarray, window: tuple[float, float]) -> str | None:
    """Why ``volume`` does not look like the units of a model with ``window``, or None.

    Only models that work in HU are checked (see the module notes): the scan must reach air.
    """
    if not expects_hu(window):
        return None
    low = lowest_value(volume)
    if low <= AIR_HU:
        return None
    return (
        f"its lowest value is {low:.0f}, but a CT in Hounsfield units shows air near -1000 and "
        f"this model works in HU (window {float(window[0]):.0f}..{float(window[1]):.0f}); its "
        "answer would be nonsense. If the file stores the scanner's raw values, give the "
        "intercept that turns them into HU (--rescale-intercept, usually -1024; the DICOM "
        "RescaleIntercept); if it is HU with no air in view (a crop inside the body), pass "
        "--skip-units-check."
    )


def training_units_problem(
    lowest: Mapping[str, float | None], window: tuple[float, float]
) -> str | None:
    """Why a training set does not look like the units of a model with ``window``, or None.

    ``lowest``: each case's smallest value (None: not known, e.g. a slice cache written before
    the value was recorded; such a case is not checked). Only models that work in HU are
    checked: every case must reach air.
    """
    if not expects_hu(window):
        return None
    dry = {case: low for case, low in lowest.items() if low is not None and low > AIR_HU}
    if not dry:
        return None
    shown = ", ".join(f"{case} (lowest {low:.0f})" for case, low in sorted(dry.items())[:5])
    more = f" and {len(dry) - 5} more" if len(dry) > 5 else ""
    return (
        f"{len(dry)} of {len(lowest)} cases show no air: {shown}{more}. A CT in Hounsfield "
        f"units shows air near -1000 and this model works in HU (window {float(window[0]):.0f}.."
        f"{float(window[1]):.0f}); trained on such cases it would learn nonsense. If the files "
        "store the scanner's raw values, convert them to HU first (add the DICOM "
        "RescaleIntercept, usually -1024); if they are HU crops with no air in view, pass "
        "--skip-units-check."
    )
