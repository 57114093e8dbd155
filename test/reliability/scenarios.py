"""Reliability scenarios shared by the tests (short runs, asserted) and ``benchmarks/reliability.py``
(long runs, printed): each builds real nodes or starts the real entry points, drives them, checks what
must hold, and returns the figures.

* :func:`fuzz_classifier`, :func:`fuzz_recorder`: hypothesis-generated malformed frames over real topics;
* :func:`soak`: camera_node -> classifier_node + recorder_node as processes for a fixed number of frames,
  sampling the processes' memory;
* :func:`overload`: frames offered faster than a slow model can classify them.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from classifier_rig import ClassifierRig, frame_msg
from fixtures_models import solid
from fuzzmsgs import expected_outcome, images, roundtrip
from graphutil import DEADLINE_S, DISCOVERY_S, FrameSource, NodeProcess, Spinner, graph_client, ros_args, wait_for
from harness import (
    RssSampler,
    assert_manifest_matches_files,
    deliver_frame,
    recorder_node,
)
from hypothesis import HealthCheck, given, settings

from dli_perception.core.contracts import Counts, Scores
from dli_perception.core.dataset import DatasetStore
from dli_perception.core.preprocess import PreprocessConfig
from dli_perception.graph_client import Result


def _fuzz_settings(examples: int, reproducible: bool):
    """Hypothesis settings for a fuzz run over the graph.

    ``reproducible`` (the tests) draws the same examples on every run, so the tests' check that the
    strategy covered both good and malformed frames cannot fail by chance: randomly drawn, 1 run in 40
    of 60 examples had fewer than half malformed. The long benchmark runs draw fresh examples.
    """
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=reproducible,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "max": round(float(max(values)), 2)}


# --------------------------------------------------------------------------- fuzzing


def fuzz_classifier(
    context, model_dir: Path, examples: int, input_size: int = 32, reproducible: bool = True
) -> dict[str, Any]:
    """Throw ``examples`` mostly malformed frames at a classifier_node, one at a time; check its bookkeeping.

    Every frame must be received and then classified (converter and preprocessing accept it) or
    counted as bad; ``errors`` (anything else) must stay 0. Good frames after the fuzzing must still be
    classified right, and /diagnostics must report the same counts. ``reproducible`` draws the same
    examples on every run (see :func:`_fuzz_settings`).
    """
    with Spinner(context) as spinner:
        rig = ClassifierRig(context, spinner, model_dir=str(model_dir), smoothing="none")
        rig.ready()
        node = rig.node
        cfg = PreprocessConfig(size=input_size)
        tally: Counter[str] = Counter()
        stamp = iter(range(1_000_000_000, 2**62))
        t0 = time.monotonic()

        @_fuzz_settings(examples, reproducible)
        @given(msg=images())
        def throw(msg):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(next(stamp), 1_000_000_000)
            tally[expected_outcome(roundtrip(msg), cfg)] += 1
            rig.send_and_wait(msg)
            assert node.errors == 0, node.last_error  # only ImageConversionError/ConfigError, counted as bad
            assert (node.bad, node.classified) == (tally["bad"], tally["good"])

        throw()
        fuzz_s = time.monotonic() - t0
        for i, colour in enumerate(("red", "green", "blue")):  # good frames after all that
            result = rig.classify_counted(solid(colour, 30, 40), 3_000_000_000_000 + i)
            assert result.label == colour, result
        total_good = tally["good"] + 3
        assert (node.received, node.dropped, node.errors) == (rig.sent, 0, 0)
        assert wait_for(lambda: rig.diag("frames_classified") == str(total_good), DEADLINE_S), rig.health()
        diag = rig.health().values
        assert diag["frames_bad"] == str(tally["bad"]) and diag["frames_received"] == str(rig.sent), diag
        assert diag["errors"] == "0" and diag["status"] == "serving", diag
        return {
            "sent": rig.sent,
            "bad": tally["bad"],
            "good": total_good,
            "counted_bad": node.bad,
            "counted_good": node.classified,
            "errors": node.errors,
            "diag_status": diag["status"],
            "fuzz_s": round(fuzz_s, 1),
        }


def fuzz_recorder(context, root: Path, examples: int, reproducible: bool = True) -> dict[str, Any]:
    """Throw mostly malformed frames at a recorder_node and capture each; check refusals, counts and files."""
    recorder = recorder_node(context, root, dedupe=False, image_format="png")
    source = FrameSource(context)
    tally: Counter[str] = Counter()
    stamp = iter(range(1_000_000_000, 2**62))
    with Spinner(context, recorder, source) as spinner:
        teacher = spinner.own(graph_client(context))
        assert teacher.set_label("fuzz", DISCOVERY_S).ok, teacher.last_error
        assert teacher.wait_for_services(DISCOVERY_S, ["capture"]) == []
        t0 = time.monotonic()

        @_fuzz_settings(examples, reproducible)
        @given(msg=images(good_fraction=3))
        def throw(msg):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(next(stamp), 1_000_000_000)
            expected = expected_outcome(roundtrip(msg))
            tally[expected] += 1
            deliver_frame(recorder, source, msg)
            r = teacher.capture()
            if expected == "good":
                assert r.ok, r.message
            else:
                assert r.result is Result.REFUSED and "cannot be converted" in r.message, r.message
            assert recorder.refused["bad_frame"] == tally["bad"] and recorder.saved == tally["good"]

        throw()
        fuzz_s = time.monotonic() - t0
        pixels = solid((10, 200, 30), 24, 32)  # a good frame after all that is saved
        deliver_frame(recorder, source, frame_msg(pixels, 3_000_000_000_000))
        r = teacher.capture()
        assert r.ok, r.message
        saved = tally["good"] + 1
        assert recorder.refused == Counter({"bad_frame": tally["bad"]}), recorder.refused
        assert teacher.wait_for_health(
            "recorder_node",
            lambda h: h.values.get("saved") == str(saved) and h.values.get("refused_bad_frame") == str(tally["bad"]),
            DEADLINE_S,
        ), teacher.last_error
        assert teacher.wait_for_counts(lambda c: c == Counts({"fuzz": saved}), DEADLINE_S), teacher.last_error
        frames_received = recorder._frames_received
    assert assert_manifest_matches_files(root) == Counter({"fuzz": saved})
    with DatasetStore(root) as store:
        assert store.repair_report.clean, store.repair_report.summary()
    return {
        "sent": sum(tally.values()) + 1,
        "frames_received": frames_received,
        "bad": tally["bad"],
        "refused_bad_frame": recorder.refused["bad_frame"],
        "saved": saved,
        "fuzz_s": round(fuzz_s, 1),
    }


# --------------------------------------------------------------------------- soak


def soak(
    context,
    workdir: Path,
    model_dir: Path,
    frames: int,
    fps: float = 30.0,
    size: tuple[int, int] = (320, 240),
    record_hz: float = 10.0,
    labels: tuple[str, ...] = ("free", "blocked", "left"),
    warmup: int = 200,
    window: int = 200,
    ns: str = "/soak",
) -> dict[str, Any]:
    """camera_node (synthetic, ``fps``) -> classifier_node and recorder_node, all three as processes.

    Runs until the classifier has published ``frames`` results while the recorder saves frames at
    ``record_hz`` under a label that changes every ~``record_hz * 10`` images. Returns the
    classifier's and recorder's RSS after ``warmup`` results and at the end (kB), latency p50 over
    the first and last ``window`` results after the warm-up (in-node ``latency_ms`` and camera stamp
    -> result received here, ms), the classifier's frame accounting and the recorder's dataset
    check (manifest == files). Every process must exit 0 on SIGINT without a traceback.
    """
    width, height = size
    remap = ["-r", f"__ns:={ns}"]
    camera = NodeProcess("camera_node", [*remap, *ros_args(width=width, height=height, fps=fps)])
    classifier = NodeProcess(
        "classifier_node",
        [*remap, *ros_args(model_dir=model_dir, backend="onnxruntime", threads=1, smoothing="none")],
    )
    root = workdir / "dataset"
    recorder = NodeProcess(
        "recorder_node",
        [*remap, *ros_args(dataset_dir=root, capture_rate_hz=record_hz, max_frame_age_s=2.0)],
    )
    procs = [camera, classifier, recorder]
    scores = _TimedScores()
    try:
        with graph_client(context, ns, on_update=scores.on_update) as teacher:
            assert wait_for(lambda: scores.count() > 0, DISCOVERY_S * 2), classifier.output()[-3000:]
            reply = teacher.set_recording(True, timeout_s=DISCOVERY_S)
            assert reply.ok, (reply, recorder.output()[-3000:])
            start = scores.count()
            stop_labels = threading.Event()

            def teach() -> None:  # what is shown changes now and then
                i = 0
                while not stop_labels.wait(0.2):
                    teacher.set_label(labels[(i // 50) % len(labels)], timeout_s=0.2)  # sent; confirmed or not
                    i += 1

            labeller = threading.Thread(target=teach, daemon=True)
            labeller.start()
            t0 = time.monotonic()
            with (
                RssSampler(classifier.pid, lambda: scores.count() - start) as c_rss,
                RssSampler(recorder.pid, lambda: scores.count() - start) as r_rss,
            ):
                ok = wait_for(
                    lambda: scores.count() - start >= frames or any(p.proc.poll() is not None for p in procs),
                    frames / fps * 3 + 60,
                    interval=0.2,
                )
            elapsed = time.monotonic() - t0
            stop_labels.set()
            labeller.join(timeout=5)
            ended = {p.cmd[0].rsplit("/", 1)[-1]: p.proc.returncode for p in procs if p.proc.poll() is not None}
            assert not ended, (
                f"a node process ended during the soak: {ended}",
                [p.output()[-1500:] for p in procs],
            )
            assert ok, (scores.count() - start, classifier.output()[-2000:])
            reply = teacher.set_recording(False, timeout_s=DEADLINE_S)
            assert reply.result in (Result.SUCCEEDED, Result.REFUSED), reply  # answered
            results = scores.results()
            codes = {"camera_node": _stop(camera)}  # the stream ends; the last frames are worked off
            n_diags = len(teacher.health_history("classifier_node"))
            assert wait_for(lambda: len(teacher.health_history("classifier_node")) > n_diags + 1, DEADLINE_S)
            diag = _values(teacher.node_health("classifier_node"))
            rec_diag = _values(teacher.node_health("recorder_node"))
            codes.update(classifier_node=_stop(classifier), recorder_node=_stop(recorder))
            # the recorder publishes its final counts on the way out (latched)
            assert wait_for(lambda: teacher.counts() is not None, DEADLINE_S)
            final_counts: Counts = teacher.counts()
    finally:
        for p in procs:
            p.kill()
    assert all(code == 0 for code in codes.values()), {
        n: (c, p.output()[-2000:]) for (n, c), p in zip(codes.items(), procs, strict=True)
    }
    for p in procs:
        assert "Traceback" not in p.stderr(), p.stderr()[-3000:]
    dataset_counts = assert_manifest_matches_files(root)
    with DatasetStore(root) as store:
        clean = store.repair_report.clean
    steady = results[start + warmup :]
    first, last = steady[:window], steady[-window:]
    in_node = lambda rs: [r.latency_ms for r, _ in rs]  # noqa: E731
    e2e = lambda rs: [(t - r.stamp_ns) / 1e6 for r, t in rs]  # noqa: E731
    return {
        "frames": frames,
        "fps_offered": fps,
        "size": f"{width}x{height}",
        "elapsed_s": round(elapsed, 1),
        "classified_per_s": round(frames / elapsed, 1),
        "classifier_rss_mb": _mb(c_rss.rss_at(warmup)),
        "classifier_rss_end_mb": _mb(c_rss.samples[-1][2]),
        "classifier_rss_growth_mb": _mb(c_rss.samples[-1][2] - c_rss.rss_at(warmup)),
        "classifier_rss_max_mb": _mb(max(s[2] for s in c_rss.samples)),
        "recorder_rss_mb": _mb(r_rss.rss_at(warmup)),
        "recorder_rss_end_mb": _mb(r_rss.samples[-1][2]),
        "recorder_rss_growth_mb": _mb(r_rss.samples[-1][2] - r_rss.rss_at(warmup)),
        "latency_in_node_ms_start": _percentiles(in_node(first)),
        "latency_in_node_ms_end": _percentiles(in_node(last)),
        "latency_e2e_ms_start": _percentiles(e2e(first)),
        "latency_e2e_ms_end": _percentiles(e2e(last)),
        "frames_received": int(diag.get("frames_received", -1)),
        "frames_classified": int(diag.get("frames_classified", -1)),
        "frames_dropped": int(diag.get("frames_dropped", -1)),
        "frames_bad": int(diag.get("frames_bad", -1)),
        "frames_without_model": int(diag.get("frames_without_model", -1)),
        "errors": int(diag.get("errors", -1)),
        "recorder_saved": int(rec_diag.get("saved", -1)),
        "recorder_final_count": final_counts.total,
        "recorder_dropped": int(rec_diag.get("dropped", -1)),
        "dataset_images": sum(dataset_counts.values()),
        "dataset_classes": dict(sorted(dataset_counts.items())),
        "dataset_clean_on_reopen": clean,
        "exit_codes": codes,
    }


class _TimedScores:
    """Every classifier result with the wall-clock time it arrived here (``time.time_ns()``).

    Its :meth:`on_update` is the graph client's ``on_update`` hook, called as each result arrives.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: list[tuple[Scores, int]] = []

    def on_update(self, kind: str, value: Any) -> None:
        if kind == "scores":
            now = time.time_ns()
            with self._lock:
                self._results.append((value, now))

    def count(self) -> int:
        with self._lock:
            return len(self._results)

    def results(self) -> list[tuple[Scores, int]]:
        with self._lock:
            return list(self._results)


def _values(health) -> dict[str, str]:
    return dict(health.values) if health is not None else {}


def _stop(proc: NodeProcess) -> int:
    import signal

    proc.send(signal.SIGINT)
    return proc.wait(timeout=30)


def _mb(kb: int) -> float:
    return round(kb / 1024.0, 1)


# --------------------------------------------------------------------------- overload


def overload(
    context,
    model_dir: Path,
    offered_hz: float,
    seconds: float,
    size: tuple[int, int] = (640, 480),
    threads: int = 1,
    ns: str = "/overload",
) -> dict[str, Any]:
    """camera_node at ``offered_hz`` -> classifier_node (processes) with a model slower than the frame rate.

    Returns what the classifier's /diagnostics report (received, classified, dropped, latency
    and inference percentiles), the age of each classified frame when its result arrived here
    (camera stamp -> received, ms) and the classifier's RSS at the start and end (MB).
    """
    width, height = size
    remap = ["-r", f"__ns:={ns}"]
    camera = NodeProcess("camera_node", [*remap, *ros_args(width=width, height=height, fps=offered_hz)])
    classifier = NodeProcess(
        "classifier_node",
        [*remap, *ros_args(model_dir=model_dir, backend="onnxruntime", threads=threads, smoothing="none")],
    )
    scores = _TimedScores()
    try:
        with graph_client(context, ns, on_update=scores.on_update) as teacher:
            assert wait_for(lambda: scores.count() > 5, DISCOVERY_S * 3), classifier.output()[-3000:]
            start = scores.count()
            with RssSampler(classifier.pid, lambda: scores.count() - start) as rss:
                time.sleep(seconds)  # a measurement window, not a wait for an event
            d0 = _values(teacher.node_health("classifier_node"))
            results = scores.results()
            assert wait_for(lambda: teacher.node_health("classifier_node") is not None, DEADLINE_S)
            diag = _values(teacher.node_health("classifier_node")) or d0
        codes = [_stop(camera), _stop(classifier)]
    finally:
        camera.kill()
        classifier.kill()
    window = results[start:]
    ages = [(t - r.stamp_ns) / 1e6 for r, t in window]
    stamps = [r.stamp_ns for r, _ in window]
    received, dropped = int(diag["frames_received"]), int(diag["frames_dropped"])
    return {
        "offered_hz": offered_hz,
        "size": f"{width}x{height}",
        "classified_per_s": round(len(window) / seconds, 1),
        "inference_p50_ms": float(diag["inference_p50_ms"]),
        "latency_p50_ms": float(diag["latency_p50_ms"]),
        "latency_p95_ms": float(diag["latency_p95_ms"]),
        "result_age_ms": _percentiles(ages),
        "frames_received": received,
        "frames_classified": int(diag["frames_classified"]),
        "frames_dropped": dropped,
        "dropped_fraction": round(dropped / max(received, 1), 3),
        "in_order": stamps == sorted(stamps),
        "classifier_rss_start_mb": _mb(rss.samples[0][2]),
        "classifier_rss_end_mb": _mb(rss.samples[-1][2]),
        "exit_codes": codes,
        "median_gap_between_results_ms": round(statistics.median(np.diff([t for _, t in window]) / 1e6), 1)
        if len(window) > 2
        else float("nan"),
    }


# --------------------------------------------------------------------------- trainer crash


def trainer_crash_and_resume(
    context,
    workdir: Path,
    dataset: Path,
    params: dict[str, Any],
    kill_epoch: int = 2,
    twin: bool = False,
    ns: str = "/crash",
) -> dict[str, Any]:
    """SIGKILL a training trainer_node in the middle of epoch ``kill_epoch``, then resume from ``last.pt``.

    Checks what the crash left (no model directory, no half-export, loadable best/last checkpoints
    of the completed epochs), resumes with the core's ``train(resume=...)`` and the node's exact
    configuration (same torch thread count), and checks the resumed run keeps the completed epochs.
    With ``twin`` it also trains the uninterrupted run and compares weights and history. torch is
    imported into this process.
    """
    import signal

    import torch

    from dli_perception.core import training as T
    from dli_perception.nodes.trainer_node import PARAMS, config_from_values

    model_dir, ckpt_dir = workdir / "model", workdir / "ckpt"
    values = {
        **params,
        "dataset_dir": str(dataset),
        "model_dir": str(model_dir),
        "checkpoint_dir": str(ckpt_dir),
    }
    epochs = int(values["epochs"])
    proc = NodeProcess("trainer_node", ["-r", f"__ns:={ns}", *ros_args(**values)])
    try:
        with graph_client(context, ns) as op:
            reply = op.start_training(timeout_s=DISCOVERY_S * 2)
            assert reply.ok, (reply, proc.output())

            def mid_epoch() -> bool:
                return any(e.phase == "train" and e.epoch == kill_epoch for e in op.history("progress"))

            assert wait_for(mid_epoch, 180.0, interval=0.01), (op.history("progress")[-3:], proc.output()[-3000:])
            t_kill = time.monotonic()
            proc.send(signal.SIGKILL)  # no handler runs: a power cut, an OOM kill
            assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
    # What the crash left: no model (nothing half-exported), intact checkpoints of the completed epochs.
    assert not model_dir.exists() and not list(model_dir.parent.glob(f".{model_dir.name}.*"))
    left = sorted(p.name for p in ckpt_dir.iterdir())
    assert {n for n in left if not n.endswith(".tmp")} == {T.BEST_CHECKPOINT, T.LAST_CHECKPOINT}, left
    last = T.load_training_checkpoint(ckpt_dir / T.LAST_CHECKPOINT)
    T.load_training_checkpoint(ckpt_dir / T.BEST_CHECKPOINT)
    done = int(last["epoch"])
    assert kill_epoch - 1 <= done < epochs, done
    assert [h["epoch"] for h in last["history"]] == list(range(1, done + 1))

    config = config_from_values({**{p.name: p.default for p in PARAMS}, **values})
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(values.get("torch_threads", 0))) or threads)
    try:
        t0 = time.monotonic()
        resumed = T.train(dataset, config, checkpoint_dir=ckpt_dir, resume=ckpt_dir / T.LAST_CHECKPOINT)
        resume_s = time.monotonic() - t0
        full = T.train(dataset, config) if twin else None
    finally:
        torch.set_num_threads(threads)
    assert resumed.status == "completed", resumed.status
    assert [h.epoch for h in resumed.history] == list(range(1, epochs + 1))
    for a, b in zip(resumed.history[:done], last["history"], strict=True):
        assert (a.train_loss, a.val_acc) == (b["train_loss"], b["val_acc"])  # kept, not redone
    assert T.load_training_checkpoint(ckpt_dir / T.LAST_CHECKPOINT)["epoch"] == epochs
    figures: dict[str, Any] = {
        "epochs": epochs,
        "killed_in_epoch": kill_epoch,
        "completed_before_kill": done,
        "files_left": left,
        "resume_s": round(resume_s, 1),
        "kill_to_resumed_s": round(time.monotonic() - t_kill, 1),
    }
    if full is not None:
        state, full_state = resumed.model.state_dict(), full.model.state_dict()
        figures["weights_identical_to_uninterrupted_run"] = all(torch.equal(state[k], full_state[k]) for k in state)
        figures["history_identical_to_uninterrupted_run"] = all(
            (a.train_loss, a.val_loss, a.val_acc, a.lr) == (b.train_loss, b.val_loss, b.val_acc, b.lr)
            for a, b in zip(resumed.history, full.history, strict=True)
        )
    return figures
