"""The teach station's regression and multi-label modes in a real browser against real nodes.

Headless Chromium (Debian's) driven by Playwright opens ``dli-perception teach`` with the recorder
set to ``task:=regression``: clicks at known points of the picture (scaled and letterboxed in a short
window) must land in the dataset as the XY targets those points are, within one displayed pixel;
a click on the bars beside the picture saves nothing; the thumbnails show the target dots; and a
regression result published as the classifier does is drawn on the view. With ``task:=multilabel``
the label toggles must save the frame with exactly the active set.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser import Station, artifact_dir, launch_browser

pytest.importorskip("playwright", reason="playwright is in requirements/dev.txt")
from playwright.sync_api import expect, sync_playwright  # noqa: E402
from storeutil import manifest  # noqa: E402

VIEWPORT = {"width": 1280, "height": 600}  # short: the live view is letterboxed (max-height 70vh)


def _station_args(tmp_path, task: str) -> list[str]:
    return [
        f"dataset_dir:={tmp_path / 'data'}",
        f"model_dir:={tmp_path / 'model'}",
        "weights:=none",
        "backend:=onnxruntime",
        "fps:=10.0",
        "-p", f"recorder_node.task:={task}",
        "-p", "recorder_node.dedupe:=false",  # the synthetic scene may repeat a frame exactly
        "-p", "trainer_node.torch_threads:=1",
        "-p", "classifier_node.threads:=1",
    ]  # fmt: skip


def _wait_entries(root: Path, n: int, timeout_s: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = manifest(root)
        if len(lines) >= n:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"the manifest has {len(manifest(root))} entries, wanted {n}")


def _picture_rect(page) -> dict:
    """Where the picture lies on the page: the canvas box, shrunk to the image's aspect (object-fit: contain)."""
    box = page.locator("#view").bounding_box()
    w, h = page.evaluate("() => [document.getElementById('view').width, document.getElementById('view').height]")
    scale = min(box["width"] / w, box["height"] / h)
    shown_w, shown_h = w * scale, h * scale
    return {
        "x": box["x"] + (box["width"] - shown_w) / 2,
        "y": box["y"] + (box["height"] - shown_h) / 2,
        "width": shown_w,
        "height": shown_h,
        "box": box,
    }


def _open(browser, station, task: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(station.url)
    expect(page.locator("#connection")).to_have_text("connected", timeout=20_000)
    expect(page.locator("#view-source")).to_have_text("camera", timeout=60_000)
    expect(page.locator("#task")).to_have_text(f"task: {task}", timeout=30_000)
    return page


def test_regression_click_captures_the_point_clicked(tmp_path, ros_context):
    station = Station(*_station_args(tmp_path, "regression"))
    root = tmp_path / "data"
    shots = artifact_dir(tmp_path / "artifacts")
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = _open(browser, station, "regression")
            expect(page.locator("#classes-title")).to_have_text("XY targets")
            pic = _picture_rect(page)
            assert pic["width"] < pic["box"]["width"] - 20, f"the view is not letterboxed: {pic}"
            pixel = 2.0 / pic["width"]  # one displayed pixel, in normalised units
            saved = []
            for fx, fy in ((0.75, 0.25), (0.1, 0.9), (0.5, 0.5)):
                pic = _picture_rect(page)  # measured again: the message line above the view moves it
                page.mouse.click(pic["x"] + fx * pic["width"], pic["y"] + fy * pic["height"])
                expect(page.locator("#message")).to_contain_text("saved", timeout=15_000)
                lines = _wait_entries(root, len(saved) + 1)
                x, y = lines[-1]["xy"]
                assert abs(x - (2 * fx - 1)) <= pixel and abs(y - (2 * fy - 1)) <= pixel, (fx, fy, x, y, pixel)
                assert lines[-1]["class"] == "xy" and (root / lines[-1]["file"]).is_file()
                saved.append((x, y))
                page.evaluate("() => { document.getElementById('message').textContent = ''; }")
            # a click on the black bar beside the picture saves nothing
            pic = _picture_rect(page)
            page.mouse.click(pic["box"]["x"] + 3, pic["y"] + pic["height"] / 2)
            expect(page.locator("#message")).to_contain_text("click inside the picture")
            time.sleep(0.5)
            assert len(manifest(root)) == 3
            expect(page.locator("#task-thumbs .tdot")).to_have_count(3, timeout=10_000)
            expect(page.locator("#images-count")).to_contain_text("3 images", timeout=10_000)
            # undo drops the last capture and its thumbnail
            page.click("#undo")
            expect(page.locator("#message")).to_contain_text("removed")
            expect(page.locator("#task-thumbs .tdot")).to_have_count(2, timeout=10_000)
            assert [tuple(e["xy"]) for e in manifest(root)] == saved[:2]

            # a regression model's result, published as the classifier publishes it, is drawn on the view
            _show_prediction(ros_context, page, (0.5, -0.5))
            shot = shots / "teach_station_regression.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            browser.close()
    finally:
        rc = station.stop()
    station.assert_clean_exit(rc)


def _show_prediction(ros_context, page, xy: tuple[float, float]) -> None:
    from graphutil import Spinner
    from rclpy.node import Node
    from std_msgs.msg import String

    from dli_perception.core.contracts import XYResult
    from dli_perception.nodes.qos import EVENTS

    node = Node("fake_regression_model", context=ros_context)
    pub = node.create_publisher(String, "classifier_node/xy_result", EVENTS)
    result = XYResult(stamp_ns=time.time_ns(), frame_id="camera", x=xy[0], y=xy[1], model="/tmp/xy_model")
    probe = """([x, y]) => {  // the colour drawn at the predicted point of the canvas
      const c = document.getElementById('view');
      const d = c.getContext('2d').getImageData(Math.round((x + 1) / 2 * c.width), Math.round((y + 1) / 2 * c.height), 1, 1).data;
      return [d[0], d[1], d[2]];
    }"""
    with Spinner(ros_context, node):
        deadline = time.monotonic() + 20.0
        seen = False
        while time.monotonic() < deadline and not seen:
            pub.publish(String(data=result.encode()))
            time.sleep(0.2)
            r, g, b = page.evaluate(probe, list(xy))
            seen = page.locator("#live-label").inner_text() == "x 0.50, y -0.50" and r > 200 and b > 200 and g < 80
        assert seen, (page.locator("#live-label").inner_text(), page.evaluate(probe, list(xy)))
    node.destroy_node()


def test_multilabel_toggles_capture_the_active_set(tmp_path):
    station = Station(*_station_args(tmp_path, "multilabel"))
    root = tmp_path / "data"
    try:
        with sync_playwright() as pw:
            browser = launch_browser(pw)
            page = _open(browser, station, "multilabel")
            expect(page.locator("#classes-title")).to_have_text("Labels")
            page.fill("#class-name", "../x")
            page.click("#add-class button[type=submit]")
            expect(page.locator("#message")).to_contain_text("path separator")
            for name in ("cup", "ball"):
                page.fill("#class-name", name)
                page.click("#add-class button[type=submit]")
                expect(page.locator(f'.label-toggle[data-label="{name}"]')).to_be_visible()
            wanted = [["ball", "cup"], ["cup"], []]
            for step, labels in enumerate(wanted):
                for name in ("cup", "ball"):
                    toggle = page.locator(f'.label-toggle[data-label="{name}"]')
                    if (toggle.get_attribute("aria-pressed") == "true") != (name in labels):
                        toggle.click()
                    expect(toggle).to_have_attribute("aria-pressed", str(name in labels).lower())
                expect(page.locator("#active-labels")).to_have_text(
                    "with: " + (", ".join(labels) or "none of the labels")
                )
                page.click("#capture-labels")
                expect(page.locator("#message")).to_contain_text("saved", timeout=15_000)
                _wait_entries(root, step + 1)
                page.evaluate("() => { document.getElementById('message').textContent = ''; }")
            assert [e["labels"] for e in manifest(root)] == wanted
            expect(page.locator('.label-toggle[data-label="cup"]')).to_have_text("cup (2)", timeout=10_000)
            expect(page.locator('.label-toggle[data-label="ball"]')).to_have_text("ball (1)")
            expect(page.locator("#task-thumbs .tlabels")).to_have_count(3, timeout=10_000)
            expect(page.locator("#images-count")).to_contain_text("3 images", timeout=10_000)
            browser.close()
    finally:
        rc = station.stop()
    station.assert_clean_exit(rc)
