"""benchmarks/hu_offset_data.py: soft tissue shifted per case and per organ, nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import hu_offset_data  # noqa: E402


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((3, 10, 10), -1000, dtype=np.int16)  # air
    labels = np.zeros((3, 10, 10), dtype=np.uint8)
    image[:, 2:5, 2:8] = 60 + seed  # organ 1, soft tissue
    labels[:, 2:5, 2:8] = 1
    image[:, 6:8, 2:8] = 40  # organ 2, soft tissue
    labels[:, 6:8, 2:8] = 2
    image[:, 9, :] = 900  # dense bone, unlabelled
    image[:, 0, :] = -850  # lung-like, unlabelled
    return image, labels


def test_training_cases_shift_soft_tissue_only_and_validation_stays(tmp_path: Path) -> None:
    from vetseg.data.phantoms.dataset import write_msd_dataset
    from vetseg.io.image import ImageMeta, read_image, read_label

    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    cases = [(f"c{k}", *_case(k), meta) for k in range(3)]
    write_msd_dataset(tmp_path / "src", cases, ("liver", "spleen"), {})
    offsets = hu_offset_data.write_hu_offset_dataset(
        tmp_path / "src", tmp_path / "out", val={"c1"}, global_hu=60.0, organ_hu=30.0, seed=0
    )
    assert set(offsets) == {"c0", "c2"}  # the validation case is not shifted
    for case, image, labels, _ in cases:
        shifted, _ = read_image(tmp_path / "out" / "imagesTr" / f"{case}_0000.nii.gz")
        copied, _ = read_label(tmp_path / "out" / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(copied, labels)
        untouched = (image <= -200) | (image >= 300)
        np.testing.assert_array_equal(shifted[untouched], image[untouched])
        if case == "c1":
            np.testing.assert_array_equal(shifted, image)
            continue
        drawn = offsets[case]
        assert abs(drawn["global"]) <= 60.0
        for organ in (1, 2):
            expected = drawn["global"] + drawn["organs"][organ]
            delta = shifted[labels == organ].astype(float) - image[labels == organ]
            assert abs(drawn["organs"][organ]) <= 30.0
            np.testing.assert_allclose(delta, round(expected), atol=1)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert set(info["hu_offsets"]) == {"c0", "c2"}
    # The same seed draws the same offsets.
    again = hu_offset_data.write_hu_offset_dataset(
        tmp_path / "src", tmp_path / "again", val={"c1"}, seed=0
    )
    assert again == offsets
