"""The teach station in a real browser against real nodes (synthetic camera), as a newcomer uses it.

Headless Chromium (Debian's) driven by Playwright opens the page served by ``dli-perception teach``,
adds two classes, captures images of each while the camera shows them (the scene is told from the
page's own pixels), records by holding a button, undoes, trains (head mode, small images, random
weights: there are no ImageNet weights offline), watches the progress reach done in two tabs (one
closed during training, one opened late), switches the classifier to the model, and checks that the
live label follows the scene; then enables the reaction and presses STOP. A screenshot is saved.
"""

from __future__ import annotations

import time

import pytest
from browser import Station, artifact_dir, launch_browser, scene

pytest.importorskip("playwright", reason="playwright is in requirements/dev.txt")
from playwright.sync_api import expect, sync_playwright  # noqa: E402

SCENE_PERIOD_S = 6.0
PER_CLASS = 8
CLASSES = ("free", "blocked")


def _station_args(tmp_path) -> list[str]:
    return [
        f"dataset_dir:={tmp_path / 'data'}",
        f"model_dir:={tmp_path / 'model'}",
        "mode:=head",
        "epochs:=60",
        "weights:=none",
        "backend:=onnxruntime",
        "fps:=10.0",
        "-p", f"camera_node.synthetic.scene_period_s:={SCENE_PERIOD_S}",
        "-p", "trainer_node.image_size:=96",
        "-p", "trainer_node.lr:=0.01",
        "-p", "trainer_node.early_stop_patience:=0",
        "-p", "trainer_node.torch_threads:=1",
        "-p", "classifier_node.threads:=1",
        "-p", "recorder_node.capture_rate_hz:=3.0",
    ]  # fmt: skip


class SceneClock:
    """Follows the scene seen in the page, so captures happen well inside one scene.

    A scene's age is known only once its start was seen (a change of scene since the clock began).
    """

    def __init__(self, page) -> None:
        self.page = page
        self.current = None
        self.since = time.monotonic()
        self.changes = 0

    def poll(self) -> tuple[str | None, float]:
        now_scene = scene(self.page)
        if now_scene != self.current:
            self.changes += self.current is not None
            self.current, self.since = now_scene, time.monotonic()
        return self.current, time.monotonic() - self.since

    def wait_for_fresh(self, wanted: str, min_left_s: float, timeout_s: float = 60.0) -> None:
        """Wait until ``wanted`` is shown, for 0.3 s at least, with at least ``min_left_s`` of its scene left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current, age = self.poll()
            if current == wanted and self.changes and 0.3 <= age and SCENE_PERIOD_S - age >= min_left_s:
                return
            time.sleep(0.05)
        raise AssertionError(f"the page never showed a fresh {wanted!r} scene")


def _message(page) -> str:
    return page.locator("#message").inner_text()


def _count(page, name: str) -> int:
    text = page.locator(f'[data-class="{name}"] .count').inner_text()
    return int(text.split()[0])


def test_teach_two_classes_train_and_watch_in_a_browser(tmp_path):
    station = Station(*_station_args(tmp_path))
    shots = artifact_dir(tmp_path / "artifacts")
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(station.url)
            expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
            expect(page.locator("#view-source")).to_have_text("camera", timeout=30_000)
            expect(page.locator('#health [data-node="recorder_node"] .badge')).to_have_text("ok", timeout=30_000)

            # bad input: a clear message, nothing changed
            page.fill("#class-name", "../free")
            page.click("#add-class button[type=submit]")
            expect(page.locator("#message")).to_contain_text("path separator")
            page.click("#train")
            expect(page.locator("#message")).to_contain_text("at least two classes")

            for name in CLASSES:
                page.fill("#class-name", name)
                page.click("#add-class button[type=submit]")
                expect(page.locator(f'[data-class="{name}"]')).to_be_visible()

            clock = SceneClock(page)
            for name in CLASSES:
                deadline = time.monotonic() + 120.0
                while _count(page, name) < PER_CLASS:
                    assert time.monotonic() < deadline, f"{name}: {_count(page, name)} saved, then: {_message(page)}"
                    clock.wait_for_fresh(name, min_left_s=1.5)
                    before = _count(page, name)
                    page.click(f'[data-class="{name}"] .capture')
                    # Saved (the count rises), or refused as a duplicate: the camera sends 10 frames/s and on a
                    # quiet machine the page is ready for the next click before the next frame, which the
                    # recorder rightly refuses to save twice ("... nothing was saved"). Then click again.
                    page.wait_for_function(
                        """([n, c]) => parseInt(document.querySelector(`[data-class='${n}'] .count`).textContent) > c
                            || document.querySelector('#message').textContent.includes('duplicate')""",
                        arg=[name, before],
                        timeout=10_000,
                    )
                    if _count(page, name) > before:
                        expect(page.locator("#message")).to_contain_text("saved")
            expect(page.locator('[data-class="free"] .thumbs img').first).to_be_visible()

            # hold to record, inside one "blocked" scene
            before = _count(page, "blocked")
            clock.wait_for_fresh("blocked", min_left_s=4.5)
            record = page.locator('[data-class="blocked"] .record')
            record.hover()
            page.mouse.down()
            expect(record).to_have_text("Recording…", timeout=5_000)
            time.sleep(1.0)
            page.mouse.up()
            expect(record).to_have_text("Hold to record", timeout=10_000)
            page.wait_for_function(
                f"() => parseInt(document.querySelector('[data-class=\"blocked\"] .count').textContent) > {before}",
                timeout=10_000,
            )
            # undo the last one
            recorded = _count(page, "blocked")
            page.click("#undo")
            expect(page.locator("#message")).to_contain_text("removed")
            page.wait_for_function(
                f"() => parseInt(document.querySelector('[data-class=\"blocked\"] .count').textContent) == {recorded - 1}",
                timeout=10_000,
            )

            # train; a second tab sees the same run, the first is closed, a third opens late
            page.click("#train")
            expect(page.locator("#message")).to_contain_text("training started")
            second = browser.new_page(viewport={"width": 1280, "height": 1000})
            second.goto(station.url)
            expect(second.locator("#progress-text")).to_contain_text("training", timeout=60_000)
            page.close()
            third = browser.new_page(viewport={"width": 1280, "height": 1000})
            third.goto(station.url)
            for tab in (second, third):
                expect(tab.locator("#progress-text")).to_have_attribute("data-done", "completed", timeout=300_000)
            expect(third.locator("#progress-bar")).to_have_attribute("style", "width: 100%;")
            expect(third.locator("#confusion")).to_be_visible()
            assert "best validation accuracy" in third.locator("#progress-text").inner_text()

            page = third
            page.click("#use-model")
            expect(page.locator("#message")).to_contain_text("serves", timeout=90_000)
            expect(page.locator("#view-source")).to_have_text("classifier overlay", timeout=30_000)

            # the live label follows the scene (samples away from scene changes)
            clock = SceneClock(page)
            agree = total = 0
            deadline = time.monotonic() + 2.5 * SCENE_PERIOD_S
            while time.monotonic() < deadline:
                current, age = clock.poll()
                label = page.locator("#live-label").inner_text()
                if current is not None and clock.changes and 1.0 <= age <= SCENE_PERIOD_S - 0.5:
                    total += 1
                    agree += label == current
                time.sleep(0.2)
            assert total >= 10, f"only {total} samples away from scene changes ({agree} agreed)"
            assert agree / total >= 0.8, f"live label matched the scene in {agree}/{total} samples"

            # react: enable, then the big stop
            page.click("#react-enable")
            expect(page.locator("#reaction-state")).to_contain_text("enabled", timeout=10_000)
            page.click("#stop")
            expect(page.locator("#message")).to_contain_text("zero velocity sent")
            expect(page.locator("#reaction-state")).to_contain_text("disabled", timeout=10_000)

            shot = shots / "teach_station.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
            browser.close()
    finally:
        rc = station.stop()
    station.assert_clean_exit(rc)


def test_nodes_that_are_not_running_are_shown_and_explained(tmp_path):
    """``--connect`` with no nodes: health says so, buttons fail with the reason, nothing breaks."""
    station = Station("--connect", "--namespace", "nobody_here")
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = browser.new_page()
            page.goto(station.url)
            expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
            expect(page.locator('#health [data-node="recorder_node"] .badge')).to_have_text("missing")
            page.fill("#class-name", "cup")
            page.click("#add-class button[type=submit]")
            page.click('[data-class="cup"] .capture')
            expect(page.locator("#message")).to_contain_text("recorder_node", timeout=20_000)
            expect(page.locator("#message")).to_contain_text("not running")
            page.click("#stop")
            expect(page.locator("#message")).to_contain_text("reaction_node is not running", timeout=20_000)
            browser.close()
    finally:
        rc = station.stop()
    station.assert_clean_exit(rc)
