"""Line charts drawn with Pillow alone (matplotlib is not installed here): small multiples of
mean +- sd against a categorical x axis, one colour per series, one legend for the figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

#: Colour-blind-safe palette (Okabe and Ito), then greys.
PALETTE = (
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (0, 0, 0),
    (120, 120, 120),
    (180, 180, 180),
)


@dataclass
class Panel:
    """One chart: ``series`` name -> one ``(mean, sd)`` per x value (None where missing)."""

    title: str
    xs: Sequence[str]
    series: dict[str, list[tuple[float, float] | None]] = field(default_factory=dict)
    y_range: tuple[float, float] = (0.0, 1.0)
    x_label: str = "k labelled cases"
    y_label: str = "Dice"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_panels(
    panels: Sequence[Panel],
    out: Path,
    *,
    title: str = "",
    columns: int = 3,
    panel_size: tuple[int, int] = (380, 270),
) -> Path:
    """Draw ``panels`` in a grid under ``title`` with one legend; write a PNG to ``out``."""
    names: list[str] = []
    for panel in panels:
        names += [n for n in panel.series if n not in names]
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    font, small, big = _font(13), _font(11), _font(16)
    width, height = panel_size
    rows = (len(panels) + columns - 1) // columns
    legend_rows = (len(names) + 3) // 4
    top = 34 + 18 * legend_rows
    image = Image.new("RGB", (columns * width, top + rows * height + 6), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=big)
    for i, name in enumerate(names):
        x, y = 10 + (i % 4) * (columns * width // 4), 32 + 18 * (i // 4)
        draw.line([(x, y + 7), (x + 22, y + 7)], fill=colour[name], width=3)
        draw.text((x + 28, y), name, fill="black", font=font)
    for index, panel in enumerate(panels):
        left = (index % columns) * width
        upper = top + (index // columns) * height
        _draw_panel(draw, panel, (left, upper, width, height), colour, font, small)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    panel: Panel,
    box: tuple[int, int, int, int],
    colour: dict[str, tuple[int, int, int]],
    font: ImageFont.ImageFont,
    small: ImageFont.ImageFont,
) -> None:
    left, upper, width, height = box
    x0, x1 = left + 44, left + width - 14
    y0, y1 = upper + height - 34, upper + 24
    low, high = panel.y_range
    draw.text((left + 44, upper + 4), panel.title, fill="black", font=font)
    draw.rectangle([x0, y1, x1, y0], outline=(160, 160, 160))

    def to_y(value: float) -> float:
        return y0 - (min(max(value, low), high) - low) / (high - low) * (y0 - y1)

    for tick in range(6):
        value = low + (high - low) * tick / 5
        y = to_y(value)
        draw.line([(x0, y), (x1, y)], fill=(232, 232, 232))
        draw.text((left + 8, y - 6), f"{value:.1f}", fill="black", font=small)
    n = max(len(panel.xs), 1)
    positions = [x0 + (x1 - x0) * (i + 0.5) / n for i in range(n)]
    for x, label in zip(positions, panel.xs, strict=True):
        draw.text((x - 4, y0 + 4), str(label), fill="black", font=small)
    draw.text(((x0 + x1) / 2 - 40, y0 + 18), panel.x_label, fill="black", font=small)
    offsets = {name: (i - (len(panel.series) - 1) / 2) * 3 for i, name in enumerate(panel.series)}
    for name, values in panel.series.items():
        points = []
        for x, value in zip(positions, values, strict=True):
            if value is None:
                continue
            mean, sd = value
            x = x + offsets[name]
            if sd:
                draw.line([(x, to_y(mean - sd)), (x, to_y(mean + sd))], fill=colour[name])
            points.append((x, to_y(mean)))
        if len(points) > 1:
            draw.line(points, fill=colour[name], width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour[name])
