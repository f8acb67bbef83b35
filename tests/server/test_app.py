"""The review app's HTTP API: token, queue, files served, saves through the correction code."""

from __future__ import annotations

import gzip
import json
import socket
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import TOKEN, LiveServer
from tests.workflow.conftest import Setup
from tests.workflow.helpers import db_rows, temp_leftovers
from vetseg.io.image import ImageMeta, read_image, read_label, write_image
from vetseg.server.app import create_app
from vetseg.workflow.correct import correction_effort
from vetseg.workflow.workspace import Workspace


@pytest.fixture()
def client(workspace: Setup) -> TestClient:
    with TestClient(create_app(workspace.root, TOKEN)) as test_client:
        yield test_client


def _auth() -> dict[str, str]:
    return {"X-Vetseg-Token": TOKEN}


def _first_case(client: TestClient) -> str:
    return client.get("/api/cases", headers=_auth()).json()["cases"][0]["case"]


def _edited_label(
    root: Path, case_id: str, out: Path, organ: int = 1
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The case's pre-label with one slab painted ``organ``: NIfTI bytes, edit, pre-label."""
    with Workspace.open(root) as ws:
        image, meta = read_image(ws.path(ws.case(case_id).image))
        prelabel = ws.latest_prelabel(case_id)
        draft = read_label(ws.path(prelabel.path))[0].astype(np.uint8)
    labels = draft.copy()
    labels[2, 5:15, 5:15] = organ
    path = write_image(labels, meta, out)
    return path.read_bytes(), labels, draft


@pytest.mark.parametrize(
    "url", ["/", "/api/cases", "/static/review.js", "/api/cases/new0/scan.nii.gz"]
)
def test_every_endpoint_needs_the_token(client: TestClient, url: str) -> None:
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-Vetseg-Token": TOKEN[:-1] + "x"}).status_code == 401
    assert client.get(url, params={"token": "wrong-token-of-some-length"}).status_code == 401
    assert client.get(url, headers=_auth()).status_code in (200, 404)
    upload = client.post("/api/cases/new0/corrections?base_version=0", content=b"x")
    assert upload.status_code == 401


def test_first_page_load_with_the_token_sets_a_cookie_for_the_rest(workspace: Setup) -> None:
    with TestClient(create_app(workspace.root, TOKEN)) as fresh:
        page = fresh.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "samesite=strict" in page.headers["set-cookie"].lower()
        assert fresh.get("/api/cases").status_code == 200  # the cookie now carries the token


def test_queue_lists_most_uncertain_first_then_labelled_cases(client: TestClient) -> None:
    body = client.get("/api/cases", headers=_auth()).json()
    assert [o["name"] for o in body["organs"]] == ["liver", "spleen"]
    rows = body["cases"]
    editable = [r for r in rows if r["editable"]]
    scores = [r["uncertainty"] for r in editable]
    assert len(editable) == 3 and scores == sorted(scores, reverse=True)
    assert {r["state_text"] for r in editable} == {"pre-labelled"}
    assert [r["state_text"] for r in rows[3:]] == ["labelled", "labelled"]


def test_case_files_are_served_compressed_and_match_the_workspace(
    client: TestClient, workspace: Setup
) -> None:
    case_id = _first_case(client)
    info = client.get(f"/api/cases/{case_id}", headers=_auth()).json()
    assert info == {
        "case": case_id,
        "state": "prelabelled",
        "version": 0,
        "overlay": "prelabel",
        "editable": True,
        "size": [40, 40, 10],
    }
    scan = client.get(f"/api/cases/{case_id}/scan.nii.gz", headers=_auth())
    label = client.get(f"/api/cases/{case_id}/label.nii.gz", headers=_auth())
    with Workspace.open(workspace.root) as ws:
        assert scan.content == ws.path(ws.case(case_id).image).read_bytes()
        assert label.content == ws.path(ws.latest_prelabel(case_id).path).read_bytes()
    assert scan.content[:2] == b"\x1f\x8b"  # gzip


@pytest.mark.parametrize(
    "url",
    [
        "/api/cases/..%2F..%2Fvetseg.toml/scan.nii.gz",
        "/api/cases/../vetseg.db",
        "/api/cases/%2Fetc%2Fpasswd/label.nii.gz",
        "/static/../app.py",
        "/static/%2E%2E/app.py",
        "/static/..%2Fapp.py",
    ],
)
def test_path_traversal_is_refused(client: TestClient, url: str) -> None:
    response = client.get(url, headers=_auth())
    assert response.status_code == 404
    assert b"import" not in response.content and b"species" not in response.content


def test_a_database_path_outside_the_workspace_is_not_served(
    client: TestClient, workspace: Setup
) -> None:
    db = sqlite3.connect(workspace.root / "vetseg.db")
    db.execute("UPDATE cases SET image = '../../../../etc/passwd' WHERE case_id = 'new0'")
    db.commit()
    db.close()
    response = client.get("/api/cases/new0/scan.nii.gz", headers=_auth())
    assert response.status_code == 404 and "leaves the workspace" in response.json()["detail"]


def test_a_save_is_a_new_version_through_the_correction_code(
    client: TestClient, workspace: Setup, tmp_path: Path
) -> None:
    case_id = _first_case(client)
    payload, labels, draft = _edited_label(workspace.root, case_id, tmp_path / "edit.nii.gz")
    url = f"/api/cases/{case_id}/corrections"
    first = client.post(url, params={"base_version": 0}, content=payload, headers=_auth())
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["file"].endswith("corrected_v001.nii.gz")
    changed, drawn, effort = correction_effort(draft, labels)
    assert changed > 0
    assert (first.json()["changed_voxels"], first.json()["drawn_voxels"]) == (changed, drawn)
    assert first.json()["effort"] == pytest.approx(effort)
    v1 = workspace.root / first.json()["file"]
    v1_bytes = v1.read_bytes()
    assert np.array_equal(read_label(v1)[0], labels)

    payload2, _, _ = _edited_label(workspace.root, case_id, tmp_path / "edit2.nii.gz", organ=2)
    second = client.post(url, params={"base_version": 1}, content=payload2, headers=_auth())
    assert second.status_code == 201 and second.json()["version"] == 2
    assert v1.read_bytes() == v1_bytes  # never overwritten
    with Workspace.open(workspace.root) as ws:
        assert [v.version for v in ws.corrections(case_id)] == [1, 2]
        assert ws.case(case_id).state == "corrected"
        audit = [a for a in ws.audit_log() if a["action"] == "correct"]
        assert [a["details"]["version"] for a in audit] == [1, 2]
        assert audit[0]["details"]["source"].startswith("vetseg review")
    queue = client.get("/api/cases", headers=_auth()).json()["cases"]
    assert next(r for r in queue if r["case"] == case_id)["state_text"] == "corrected v2"
    assert temp_leftovers(workspace.root) == []


def test_a_stale_save_is_refused_and_stores_nothing(
    client: TestClient, workspace: Setup, tmp_path: Path
) -> None:
    case_id = _first_case(client)
    payload, _, _ = _edited_label(workspace.root, case_id, tmp_path / "edit.nii.gz")
    url = f"/api/cases/{case_id}/corrections"
    assert client.post(url, params={"base_version": 0}, content=payload, headers=_auth()).is_success
    other, _, _ = _edited_label(workspace.root, case_id, tmp_path / "other.nii.gz", organ=2)
    stale = client.post(url, params={"base_version": 0}, content=other, headers=_auth())
    assert stale.status_code == 409
    assert "version 1 was saved" in stale.json()["detail"]
    assert "kept in this browser" in stale.json()["detail"]
    assert db_rows(workspace.root, "SELECT version FROM corrections") == [(1,)]
    assert sorted(p.name for p in (workspace.root / "review" / case_id).glob("corrected_*")) == [
        "corrected_v001.nii.gz"
    ]


def _nifti(labels: np.ndarray, meta: ImageMeta, out: Path) -> bytes:
    return write_image(labels, meta, out).read_bytes()


def test_uploads_larger_than_a_label_or_on_another_grid_are_refused(
    client: TestClient, workspace: Setup, tmp_path: Path
) -> None:
    case_id = _first_case(client)
    url = f"/api/cases/{case_id}/corrections?base_version=0"
    with Workspace.open(workspace.root) as ws:
        _, meta = read_image(ws.path(ws.case(case_id).image))
    labels = np.zeros((10, 40, 40), np.uint8)
    labels[3:6, 10:20, 10:20] = 1

    too_big = client.post(url, content=b"\0" * (40 * 40 * 10 + 64 * 1024 + 1), headers=_auth())
    assert too_big.status_code == 413
    other_shape = _nifti(np.ones((10, 40, 41), np.uint8), meta, tmp_path / "a.nii.gz")
    assert client.post(url, content=other_shape, headers=_auth()).status_code == 422
    moved = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(5.0, 0.0, 0.0))
    other_origin = _nifti(labels, moved, tmp_path / "b.nii.gz")
    response = client.post(url, content=other_origin, headers=_auth())
    assert response.status_code == 422 and "same voxel grid" in response.json()["detail"]
    unknown_organ = labels.copy()
    unknown_organ[0, 0, 0] = 7
    bad_ids = _nifti(unknown_organ, meta, tmp_path / "c.nii.gz")
    assert client.post(url, content=bad_ids, headers=_auth()).status_code == 422
    not_nifti = gzip.compress(b"this is no NIfTI header" * 40)
    assert client.post(url, content=not_nifti, headers=_auth()).status_code == 400
    # A forged header promising a huge volume never reaches the image reader.
    forged = bytearray(_nifti(labels, meta, tmp_path / "d.nii")[:352])
    forged[42:48] = np.array([30000, 30000, 30000], "<i2").tobytes()
    assert client.post(url, content=bytes(forged), headers=_auth()).status_code == 422
    assert db_rows(workspace.root, "SELECT count(*) FROM corrections") == [(0,)]
    # And a good upload after all these is stored.
    good = _nifti(labels, meta, tmp_path / "e.nii.gz")
    assert client.post(url, content=good, headers=_auth()).status_code == 201


def test_a_labelled_case_is_shown_but_not_saved(client: TestClient, tmp_path: Path) -> None:
    rows = client.get("/api/cases", headers=_auth()).json()["cases"]
    labelled = next(r["case"] for r in rows if r["state"] == "labelled")
    info = client.get(f"/api/cases/{labelled}", headers=_auth()).json()
    assert info["overlay"] == "label" and not info["editable"]
    response = client.post(
        f"/api/cases/{labelled}/corrections?base_version=0", content=b"x", headers=_auth()
    )
    assert response.status_code == 409


def test_the_server_survives_a_client_that_disconnects_mid_upload(
    live_server: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/cases/new0/corrections?base_version=0 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nX-Vetseg-Token: " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 12000\r\nContent-Type: application/octet-stream\r\n\r\n"
            + b"\x1f\x8b"
            + b"\0" * 998
        )
        deadline = time.monotonic() + 10
        while not any(live_server.uploads.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        # The server is receiving: its upload file exists, waiting for the other 11000 bytes.
        assert len(list(live_server.uploads.iterdir())) == 1
    deadline = time.monotonic() + 10
    while any(live_server.uploads.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /api/cases HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"X-Vetseg-Token: " + TOKEN.encode() + b"\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert len(body["cases"]) == 5
    assert db_rows(live_server.root, "SELECT count(*) FROM corrections") == [(0,)]
    assert temp_leftovers(live_server.root) == []
    assert list(live_server.uploads.iterdir()) == []


def test_a_scan_stored_uncompressed_is_served_as_gzip_nifti(tmp_path: Path) -> None:
    from tests.workflow.helpers import ORGANS, phantom
    from vetseg.workflow.register import add_scans
    from vetseg.workflow.workspace import WorkspaceSettings

    image, _ = phantom(seed=7)
    meta = ImageMeta(spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0))
    scan = write_image(image, meta, tmp_path / "plain.nrrd")
    settings = WorkspaceSettings(species="rabbit", organs=ORGANS, synthetic=True)
    with Workspace.create(tmp_path / "ws", settings) as ws:
        add_scans(ws, [scan])
        assert ws.case("plain").image.endswith(".nrrd")
    with TestClient(create_app(tmp_path / "ws", TOKEN)) as test_client:
        served = test_client.get("/api/cases/plain/scan.nii.gz", headers=_auth())
    assert served.status_code == 200 and served.content[:2] == b"\x1f\x8b"
    copy = tmp_path / "served.nii.gz"
    copy.write_bytes(served.content)
    array, served_meta = read_image(copy)
    assert np.array_equal(array, image)
    assert np.allclose(served_meta.spacing, meta.spacing)
    assert np.allclose(served_meta.origin, meta.origin)
