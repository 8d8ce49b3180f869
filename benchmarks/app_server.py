"""Starts `python app.py --tiny` on a free localhost port (for the app tests and the soak benchmark), and stops it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    def __init__(self, cache_dir: Path, *extra: str, model: tuple[str, ...] = ("--tiny",), env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cache_dir = cache_dir
        env = {
            **os.environ,
            "GRADIO_TEMP_DIR": str(cache_dir),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            **(env or {}),
        }
        command = [sys.executable, "app.py", *model, "--port", str(self.port), *extra]
        self.log = open(cache_dir.parent / f"app-{self.port}.log", "w")
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"app.py did not answer within {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def resident_megabytes(self) -> float:
        """The server process's resident memory (VmRSS), in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024

    def upload(self, data: bytes, name: str = "photo.png") -> dict:
        """A file sent the way the browser sends it; the FileData a request then names it by."""
        paths = httpx.post(f"{self.url}gradio_api/upload", files={"files": (name, data)}, timeout=60).json()
        return {"path": paths[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, data: list | str, timeout: float = 180) -> "Answer":
        """One request in a fresh session, its JSON as any HTTP client may write it (a str is sent as it is);
        "timeout" when it has not ended after `timeout` seconds."""
        body = data if isinstance(data, str) else json.dumps({"data": data})
        started = httpx.post(f"{self.url}gradio_api/call/{endpoint}", content=body,
                             headers={"content-type": "application/json"}, timeout=60)  # fmt: skip
        if started.status_code != 200:
            return Answer("http", f"HTTP {started.status_code}: {started.text}")
        deadline, lines = time.monotonic() + timeout, []
        with httpx.stream(
            "GET", f"{self.url}gradio_api/call/{endpoint}/{started.json()['event_id']}", timeout=60
        ) as stream:
            for line in stream.iter_lines():  # Gradio's heartbeats keep a stream open: the deadline ends a stuck one
                lines.append(line)
                if time.monotonic() > deadline:
                    return Answer("timeout", f"no answer within {timeout:g} s")
        return Answer.of("\n".join(lines))


@dataclass(frozen=True)
class Answer:
    """How a request ended: "complete" with the outputs, "error" with the sentence, or "http" with the status."""

    event: str
    value: object

    @classmethod
    def of(cls, stream: str) -> "Answer":
        events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
        payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
        event = events[-1] if events else "none"
        value = json.loads(payloads[-1]) if payloads and payloads[-1] not in ("", "null") else None
        if event == "error":
            value = value.get("error") if isinstance(value, dict) else value
        return cls(event, value)
