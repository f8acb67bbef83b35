"""Organ vocabularies and label remapping (vetseg.labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vetseg.errors import LabelMappingError
from vetseg.io.image import read_image
from vetseg.labels import (
    CORE_ORGANS,
    DIGIMOUSE,
    HUMAN_EXTRA_ORGANS,
    HUMAN_ORGANS,
    HUMAN_TO_ANIMAL,
    LR_PAIRS,
    TOTALSEG_V2,
    digimouse_mapping,
    lr_swap_permutation,
    organ_ids,
    remap_labels,
    totalseg_mapping,
)

TS_ID = {name: i for i, name in TOTALSEG_V2.items()}


def test_remap_totalseg_merges_lobes_into_lungs_and_ribs_into_bone() -> None:
    raw = np.array(
        [
            [0, TS_ID["liver"], TS_ID["lung_upper_lobe_left"], TS_ID["lung_lower_lobe_right"]],
            [TS_ID["rib_left_3"], TS_ID["vertebrae_L1"], TS_ID["kidney_left"], TS_ID["aorta"]],
        ],
        dtype=np.int16,
    )
    out = remap_labels(raw, totalseg_mapping(CORE_ORGANS), CORE_ORGANS)
    ids = organ_ids(CORE_ORGANS)
    expected = np.array(
        [
            [0, ids["liver"], ids["lungs"], ids["lungs"]],
            [ids["bone"], ids["bone"], ids["kidney_left"], 0],  # aorta is not a vetseg organ
        ]
    )
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_remap_unknown_id_names_the_file_and_the_ids() -> None:
    raw = np.array([[0, 1, 250, 251]], dtype=np.uint8)
    with pytest.raises(LabelMappingError, match=r"case7_seg\.nii\.gz.*250, 251"):
        remap_labels(raw, {1: "liver"}, CORE_ORGANS, source="case7_seg.nii.gz")


def test_remap_non_strict_turns_unknown_ids_into_background() -> None:
    raw = np.array([0, 1, 9], dtype=np.uint8)
    out = remap_labels(raw, {1: "spleen"}, CORE_ORGANS, strict=False)
    np.testing.assert_array_equal(out, [0, organ_ids(CORE_ORGANS)["spleen"], 0])


def test_remap_rejects_an_organ_outside_the_vocabulary() -> None:
    with pytest.raises(LabelMappingError, match="caecum"):
        remap_labels(np.array([1]), {1: "caecum"}, CORE_ORGANS)


def test_lr_swap_permutation_swaps_pairs_only() -> None:
    organs = ("liver", "kidney_left", "spleen", "kidney_right", "lung_left")
    perm = lr_swap_permutation(organs)
    assert perm == [0, 3, 2, 1, 4]  # lung_left has no partner here: it stays
    assert sorted(perm) == list(range(len(organs)))
    # Applying the swap twice is the identity.
    assert [perm[p] for p in perm] == list(range(len(organs)))
    for left, right in LR_PAIRS:
        assert left.endswith("_left") and right.endswith("_right")


def test_human_vocabulary_keeps_the_core_ids_and_appends_the_new_organs() -> None:
    assert HUMAN_ORGANS[: len(CORE_ORGANS)] == CORE_ORGANS
    ids = organ_ids(HUMAN_ORGANS)
    assert [ids[o] for o in HUMAN_EXTRA_ORGANS] == [8, 9, 10, 11, 12]
    assert len(set(HUMAN_ORGANS)) == len(HUMAN_ORGANS)
    assert all(HUMAN_TO_ANIMAL[o] == o for o in HUMAN_ORGANS)


def test_totalseg_maps_the_new_organs_only_when_the_vocabulary_asks() -> None:
    raw = np.array([[TS_ID[o] for o in HUMAN_EXTRA_ORGANS]], dtype=np.int16)
    ids = organ_ids(HUMAN_ORGANS)
    out = remap_labels(raw, totalseg_mapping(HUMAN_ORGANS), HUMAN_ORGANS)
    np.testing.assert_array_equal(out, [[ids[o] for o in HUMAN_EXTRA_ORGANS]])
    # The 7-organ vocabulary still treats them as background, as before.
    assert not remap_labels(raw, totalseg_mapping(CORE_ORGANS), CORE_ORGANS).any()


def test_digimouse_maps_stomach_pancreas_and_bladder_when_asked() -> None:
    names = dict(DIGIMOUSE)
    wide = digimouse_mapping(HUMAN_ORGANS)
    assert wide[15] == "stomach" and wide[17] == "pancreas" and wide[13] == "urinary_bladder"
    assert names[13] == "bladder"
    core = digimouse_mapping(CORE_ORGANS)
    assert core[15] is None and core[17] is None and core[13] is None
    assert core[18] == "liver" and core[19] == "kidneys"


def test_real_totalseg_example_has_the_new_organs(shared_data: Path) -> None:
    folder = shared_data / "human" / "totalseg_example"
    names = {int(k): v for k, v in json.loads((folder / "labels.json").read_text()).items()}
    seg, _ = read_image(folder / "seg.nii.gz")
    assert all(TOTALSEG_V2.get(i) == n for i, n in names.items())  # ids as vetseg knows them
    out = remap_labels(seg, totalseg_mapping(HUMAN_ORGANS), HUMAN_ORGANS)
    ids = organ_ids(HUMAN_ORGANS)
    voxel_ml = 3.0**3 / 1000.0  # 3 mm isotropic
    present = {int(v) for v in np.unique(seg)}
    for organ in HUMAN_EXTRA_ORGANS:
        if TS_ID[organ] not in present:
            continue  # the scan does not hold it
        count = int(np.count_nonzero(out == ids[organ]))
        assert count == int(np.count_nonzero(seg == TS_ID[organ])), organ
        assert count * voxel_ml > 5.0, organ  # a real organ, not a stray voxel
    # This abdominal/pelvic scan holds all five.
    assert {TS_ID[o] for o in HUMAN_EXTRA_ORGANS} <= present
