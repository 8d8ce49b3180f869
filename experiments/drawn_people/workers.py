"""Stages run here, or side by side in worker processes of one thread each (runner.py, demo_model.py)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from diffusers.utils import logging as diffusers_logging

from portrait.files import write_text

from .stages import Experiment


def _worker_setup(threads: int) -> None:
    torch.set_num_threads(threads)
    quiet()


def _stage(experiment: Experiment, method: str, args: tuple) -> tuple[str | None, float]:
    started = time.perf_counter()
    message = getattr(experiment, method)(*args)
    return message, round(time.perf_counter() - started, 1)


class Stages:
    """Runs stages here (all threads) or side by side in `workers` processes of one thread each."""

    def __init__(self, workers: int):
        self.workers = workers
        self.seconds: dict[str, float] = {}
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Stages":
        if self.workers > 1:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_worker_setup, initargs=(threads,)
            )
            # Start the workers now, so that their imports overlap the first stages, which run here; they
            # inherit TQDM_DISABLE (read when they import tqdm): no interleaved progress bars.
            previous = os.environ.get("TQDM_DISABLE")
            os.environ["TQDM_DISABLE"] = "1"
            try:
                for _ in range(self.workers):
                    self.pool.submit(time.sleep, 0)
            finally:
                if previous is None:
                    del os.environ["TQDM_DISABLE"]
                else:
                    os.environ["TQDM_DISABLE"] = previous
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def here(self, experiment: Experiment, method: str, *args) -> None:
        self._record(experiment, method, args, _stage(experiment, method, args))

    def side_by_side(self, experiment: Experiment, stages: list[tuple[str, tuple]]) -> None:
        """Independent stages, taken up by free workers in the order given."""
        if self.pool is None:
            for method, args in stages:
                self.here(experiment, method, *args)
            return
        futures = [self.pool.submit(_stage, experiment, method, args) for method, args in stages]
        for (method, args), future in zip(stages, futures):
            self._record(experiment, method, args, future.result())

    def _record(self, experiment: Experiment, method: str, args: tuple, outcome: tuple[str | None, float]) -> None:
        message, elapsed = outcome
        key = "_".join((f"seed{experiment.seed}", method, *map(str, args)))
        self.seconds[key] = elapsed
        if message:  # it ran (a stage found done says nothing): its time is kept with its results
            logging.info("%s (%.0f s)", message, elapsed)
            record = experiment.out / "stage_seconds.json"
            earlier = json.loads(record.read_text()) if record.is_file() else {}
            write_text(record, json.dumps({**earlier, key: elapsed}, indent=1))


def quiet() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "train", "portrait", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
