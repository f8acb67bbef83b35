"""Physical scale per species: the pixel spacing at which an animal model sees its organs.

Rule: an animal model works at the human model's pixel spacing times the animal's linear body
scale, ``(body mass / 70 kg) ** (1/3)``, so that the animal's organs cover about as many
pixels as the human organs did when the human model learned them (organ lengths scale with the
cube root of body mass to a first approximation: organ masses are roughly proportional to body
mass, and density is the same). The body masses are typical adults of the laboratory breeds;
``--spacing`` overrides the result, and a workspace records what it used.

With the human model at 1.5 mm per pixel (TotalSegmentator's resolution):

=======  ==========  ============  =========
species  mass (kg)   linear scale  spacing
=======  ==========  ============  =========
human    70          1.000         1.50 mm
pig      40          0.830         1.24 mm
dog      20          0.659         0.99 mm
rabbit   3           0.350         0.525 mm
rat      0.35        0.171         0.26 mm
mouse    0.025       0.071         0.11 mm
=======  ==========  ============  =========

(A mouse at 0.11 mm is about the voxel size of preclinical micro-CT; a rabbit at 0.5 mm that of
clinical scanners' small fields of view.) No torch import: the CLI reads this at start-up.
"""

from __future__ import annotations

from vetseg.errors import InputError

#: Typical adult body mass of the laboratory animal (kg); the rule's only input.
BODY_MASS_KG: dict[str, float] = {
    "human": 70.0,
    "pig": 40.0,
    "dog": 20.0,
    "rabbit": 3.0,
    "rat": 0.35,
    "mouse": 0.025,
}
#: The human model's default pixel spacing in mm (TotalSegmentator trains at 1.5 mm).
HUMAN_SPACING_MM = 1.5


def linear_scale(species: str) -> float:
    """The species' body length relative to a 70 kg human, ``(mass / 70) ** (1/3)``.

    Raises:
        InputError: for a species with no body mass on record.
    """
    key = species.strip().lower()
    if key not in BODY_MASS_KG:
        raise InputError(
            f"no body scale on record for species {species!r} (known: "
            f"{', '.join(sorted(BODY_MASS_KG))}); give the model's pixel spacing with --spacing."
        )
    return (BODY_MASS_KG[key] / BODY_MASS_KG["human"]) ** (1.0 / 3.0)


def species_spacing(species: str, human_spacing: float = HUMAN_SPACING_MM) -> float:
    """The pixel spacing (mm) of an animal model transferred from a human model.

    Args:
        species: e.g. ``"rabbit"``.
        human_spacing: the human model's pixel spacing in mm.

    Returns:
        ``human_spacing * linear_scale(species)``, rounded to 3 significant digits.
    """
    value = human_spacing * linear_scale(species)
    return float(f"{value:.3g}")
