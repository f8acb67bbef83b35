"""Organ vocabularies and label remapping (vetseg.labels)."""

from __future__ import annotations

import numpy as np
import pytest

from vetseg.errors import LabelMappingError
from vetseg.labels import (
    CORE_ORGANS,
    LR_PAIRS,
    TOTALSEG_V2,
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
