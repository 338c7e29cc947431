"""Where the web service runs inference: a bounded thread pool with a recognizer per thread.

* :class:`Models` loads the models a client may ask for, once each, when first asked for; their
  classifiers (ONNX Runtime sessions, PyTorch modules in inference mode) are shared by all
  threads, which is safe.
* :class:`InferencePool` runs at most ``workers`` jobs at once and lets at most ``queue`` more
  wait; a job beyond that is refused at once (:class:`Busy`), so a burst of requests costs no
  memory beyond ``workers + queue`` jobs. Each worker thread calls a job with its own
  :meth:`~robustfer.inference.recognizer.Recognizer.clone` per (model, detector): face
  detectors are not shared between threads (OpenCV's cascade classifier is not documented as
  thread-safe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from robustfer.errors import ConfigError
from robustfer.runtime.weights import PRETRAINED, pretrained_path

#: Detectors a client may choose per request (each is built once per worker thread).
DETECTOR_CHOICES = ("blazeface", "blazeface:fast", "blazeface:thorough", "haar")


class Busy(Exception):
    """Every worker is busy and the queue is full."""


def model_label(recognizer: Any) -> str:
    """A name for a recognizer's model that reveals no path: the shipped model's name, or the
    checkpoint's file name."""
    source = str(getattr(recognizer, "source", "") or "")
    for name in PRETRAINED:
        try:
            if source and Path(source).resolve() == pretrained_path(name).resolve():
                return name
        except ConfigError:  # a shipped file missing from this install
            continue
    return Path(source).name or str(getattr(recognizer, "model_name", "") or "model")


def detector_label(spec: Any) -> str:
    """A detector spec as shown to clients (a YuNet model's folder is left out)."""
    if not isinstance(spec, str):
        return str(getattr(spec, "name", type(spec).__name__))
    kind, _, arg = spec.partition(":")
    return f"{kind}:{Path(arg).name}" if kind == "yunet" else spec


class Models:
    """The served model plus the shipped ones, loaded on first use.

    Args:
        served: the recognizer the server was started with (the default model).
        loader: name -> Recognizer for the other shipped models (default
            ``Recognizer.from_pretrained(name)``).
        name: the served model's name (default :func:`model_label`).
    """

    def __init__(self, served: Any, loader: Callable[[str], Any] | None = None,
                 name: str | None = None) -> None:
        self.default = name or model_label(served)
        self.names = [self.default] + [n for n in PRETRAINED if n != self.default]
        self._loaded: dict[str, Any] = {self.default: served}
        self._loader = loader or _load_pretrained
        self._lock = threading.Lock()

    def check(self, name: str | None) -> str:
        """The model name to use; an unknown one is a ConfigError listing the valid names."""
        if name is None or name == "":
            return self.default
        if name not in self.names:
            raise ConfigError(f"unknown model {name!r}; choose one of {self.names}.")
        return name

    def get(self, name: str) -> Any:
        with self._lock:  # one load per model, even when several threads ask at once
            if name not in self._loaded:
                self._loaded[name] = self._loader(name)
            return self._loaded[name]


def _load_pretrained(name: str) -> Any:
    from robustfer.inference.recognizer import Recognizer

    return Recognizer.from_pretrained(name)


class InferencePool:
    """At most ``workers`` jobs at once, at most ``queue`` waiting, the rest refused.

    Args:
        models: the models jobs may use.
        workers: threads running jobs.
        queue: jobs that may wait for a thread.
        detectors: detector label -> spec, the choices jobs may use.
        max_pixels: the recognizers' image size limit.
    """

    def __init__(self, models: Models, workers: int, queue: int, detectors: dict[str, Any],
                 max_pixels: int) -> None:
        if workers < 1 or queue < 0:
            raise ConfigError(f"workers={workers}, queue={queue}: use at least 1 worker and a queue of "
                              "0 or more.")
        self.models = models
        self.workers = workers
        self.queue = queue
        self.detectors = detectors
        self.max_pixels = max_pixels
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="robustfer-infer")
        self._pending = 0  # running + waiting
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, fn: Callable[..., Any], model: str, detector: str, *args: Any) -> Future:
        """Run ``fn(recognizer, *args)`` on a worker thread with that thread's recognizer for
        (``model``, ``detector``).

        Raises:
            Busy: ``workers + queue`` jobs are already running or waiting.
        """
        with self._lock:
            if self._pending >= self.workers + self.queue:
                raise Busy()
            self._pending += 1
        try:
            fut = self._executor.submit(self._run, fn, model, detector, args)
        except RuntimeError:  # shutting down
            self._release(None)
            raise Busy() from None
        fut.add_done_callback(self._release)  # also when a queued job is cancelled
        return fut

    def _release(self, _: Any) -> None:
        with self._lock:
            self._pending -= 1

    def _run(self, fn: Callable[..., Any], model: str, detector: str, args: tuple) -> Any:
        cache: dict[tuple[str, str], Any] = self._local.__dict__.setdefault("recognizers", {})
        key = (model, detector)
        if key not in cache:
            base = self.models.get(model)
            clone = getattr(base, "clone", None)  # a stand-in object without clone() is shared as is
            cache[key] = clone(self.detectors[detector], max_pixels=self.max_pixels) if clone else base
        return fn(cache[key], *args)

    def shutdown(self) -> None:
        """Drop the waiting jobs; running ones finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
