"""`vetseg review` latency in headless chromium: first render of large cases and save latency.

For each scan depth (512 x 512 x N, int16, a synthetic body with organ ellipsoids and a label
imported as version 1) a fresh browser context opens the page on that case and the page reports
when the scan and its label are shown (two animation frames after NiiVue loaded both): the time
since the navigation started (page, NiiVue's 3 MB module, queue, scan, label) and since the
case was opened. Then a brush stroke is painted with the mouse and saved: the page reports the
save's total time, the part spent exporting the drawing to NIfTI in the browser, and the
server's part (Server-Timing header: check, read, effort, atomic write, database).

Chromium renders with SwiftShader here (no GPU): a workstation's GPU renders faster; loading
and saving are CPU-bound on both.

    python benchmarks/review_latency.py                       # 512 x 512 x 100 and x 400
    python benchmarks/review_latency.py --screenshot docs/images/review.png

Writes benchmarks/results/review_latency.json (figures and the command).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.fileutil import atomic_write_json
from vetseg.io.image import ImageMeta, write_image
from vetseg.workflow.correct import correct
from vetseg.workflow.register import add_scans
from vetseg.workflow.workspace import Workspace, WorkspaceSettings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "lungs", "heart", "bone")


def synthetic_case(depth: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 512 x 512 x ``depth`` CT-like volume (int16 HU) and a label of a few ellipsoids."""
    rng = np.random.default_rng(seed)
    z = np.linspace(-1, 1, depth, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, 512, dtype=np.float32)[None, :, None]
    x = np.linspace(-1, 1, 512, dtype=np.float32)[None, None, :]
    ct = np.full((depth, 512, 512), -1000, np.int16)
    labels = np.zeros((depth, 512, 512), np.uint8)
    body = (y / 0.7) ** 2 + (x / 0.85) ** 2 < 1
    ct[np.broadcast_to(body, ct.shape)] = 40
    organs = [  # (id, centre z, y, x, radii z, y, x, HU)
        (1, 0.0, 0.0, -0.35, 0.5, 0.35, 0.3, 100),
        (2, 0.1, 0.1, 0.45, 0.3, 0.15, 0.12, 110),
        (3, -0.2, 0.35, 0.3, 0.2, 0.1, 0.08, 170),
        (4, 0.0, 0.35, -0.3, 0.2, 0.1, 0.08, 170),
        (7, 0.0, 0.55, 0.0, 1.2, 0.08, 0.08, 700),
    ]
    for organ, cz, cy, cx, rz, ry, rx, hu in organs:
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        ct[inside] = hu
        labels[inside] = organ
    noise = rng.normal(0, 12, (depth, 512, 512)).astype(np.float32)
    ct = np.clip(ct + noise, -1024, 3000).astype(np.int16)
    return ct, labels


def build_workspace(folder: Path, depths: list[int]) -> list[str]:
    """A workspace with one 512 x 512 x N case per depth, each with a version-1 label."""
    meta = ImageMeta(spacing=(0.7, 0.7, 1.5), origin=(0.0, 0.0, 0.0))
    inputs = folder / "inputs"
    cases = []
    settings = WorkspaceSettings(species="rabbit", organs=ORGANS, synthetic=True)
    with Workspace.create(folder / "ws", settings) as ws:
        for depth in depths:
            ct, labels = synthetic_case(depth)
            name = f"ct512x512x{depth}"
            scan = write_image(ct, meta, inputs / f"{name}.nii.gz")
            label = write_image(labels, meta, inputs / f"{name}_v1.nii.gz")
            del ct, labels
            add_scans(ws, [scan])
            correct(ws, name, label)
            cases.append(name)
    return cases


def start_server(root: Path, token: str) -> Any:
    import uvicorn

    from vetseg.server.app import create_app

    config = uvicorn.Config(create_app(root, token), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    server.port = server.servers[0].sockets[0].getsockname()[1]
    return server


def stroke(page: Any) -> None:
    """A brush stroke across the middle of the axial view."""
    page.click("#layouts button[data-layout=axial]")
    page.click("#tools button[data-tool=brush]")
    box = page.locator("#gl").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 80, y)
    page.mouse.down()
    for step in range(1, 17):
        page.mouse.move(x - 80 + 10 * step, y + 3 * step)
    page.mouse.up()


def measure(browser: Any, url: str, case: str, timeout_ms: int) -> dict[str, Any]:
    """Open ``case`` in a fresh context (no cache), paint, save; the page's own timings."""
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(f"{url}#case={case}")
    page.wait_for_function(f"document.body.dataset.loaded === '{case}'")
    opened = page.evaluate("window.vetsegReview.state.timings")
    stroke(page)
    page.click("#save")
    page.wait_for_function(f"(document.body.dataset.saved || '').startsWith('{case}:')")
    saved = page.evaluate("window.vetsegReview.state.lastSave")
    context.close()
    return {"open": opened, "save": saved}


def screenshot(browser: Any, out: Path, folder: Path) -> None:
    """The page on a synthetic rabbit phantom whose version 1 lacks the spleen; spleen selected."""
    from vetseg.data.phantoms import make_phantom
    from vetseg.data.phantoms.dataset import phantom_meta

    phantoms = {seed: make_phantom("rabbit", np.random.default_rng(seed)) for seed in (3, 4, 5)}
    settings = WorkspaceSettings(species="rabbit", organs=phantoms[3].organs, synthetic=True)
    names = {seed: f"rabbit_{seed:03d}" for seed in phantoms}
    for seed, phantom in phantoms.items():
        write_image(phantom.ct, phantom_meta(phantom), folder / "in" / f"{names[seed]}.nii.gz")
    shown = phantoms[3]
    with Workspace.create(folder / "shot", settings) as ws:
        add_scans(ws, [folder / "in" / f"{n}.nii.gz" for n in names.values()])
        draft = shown.labels.copy()
        draft[draft == 2] = 0  # the draft missed the spleen
        draft_file = write_image(draft, phantom_meta(shown), folder / "in" / "draft.nii.gz")
        correct(ws, names[3], draft_file)
    # A vet adding the spleen back on one axial slice: the crosshair on it, one brush stroke
    # per row of the spleen (LPS mm of ITK -> RAS mm of NiiVue -> canvas pixels).
    z, y, _ = (int(round(float(c.mean()))) for c in np.nonzero(shown.labels == 2))

    def ras(px: float, py: float) -> list[float]:
        o, sp = shown.origin, shown.spacing
        return [-(o[0] + sp[0] * px), -(o[1] + sp[1] * py), o[2] + sp[2] * z]

    strokes = []
    for py in np.unique(np.nonzero(shown.labels[z] == 2)[0]):
        row = np.nonzero(shown.labels[z, py] == 2)[0]
        strokes.append([ras(px, py) for px in np.linspace(row.min(), row.max(), 4)])
    server = start_server(folder / "shot", "screenshot-token-0123456789")
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"http://127.0.0.1:{server.port}/?token=screenshot-token-0123456789#case={names[3]}")
    page.wait_for_function(f"document.body.dataset.loaded === '{names[3]}'")
    page.evaluate("window.vetsegReview.selectOrgan(2)")
    page.evaluate(
        "mm => { const nv = window.vetsegReview.nv;"
        " nv.scene.crosshairPos = nv.mm2frac(mm); nv.drawScene(); }",
        strokes[len(strokes) // 2][1],
    )
    page.click("#layouts button[data-layout=axial]")
    page.fill("#pen-size", "1")
    page.dispatch_event("#pen-size", "input")
    box = page.locator("#gl").bounding_box()
    for stroke_mm in strokes:
        pixels = page.evaluate(
            "pts => pts.map(mm => window.vetsegReview.nv.frac2canvasPos("
            "window.vetsegReview.nv.mm2frac(mm)))",
            stroke_mm,
        )
        page.mouse.move(box["x"] + pixels[0][0], box["y"] + pixels[0][1])
        page.mouse.down()
        for px, py in pixels[1:]:
            page.mouse.move(box["x"] + px, box["y"] + py, steps=3)
        page.mouse.up()
    page.click("#layouts button[data-layout=mpr]")
    page.wait_for_timeout(500)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    context.close()
    server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="100,400", help="slice counts of the 512x512 scans")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/review_latency.json")
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    depths = [int(d) for d in args.depths.split(",")]
    token = "benchmark-token-0123456789"
    with tempfile.TemporaryDirectory(prefix="vetseg-review-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        cases = build_workspace(folder, depths)
        print(f"workspace built in {time.perf_counter() - started:.0f} s", flush=True)
        server = start_server(folder / "ws", token)
        url = f"http://127.0.0.1:{server.port}/?token={token}"
        results: dict[str, Any] = {}
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            version = browser.version
            for case, depth in zip(cases, depths, strict=True):
                scan = folder / "ws" / "data" / case / "image.nii.gz"
                runs = [measure(browser, url, case, 300_000) for _ in range(args.repeats)]
                summary = {
                    "shape_xyz": [512, 512, depth],
                    "scan_gzip_mb": round(scan.stat().st_size / 1e6, 1),
                    "scan_raw_mb": round(512 * 512 * depth * 2 / 1e6, 1),
                    "first_render_since_navigation_s": _median(runs, "open", "since_navigation_ms"),
                    "first_render_since_case_open_s": _median(runs, "open", "open_ms"),
                    "save_total_s": _median(runs, "save", "total_ms"),
                    "save_browser_export_s": _median(runs, "save", "export_ms"),
                    "save_server_s": _median(runs, "save", "server_ms"),
                    "upload_mb": round(runs[-1]["save"]["upload_bytes"] / 1e6, 2),
                    "runs": runs,
                }
                results[case] = summary
                print(case, {k: v for k, v in summary.items() if k != "runs"}, flush=True)
            if args.screenshot is not None:
                screenshot(browser, args.screenshot, folder)
            browser.close()
        server.should_exit = True
    report = {
        "command": "python benchmarks/review_latency.py " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; shared 2 cores",
        "chromium": version,
        "renderer": "SwiftShader (software WebGL; no GPU)",
        "repeats": args.repeats,
        "cases": results,
    }
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


def _median(runs: list[dict[str, Any]], part: str, key: str) -> float | None:
    values = [r[part][key] for r in runs if r[part] and r[part].get(key) is not None]
    return round(statistics.median(values) / 1000, 3) if values else None


if __name__ == "__main__":
    main()
