"""`portrait weights` and its downloader, offline: the table says truthfully what is here; `fetch` fails in one
line per weight with a non-zero exit; files resume from `.part` with HTTP Range and are checked before they
are renamed. The only server is a local one on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

import portrait.loading
from portrait.download import download
from portrait.errors import MissingWeightsError
from portrait.loading import resolve_weight_file
from portrait.weights import LCM_LORA, WEIGHTS, WeightFile
from portrait.weights_command import fetch, table

REPO = Path(__file__).resolve().parent.parent
DATA = bytes(range(256)) * 4096  # 1 MiB
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()


class FileServer(ThreadingHTTPServer):
    """Serves DATA at any path, honouring `Range: bytes=N-`; the first `cut_first` answers stop half way."""

    def __init__(self, honour_range: bool = True, cut_first: int = 0):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.honour_range, self.cut_first, self.ranges = honour_range, cut_first, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/model.pth"


class RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: FileServer = self.server
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and server.honour_range else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(DATA) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        self.end_headers()
        body = DATA[start:]
        if server.cut_first > 0:
            server.cut_first -= 1
            body = body[: len(body) // 2]  # then the connection closes: an interrupted download
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(**options) -> FileServer:
        server = FileServer(**options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_interrupted_download_resumes_from_its_partial_with_a_range_request(tmp_path, serve, capsys):
    server = serve(cut_first=1)
    path = tmp_path / "model.pth"
    with pytest.raises(MissingWeightsError, match="rerun to resume"):
        download(server.url, path, len(DATA), DATA_SHA256)
    part = tmp_path / "model.pth.part"
    received = part.stat().st_size
    assert 0 < received < len(DATA) and not path.exists()
    assert download(server.url, path, len(DATA), DATA_SHA256) == path
    assert server.ranges == [None, f"bytes={received}-"]
    assert path.read_bytes() == DATA and not part.exists()
    assert "model.pth" in capsys.readouterr().err  # tqdm's progress bar, labelled with the file


def test_a_server_that_ignores_range_sends_the_whole_file_again(tmp_path, serve):
    server = serve(honour_range=False)
    (tmp_path / "model.pth.part").write_bytes(b"\0" * 1000)  # not even a prefix of the file: must not survive
    download(server.url, tmp_path / "model.pth", len(DATA), DATA_SHA256)
    assert (tmp_path / "model.pth").read_bytes() == DATA


@pytest.mark.parametrize("size, sha256", [(len(DATA), "0" * 64), (len(DATA) + 1, None)])
def test_a_file_that_fails_its_check_is_refused_and_not_left_in_place(tmp_path, serve, size, sha256):
    server = serve()
    with pytest.raises(MissingWeightsError, match="not the expected file") as error:
        download(server.url, tmp_path / "model.pth", size, sha256)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial


def test_missing_weight_files_come_through_the_same_downloader(tmp_path, serve, monkeypatch):
    server = serve()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(portrait.loading, "host_reachable", lambda url, timeout=3.0: True)
    weight = WeightFile("model.pth", "a test model", server.url, len(DATA), DATA_SHA256)
    assert resolve_weight_file(weight, tmp_path).read_bytes() == DATA


def fake_hub_cache(root: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub keeps: refs/main names a snapshot folder holding the files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / name).write_bytes(content)


def test_the_table_says_what_is_here_where_it_goes_its_size_and_licence(tmp_path, monkeypatch):
    folder, cache = tmp_path / "weights", tmp_path / "hub"
    folder.mkdir()
    (folder / "recognition_arcface_ir_se50.pth").write_bytes(b"x" * 2500)  # a file of unknown size: present
    (folder / "detection_Resnet50_Final.pth").write_bytes(b"x" * 10)  # not RetinaFace's 109,497,761 bytes
    (folder / "parsing_bisenet.pth.part").write_bytes(b"x" * 5_328_946)  # a tenth of BiSeNet, interrupted
    fake_hub_cache(cache, LCM_LORA.repo_id, {"pytorch_lora_weights.safetensors": b"x" * 3_000_000})
    fake_hub_cache(cache, "openai/clip-vit-large-patch14", {"config.json": b"{}"})  # lacks model.safetensors
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    text = table(folder)
    rows = {line.split()[0]: line for line in text.splitlines()[5:-2]}
    assert list(rows) == list(WEIGHTS)
    assert f"Weights folder: {folder}" in text and str(cache) in text
    assert cells(rows["arcface"])[:3] == ["present", "2.5 kB", str(folder / "recognition_arcface_ir_se50.pth")]
    assert "wrong size, 109497761 B expected" in rows["retinaface"] and "10 B" in rows["retinaface"]
    assert "partial 10%" in rows["bisenet"] and "53.3 MB" in rows["bisenet"]
    assert "present" in rows["lcm-lora"] and "3 MB" in rows["lcm-lora"] and "OpenRAIL++" in rows["lcm-lora"]
    assert "missing" in rows["clip-vit-l14"] and "≈1.71 GB" in rows["clip-vit-l14"]
    assert "missing" in rows["sd15"] and "≈4.27 GB" in rows["sd15"] and "CreativeML OpenRAIL-M" in rows["sd15"]
    assert "missing" in rows["fastcomposer"] and "mit-han-lab/fastcomposer" in rows["fastcomposer"]
    assert "MIT" in rows["fastcomposer"] and "missing" in rows["curricularface"]


def cells(row: str) -> list[str]:
    """The status and size cells of a table row."""
    parts = [cell.strip() for cell in row.split("  ") if cell.strip()]
    return parts[2:]


def run_portrait(*args: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "portrait", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_fetch_offline_says_in_one_line_per_weight_what_it_could_not_get_and_where_it_goes(tmp_path):
    (tmp_path / "recognition_arcface_ir_se50.pth").write_bytes(b"x")
    done = run_portrait("weights", "fetch", "--all", "--weights-dir", str(tmp_path), HF_HUB_OFFLINE="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stdout.strip() == f"arcface: already here ({tmp_path / 'recognition_arcface_ir_se50.pth'})"
    lines = done.stderr.strip().splitlines()
    assert [line.split(":")[2].strip() for line in lines] == [name for name in WEIGHTS if name != "arcface"]
    for line in lines:
        assert line.startswith("portrait: error: ")
        assert str(tmp_path) in line or huggingface_hub.constants.HF_HUB_CACHE in line, line


def test_fetch_from_an_unreachable_host_fails_in_one_line_without_a_traceback(tmp_path):
    """With offline mode off: a file whose host refuses, and a hub whose endpoint refuses (both on loopback)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    code = (
        "import dataclasses, sys; from portrait import weights; from portrait.cli import main; "
        "entry = weights.WEIGHTS['retinaface']; "
        f"source = dataclasses.replace(entry.source, url='{dead}/detection_Resnet50_Final.pth'); "
        "weights.WEIGHTS['retinaface'] = dataclasses.replace(entry, source=source); sys.exit(main(sys.argv[1:]))"
    )
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")}
    done = run_portrait("weights", "fetch", "retinaface", "lcm-lora", "--weights-dir", str(tmp_path), code=code,
                        HF_HUB_OFFLINE="0", HF_ENDPOINT=dead, HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="", no_proxy="",
                        **proxies)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    retinaface, lcm = done.stderr.strip().splitlines()
    assert retinaface.startswith("portrait: error: retinaface: Could not download") and str(tmp_path) in retinaface
    assert lcm.startswith("portrait: error: lcm-lora: could not get latent-consistency/lcm-lora-sdv1-5")
    assert list(tmp_path.iterdir()) == []


def test_fetch_names_are_checked(tmp_path, capsys):
    from portrait.cli import main

    assert main(["weights", "fetch", "sd16", "--weights-dir", str(tmp_path)]) == 2
    assert "unknown weight sd16; the names are: sd15" in capsys.readouterr().err


def test_fetch_gets_a_file_through_the_downloader(tmp_path, serve, monkeypatch, capsys):
    server = serve()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    weight = dataclasses.replace(WEIGHTS["bisenet"], source=WeightFile("parsing_bisenet.pth", "test", server.url))
    assert fetch([weight], tmp_path) == 0
    assert (tmp_path / "parsing_bisenet.pth").read_bytes() == DATA
    assert f"bisenet: fetched ({tmp_path / 'parsing_bisenet.pth'})" in capsys.readouterr().out
