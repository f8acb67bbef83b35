"""How transfer picks the animal model's pixel spacing (issue 10: species rule vs native)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vetseg.errors import InputError
from vetseg.training.stages import resolve_spacing


def _prepared(*spacings_mm: float) -> SimpleNamespace:
    """Training cases whose canonical in-plane spacing is each value (x, y, z order)."""
    cases = [
        SimpleNamespace(canonical_meta=SimpleNamespace(spacing=(s, s, 2.0))) for s in spacings_mm
    ]
    return SimpleNamespace(train=cases)


def test_auto_keeps_the_species_rule_when_the_scans_resolve_it() -> None:
    # Rabbit: 1.5 mm x (3/70)^(1/3) = 0.525 mm; scans at 0.3 mm resolve it.
    value, rule = resolve_spacing(None, 1.5, "rabbit", _prepared(0.3, 0.3, 0.4))
    assert value == pytest.approx(0.525) and rule.startswith("species rabbit")


def test_auto_keeps_the_species_rule_a_little_finer_than_the_scans() -> None:
    # Rabbit phantoms: 0.525 mm against scans of 0.596 mm (1.14x finer): the rule stands.
    value, rule = resolve_spacing("auto", 1.5, "rabbit", _prepared(0.596, 0.596))
    assert value == pytest.approx(0.525) and rule.startswith("species rabbit")


def test_auto_does_not_upsample_the_scans_more_than_the_limit() -> None:
    # Mouse: the rule says 0.106 mm, the scans are 0.2-0.3 mm (2.5x coarser): their median.
    value, rule = resolve_spacing("auto", 1.5, "mouse", _prepared(0.2, 0.265, 0.3))
    assert value == pytest.approx(0.265) and rule.startswith("native 0.265")
    assert "0.106" in rule  # the rule it set aside is named
    # Just inside the limit (0.106 x 1.5 = 0.159 >= 0.15): the rule stands.
    assert resolve_spacing("auto", 1.5, "mouse", _prepared(0.15))[0] == pytest.approx(0.106)


def test_explicit_choices_and_bad_ones() -> None:
    prepared = _prepared(0.2, 0.265, 0.3)
    assert resolve_spacing("species", 1.5, "mouse", prepared)[0] == pytest.approx(0.106)
    assert resolve_spacing("native", 1.5, "mouse", prepared)[0] == pytest.approx(0.265)
    assert resolve_spacing("0.4", 1.5, "mouse", prepared) == (0.4, "given: 0.4 mm")
    assert resolve_spacing(None, 1.5, None, prepared)[0] == pytest.approx(0.265)  # no species
    assert resolve_spacing(None, None, "mouse", prepared)[0] is None  # legacy human model
    with pytest.raises(InputError, match="auto"):
        resolve_spacing("coarse", 1.5, "mouse", prepared)
    with pytest.raises(InputError, match="legacy"):
        resolve_spacing("auto", None, "mouse", prepared)
