"""The ``vetseg review`` web app: a FastAPI factory, HTTP only; the work is in workflow/.

Endpoints (every one needs the access token: ``?token=`` on the first page load, which sets a
same-site cookie, then the cookie or an ``X-Vetseg-Token`` header)::

    GET  /                                  the review page
    GET  /static/{name}                     its script, styles and NiiVue (a fixed file list)
    GET  /api/cases                         queue, organs and colours
    GET  /api/cases/{case}                  what the viewer loads for a case
    GET  /api/cases/{case}/scan.nii.gz      the scan (gzip NIfTI)
    GET  /api/cases/{case}/label.nii.gz     the overlay: newest correction / pre-label / label
    POST /api/cases/{case}/corrections?base_version=N
                                            body: the edited label map as NIfTI (gzip or not)

Case names only ever select database rows, and the files served are paths those rows hold, so a
name such as ``../../etc/passwd`` finds no case. The workspace database is opened per request:
sqlite3 connections belong to one thread and FastAPI runs plain functions in a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import secrets
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from vetseg.errors import GridMismatchError, InputError, LabelMappingError, StaleVersionError
from vetseg.workflow.review import case_files, organ_table, review_cases, save_review
from vetseg.workflow.workspace import Workspace

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "vetseg_token"
HEADER = "x-vetseg-token"
#: Room for a NIfTI header and extensions on top of one byte per voxel: NiiVue saves drawings
#: as uint8, so an upload larger than this is no label of this scan.
HEADER_ALLOWANCE = 64 * 1024
#: NIfTI datatype codes a label map may use (unsigned/signed 8 and 16 bit integers).
LABEL_DATATYPES = {2: 1, 256: 1, 4: 2, 512: 2}
MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".json": "text/json"}


def new_token() -> str:
    """A random access token for one server run."""
    return secrets.token_urlsafe(24)


def _static_files() -> dict[str, Path]:
    # A fixed list built at start-up: a request names a key, never a path.
    return {
        p.relative_to(STATIC).as_posix(): p
        for p in STATIC.rglob("*")
        if p.is_file() and p.suffix in MEDIA
    }


def nifti_dims(head: bytes) -> tuple[tuple[int, int, int], int]:
    """``((nx, ny, nz), datatype)`` of a NIfTI-1 header, or InputError when it is not one."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype = struct.unpack(endian + "h", head[70:72])[0]
            if dims[0] == 3 or (dims[0] == 4 and dims[4] == 1):
                return (dims[1], dims[2], dims[3]), datatype
            raise InputError(f"the upload is a {dims[0]}-D NIfTI image, not a 3-D label map.")
    raise InputError("the upload is not a NIfTI-1 file.")


def _scan_size(path: Path) -> tuple[int, int, int]:
    """The scan's size (x, y, z) from its header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    return int(size[0]), int(size[1]), int(size[2])


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def create_app(workspace_path: str | Path, token: str) -> FastAPI:
    """The review app for one workspace.

    Args:
        workspace_path: the workspace folder (``vetseg init``).
        token: the access token every request must carry.

    Returns:
        A FastAPI app; serve it with uvicorn (``vetseg review``) or FastAPI's TestClient.

    Raises:
        InputError: ``workspace_path`` is not a workspace.
    """
    root = Path(workspace_path).resolve()
    Workspace.open(root).close()  # fail now, with vetseg's message, not on the first request
    if len(token) < 16:
        raise InputError("the review token must be at least 16 characters long.")
    static = _static_files()
    uploads = Path(tempfile.mkdtemp(prefix="vetseg-review-"))
    converted: dict[str, Path] = {}
    save_lock = asyncio.Lock()

    def require_token(request: Request) -> None:
        given = (
            request.headers.get(HEADER)
            or request.cookies.get(COOKIE)
            or request.query_params.get("token")
            or ""
        )
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise _error(401, "this page needs the link with its access token that vetseg printed")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        shutil.rmtree(uploads, ignore_errors=True)

    app = FastAPI(
        title="vetseg review",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_token)],
        lifespan=lifespan,
    )
    app.state.workspace = root
    app.state.uploads = uploads  # tests check that no upload outlives its request

    @contextlib.contextmanager
    def workspace() -> Iterator[Workspace]:
        with Workspace.open(root) as ws:
            yield ws

    def files_of(case_id: str) -> Any:
        with workspace() as ws:
            try:
                return case_files(ws, case_id)
            except InputError as exc:
                raise _error(404, str(exc)) from None

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", media_type="text/html")
        if request.query_params.get("token"):
            # The cookie carries the token to the script, image and API requests; SameSite
            # keeps other sites' pages from sending it.
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/static/{name:path}")
    def static_file(name: str) -> Response:
        path = static.get(name)
        if path is None:
            raise _error(404, f"no static file {name!r}")
        return FileResponse(path, media_type=MEDIA[path.suffix])

    @app.get("/api/cases")
    def cases() -> dict[str, Any]:
        with workspace() as ws:
            return {
                "workspace": str(root),
                "species": ws.settings.species,
                "synthetic": ws.settings.synthetic,
                "window": list(ws.settings.window),
                "organs": organ_table(ws),
                "cases": review_cases(ws),
            }

    @app.get("/api/cases/{case_id}")
    def case(case_id: str) -> dict[str, Any]:
        files = files_of(case_id)
        return {
            "case": files.case_id,
            "state": files.state,
            "version": files.version,
            "overlay": files.overlay_kind,
            "editable": files.editable,
            "size": list(_scan_size(files.scan)),
        }

    @app.get("/api/cases/{case_id}/scan.nii.gz")
    def scan(case_id: str) -> Response:
        files = files_of(case_id)
        path = files.scan
        if not path.name.endswith(".nii.gz"):
            # NRRD, MHA or plain .nii scans are served as gzip NIfTI, converted once per run.
            path = converted.get(str(files.scan)) or _convert(files.scan)
            converted[str(files.scan)] = path
        return FileResponse(path, media_type="application/gzip")

    def _convert(source: Path) -> Path:
        from vetseg.io.image import read_image, write_image

        image, meta = read_image(source)
        return write_image(image, meta, uploads / f"scan-{len(converted)}.nii.gz")

    @app.get("/api/cases/{case_id}/label.nii.gz")
    def label(case_id: str) -> Response:
        files = files_of(case_id)
        if files.overlay is None:
            raise _error(404, f"case {case_id} has no label yet: draw it from nothing")
        return FileResponse(files.overlay, media_type="application/gzip")

    @app.post("/api/cases/{case_id}/corrections", status_code=201)
    async def save(case_id: str, base_version: int, request: Request) -> Response:
        started = time.perf_counter()
        files = await run_in_threadpool(files_of, case_id)
        if not files.editable:
            raise _error(409, f"case {case_id} was registered with its label; it is not edited")
        size = await run_in_threadpool(_scan_size, files.scan)
        limit = size[0] * size[1] * size[2] + HEADER_ALLOWANCE
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _error(413, f"upload of {declared} bytes is larger than a label of this scan")
        upload = Path(tempfile.mkstemp(dir=uploads, suffix=".upload")[1])
        try:
            received = 0
            with open(upload, "wb") as handle:
                try:
                    async for chunk in request.stream():
                        received += len(chunk)
                        if received > limit:
                            raise _error(413, "upload is larger than a label of this scan")
                        handle.write(chunk)
                except ClientDisconnect:
                    # The page went away mid-upload: nothing to store, nobody to answer.
                    return Response(status_code=499)
            named = await run_in_threadpool(_check_upload, upload, size)
            async with save_lock:  # one save at a time: the workspace lock is per process too
                result = await run_in_threadpool(_store, case_id, named, base_version)
        finally:
            for leftover in (upload, upload.with_suffix(".nii"), upload.with_suffix(".nii.gz")):
                leftover.unlink(missing_ok=True)
        record = result.record
        elapsed_ms = 1000 * (time.perf_counter() - started)
        return JSONResponse(
            # Server-Timing: the page (and benchmarks/review_latency.py) splits a save's latency
            # into this server part and the browser's export and upload.
            headers={"Server-Timing": f"save;dur={elapsed_ms:.1f}"},
            status_code=201 if result.new else 200,
            content={
                "case": case_id,
                "version": record.version,
                "new": result.new,
                "file": record.path,
                "changed_voxels": record.changed_voxels,
                "drawn_voxels": record.drawn_voxels,
                "effort": record.effort if record.effort == record.effort else None,
            },
        )

    def _check_upload(upload: Path, size: tuple[int, int, int]) -> Path:
        # Read the header ourselves before ITK does: ITK would allocate whatever a forged
        # header asks for.
        with open(upload, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        try:
            opener: Any = gzip.open if compressed else open
            with opener(upload, "rb") as handle:
                head = handle.read(352)
            dims, datatype = nifti_dims(head)
        except (OSError, EOFError) as exc:
            raise _error(400, f"the upload is no readable NIfTI file ({exc})") from None
        except InputError as exc:
            raise _error(400, str(exc)) from None
        if dims != size:
            raise _error(
                422,
                f"the upload is {' x '.join(map(str, dims))} voxels, the scan "
                f"{' x '.join(map(str, size))}: not on the scan's grid",
            )
        if datatype not in LABEL_DATATYPES:
            raise _error(422, f"the upload's NIfTI datatype {datatype} is not an integer label")
        named = upload.with_suffix(".nii.gz" if compressed else ".nii")
        upload.rename(named)
        return named

    def _store(case_id: str, upload: Path, base_version: int) -> Any:
        with workspace() as ws:
            try:
                return save_review(ws, case_id, upload, base_version)
            except StaleVersionError as exc:
                raise _error(409, f"{exc} Your drawing is kept in this browser.") from None
            except (GridMismatchError, LabelMappingError) as exc:
                raise _error(422, str(exc)) from None
            except InputError as exc:
                raise _error(400, str(exc)) from None

    return app


__all__ = ["create_app", "new_token", "nifti_dims"]
