"""Mixed traffic against the app at the tiny preset for minutes, with the server's memory watched.

    python -m benchmarks.soak [--minutes N] [--json] [--clients 4]

Several clients send, each request in a fresh session: good photos (distinct, some 2048²) to detect_face and
generate, bad files (corrupt, blank, truncated), values of the wrong type, and generations cancelled while
they wait or run. The report: requests by kind, errors by sentence, good requests served, the server's
resident memory (RSS) at start (after the warm-up), peak and end, and its growth trend after the warm-up.

How the trend is measured, and why. A request in flight lifts RSS by 100 to 600 MB for a second or two
(a decoded 2048² photo, the models' activations), and with several clients the server is seldom idle, so
RSS sampled at arbitrary moments mostly measures what happens to be in flight. Every `QUIET_SECONDS` the
clients therefore pause: no new request starts, the ones in flight end, and after `SETTLE_SECONDS` the
lowest of a few readings is what the server holds between requests: one point of the trend. The trend is
the Theil–Sen slope of those points (the median of the slopes between every two of them, which one stray
point cannot swing) with its 95 % interval (Sen 1968, from Kendall's tau), in MB per minute; a run passes
when the interval's upper end is under `GROWTH_LIMIT`. RSS is also sampled every second for the peak. The
earlier estimate (a sample every 10 s, the lowest of each 30 s, least squares over the four such floors of
a 3-minute run) gave anything from -66 to +32 MB/min on one run's samples depending only on the second at
which sampling started.

The warm-up: Gradio's session table is filled first (`SESSIONS` requests that each open a session, as
many as the server keeps), then the first third of the traffic (at least a minute) fills the server's
caches and its allocator's arenas, so that the trend measures what a long run adds, not what any server
holds once it has served its first visitors.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command

from .app_server import AppServer

SAMPLE_SECONDS = 1.0  # for the peak
QUIET_SECONDS = 10.0  # a quiet point every this many seconds
SETTLE_SECONDS = 1.5  # after the last request in flight ends: cancelled generations stop, the server trims
WARM_UP = 1 / 3  # of the run, and at least a minute
SESSIONS = 200  # the server's --max-sessions: Gradio keeps this many sessions' state, dropping the oldest
# MB per minute after the warm-up, for the upper end of the trend's 95 % interval: 150 MB in 30 minutes is a leak
GROWTH_LIMIT = 5.0
# Sentences a visitor may be told; anything else is an unexpected error.
EXPECTED = (
    "No face found",
    "Could not read",
    "Could not decode",
    "Upload a photo",
    "must be",
    "not in the list of choices",
    "greater than maximum value",
    "less than minimum value",
)
KINDS = {"photo": 3, "generate": 2, "bad file": 2, "wrong type": 2, "cancel": 1}  # relative frequency
# Every input of /generate in the handler's order; the creative tools' (style template, detailer, control picture,
# control, its scale, more selfies) and the remembered face at their defaults.
GENERATE = '{"data": [%s, %s, "woman", %s, "none", "", %s, 0, %s, %s, 5, "Square 1:1", 0, false, "none", "no style", true, null, "canny", 1.0, null, null]}'
# face, prompt, custom word, images, random seed, steps: values of the wrong type where the UI has a box or slider
WRONG_TYPES = [
    ("null", "null", "null", "1", "true", "1"),
    ("123", '"a woman"', '""', "1", "true", "1"),
    ("null", '"a woman"', '""', '"four"', "true", "1"),
    ("null", '"a woman"', '""', "1", '"yes"', "1"),
    ("null", '"a woman"', '""', "1", "true", "null"),
    ('{"path": 5}', '["a", "woman"]', '""', "1", "true", "[1]"),
]


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    requests: Counter = field(default_factory=Counter)  # by kind
    errors: Counter = field(default_factory=Counter)  # by sentence (its first words)
    unexpected: list = field(default_factory=list)
    good: int = 0
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, error: str | None = None, good: bool = False, served: bool = False) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.good += good
            self.served += served
            if error is not None:
                if any(sentence in error for sentence in EXPECTED):
                    self.errors[" ".join(error.split()[:6])] += 1
                else:
                    self.unexpected.append(f"{kind}: {error[:300]}")


class Quiet:
    """Moments when no client has a request in flight, for reading what the server holds between requests."""

    def __init__(self):
        self._changed = threading.Condition()
        self._in_flight = 0
        self._paused = False

    @contextmanager
    def request(self):
        """Around each request of a client: it waits while the clients are paused."""
        with self._changed:
            self._changed.wait_for(lambda: not self._paused)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def read(self, measure, timeout: float = 240.0) -> float:
        """The lowest of `measure()` over a second, once the requests in flight have ended and settled."""
        with self._changed:
            self._paused = True
            self._changed.wait_for(lambda: self._in_flight == 0, timeout)
        try:
            time.sleep(SETTLE_SECONDS)
            readings = []
            for _ in range(5):
                readings.append(measure())
                time.sleep(0.2)
            return min(readings)
        finally:
            with self._changed:
                self._paused = False
                self._changed.notify_all()


class Visitor:
    """One client: a loop of requests of every kind, each in a fresh session."""

    def __init__(self, server: AppServer, tally: Tally, seed: int, face: Image.Image, quiet: Quiet | None = None):
        self.server, self.tally, self.random, self.face = server, tally, random.Random(seed), np.asarray(face)
        self.quiet = quiet or Quiet()

    def run(self, until: float) -> None:
        kinds, weights = zip(*KINDS.items())
        while time.monotonic() < until:
            kind = self.random.choices(kinds, weights)[0]
            with self.quiet.request():
                try:
                    getattr(self, kind.replace(" ", "_"))()
                except Exception as error:  # noqa: BLE001 - a client-side failure is a finding, reported
                    self.tally.record(kind, error=f"client: {type(error).__name__}: {error}")

    def distinct_photo(self) -> bytes:
        """The astronaut with a random patch in a corner (no two alike), one in five at 2048×2048 as JPEG."""
        pixels = self.face.copy()
        pixels[:16, :16] = [self.random.randrange(256) for _ in range(3)]
        image = Image.fromarray(pixels)
        buffer = io.BytesIO()
        if self.random.random() < 0.2:
            image.resize((2048, 2048), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
        else:
            image.save(buffer, format="PNG")
        return buffer.getvalue()

    def photo(self) -> None:
        answer = self.server.call("detect_face", [self.server.upload(self.distinct_photo())])
        served = answer.event == "complete" and str(answer.value[1]).startswith("Face found")
        self.tally.record("photo", None if served else str(answer.value), good=True, served=served)

    def generate(self) -> None:
        face = json.dumps(self.server.upload(self.distinct_photo()))
        answer = self.server.call("generate", GENERATE % (face, '"a photo of a woman"', '""', "1", "true", "2"))
        served = answer.event == "complete" and len(answer.value[0]) == 1
        self.tally.record("generate", None if served else str(answer.value), good=True, served=served)

    def bad_file(self) -> None:
        blank = io.BytesIO()
        Image.new("RGB", (300, 200), "white").save(blank, format="PNG")
        whole = self.distinct_photo()
        data = self.random.choice([b"\x89PNG\r\n\x1a\n not a picture", blank.getvalue(), whole[: len(whole) // 2], b""])
        answer = self.server.call("detect_face", [self.server.upload(data, "bad.png")])
        self.tally.record("bad file", str(answer.value) if answer.event != "complete" else "answered a bad file")

    def wrong_type(self) -> None:
        answer = self.server.call("generate", GENERATE % self.random.choice(WRONG_TYPES))
        self.tally.record("wrong type", str(answer.value) if answer.event != "complete" else "answered a wrong type")

    def cancel(self) -> None:
        """A generation cancelled while it waits or runs, in a client of its own (its own session)."""
        from gradio_client import Client, handle_file

        with tempfile.TemporaryDirectory() as folder:
            photo = Path(folder) / "me.png"
            photo.write_bytes(self.distinct_photo())
            client = Client(self.server.url, verbose=False)
            job = client.submit(handle_file(str(photo)), "a photo of a woman", steps=60, api_name="/generate")
            time.sleep(self.random.uniform(0.1, 1.5))
            job.cancel()
            client.close()
        self.tally.record("cancel")


def trend(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Theil–Sen slope of (seconds, MB) points and its 95 % interval (Sen 1968), in MB per minute."""
    slopes = sorted((b - a) / (tb - ta) for (ta, a), (tb, b) in itertools.combinations(points, 2) if tb > ta)
    if not slopes:
        return 0.0, -math.inf, math.inf
    n, pairs = len(points), len(slopes)
    spread = 1.96 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)  # Kendall's tau's standard deviation, in pairs
    # Ranks (1-based) M1 = (pairs − spread) / 2 and M2 + 1 = (pairs + spread) / 2 + 1, rounded outwards; 0-based here.
    low, high = max(0, math.floor((pairs - spread) / 2) - 1), min(pairs - 1, math.ceil((pairs + spread) / 2))
    return statistics.median(slopes) * 60, slopes[low] * 60, slopes[high] * 60


def fill_sessions(server: AppServer, count: int = SESSIONS) -> None:
    """`count` cheap requests (no photo), each in a session of its own: Gradio's session table is then full."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: server.call("detect_face", [None]), range(count)))


def soak(minutes: float, clients: int = 4, seed: int = 0) -> dict:
    """Run the traffic against a fresh tiny-preset server; the report as a dict."""
    from skimage import data

    face = Image.fromarray(data.astronaut())
    with tempfile.TemporaryDirectory() as folder:
        options = ("--max-queue", "32", "--concurrency", "2", "--max-sessions", str(SESSIONS))
        server = AppServer(Path(folder) / "gradio-cache", *options)
        try:
            fill_sessions(server)
            tally, quiet = Tally(), Quiet()
            samples: list[tuple[float, float]] = []  # every second, for the peak
            points: list[tuple[float, float]] = []  # between requests, for the trend
            started = time.monotonic()
            until = started + minutes * 60
            visitors = [Visitor(server, tally, seed + index, face, quiet) for index in range(clients)]
            threads = [threading.Thread(target=visitor.run, args=(until,), daemon=True) for visitor in visitors]
            for thread in threads:
                thread.start()
            next_point = started + QUIET_SECONDS
            while time.monotonic() < until:
                samples.append((time.monotonic() - started, server.resident_megabytes()))
                if time.monotonic() >= next_point:
                    points.append((time.monotonic() - started, quiet.read(server.resident_megabytes)))
                    next_point += QUIET_SECONDS
                time.sleep(min(SAMPLE_SECONDS, max(0.0, until - time.monotonic())))
            for thread in threads:
                thread.join(timeout=240)  # a request's own deadline is 180 s
                if thread.is_alive():
                    tally.record("client", "a client was still waiting for an answer 4 minutes after the end")
            after = server.call("detect_face", [server.upload(visitors[0].distinct_photo())]).event == "complete"
        finally:
            server.stop()
    warm_up = max(60.0, minutes * 60 * WARM_UP)
    floors = [point for point in points if point[0] >= warm_up] or points[-2:]
    growth, low, high = trend(floors)
    return {
        "minutes": minutes,
        "clients": clients,
        "requests": sum(tally.requests.values()),
        "requests_by_kind": dict(tally.requests),
        "good_requests": tally.good,
        "good_served": tally.served,
        "errors_by_sentence": dict(tally.errors),
        "unexpected_errors": tally.unexpected,
        "served_after": after,
        "rss_mb": {
            "start": round(floors[0][1]),
            "peak": round(max(mb for _, mb in samples)),
            "end": round(floors[-1][1]),
            "first_sample": round(samples[0][1]),
        },  # fmt: skip
        "warm_up_s": warm_up,
        "growth_mb_per_min": round(growth, 2),
        "growth_interval_mb_per_min": [round(low, 2), round(high, 2)],
        "growth_limit_mb_per_min": GROWTH_LIMIT,
        "floors": [(round(t), round(mb)) for t, mb in floors],  # the quiet points after the warm-up
        "samples": [(round(t), round(mb)) for t, mb in samples],
    }


def describe(report: dict) -> str:
    rss, (low, high) = report["rss_mb"], report["growth_interval_mb_per_min"]
    lines = [
        f"{report['minutes']:g} min, {report['clients']} clients: {report['requests']} requests "
        + ", ".join(f"{kind} {count}" for kind, count in report["requests_by_kind"].items()),
        f"good requests served: {report['good_served']} of {report['good_requests']}; a request after the run: "
        + ("served" if report["served_after"] else "NOT served"),
        "expected errors: "
        + (", ".join(f"{count}× {sentence!r}" for sentence, count in report["errors_by_sentence"].items()) or "none"),
        f"unexpected errors: {len(report['unexpected_errors'])}"
        + "".join(f"\n  {e}" for e in report["unexpected_errors"][:10]),
        f"RSS (MB): first sample {rss['first_sample']}, between requests after the {report['warm_up_s']:.0f} s "
        f"warm-up {rss['start']}, peak {rss['peak']}, between requests at the end {rss['end']}",
        f"growth of RSS between requests after the warm-up: {report['growth_mb_per_min']:+.2f} MB/min, 95 % "
        f"interval {low:+.2f} to {high:+.2f} (limit for its upper end {report['growth_limit_mb_per_min']:g})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=positive_int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = soak(args.minutes, args.clients, args.seed)
    print(json.dumps(report, indent=2) if args.json else describe(report))
    healthy = (not report["unexpected_errors"] and report["good_served"] == report["good_requests"] and report["served_after"]
               and report["growth_interval_mb_per_min"][1] < GROWTH_LIMIT)  # fmt: skip
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(run_command(main, prog="benchmarks.soak"))
