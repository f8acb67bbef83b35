"""benchmarks/make_human_model.py: the real copies of the recipe, plain and as phase variants."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import make_human_model  # noqa: E402

if not make_human_model.SHARED.is_dir():
    pytest.skip(
        f"{make_human_model.SHARED} is absent (real data is not part of the project)",
        allow_module_level=True,
    )


def _empty_dataset(folder: Path) -> None:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    info = {"name": "t", "description": "test.", "training": [], "numTraining": 0}
    (folder / "dataset.json").write_text(json.dumps(info))


def test_real_copies_as_phase_variants(tmp_path: Path) -> None:
    from vetseg.io.image import read_image, read_label
    from vetseg.labels import HUMAN_ORGANS

    _empty_dataset(tmp_path / "plain")
    _empty_dataset(tmp_path / "phases")
    plain_ids = make_human_model.write_real_cases(tmp_path / "plain", 1)
    ids = make_human_model.write_real_cases(tmp_path / "phases", 10, phases=True)
    info = json.loads((tmp_path / "phases" / "dataset.json").read_text())
    assert info["real_cases"] == ids and info["numTraining"] == 10
    phases = [info["real_phases"][case]["phase"] for case in ids]
    assert phases.count("non_contrast") == 2 and phases.count("arterial") == 2
    assert phases.count("portal_venous") == 5 and phases.count("delayed") == 1
    original, _ = read_image(tmp_path / "plain" / "imagesTr" / f"{plain_ids[0]}_0000.nii.gz")
    labels, _ = read_label(tmp_path / "plain" / "labelsTr" / f"{plain_ids[0]}.nii.gz")
    aorta = labels == HUMAN_ORGANS.index("aorta") + 1
    lungs = labels == HUMAN_ORGANS.index("lungs") + 1
    for case, phase in zip(ids, phases, strict=True):
        image, _ = read_image(tmp_path / "phases" / "imagesTr" / f"{case}_0000.nii.gz")
        copied, _ = read_label(tmp_path / "phases" / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(copied, labels)  # labels never change
        # Lung keeps its HU; the aorta enhances by phase (non-contrast aorta ~41 HU).
        assert np.median(image[lungs]) == pytest.approx(np.median(original[lungs]), abs=2)
        rise = float(np.median(image[aorta]) - np.median(original[aorta]))
        low, high = {
            "non_contrast": (-20, 20),
            "arterial": (150, 360),
            "portal_venous": (80, 200),
            "delayed": (40, 120),
        }[phase]
        assert low <= rise <= high, (case, phase, rise)
