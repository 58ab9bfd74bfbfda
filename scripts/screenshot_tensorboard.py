"""A PNG of a run's TensorBoard custom-scalars dashboard, taken in headless Chromium.

    python scripts/screenshot_tensorboard.py <run dir> [--out PNG] [--log-scale CHART ...]

The run must have been made with ``logger=tensorboard``: GradientFlow writes the layout into
``<run dir>/tensorboard``. TensorBoard is started on a free local port, the page is opened in
Debian's Chromium through Playwright (no browser download), and the shot is taken once every
chart has plotted its lines. tests/test_tensorboard_dashboard.py drives the same helpers.
docs/img/tensorboard_custom_scalars.png was made so::

    python train.py logger=tensorboard model.depth=30 trainer.max_epochs=5 \
        hydra.run.dir=/tmp/tb_depth30
    python scripts/screenshot_tensorboard.py /tmp/tb_depth30
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# a fresh profile (Playwright makes one) that phones nowhere: tests must not download anything
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CARD = "tf-custom-scalar-multi-line-chart-card"
LINE = "svg path.line"  # Plottable's path of one series
DRAWN = "svg path.line[d*='L']"  # one with a segment in view
# statistics that span orders of magnitude across layers: in log scale the layers lie apart
LOG_CHARTS = ["grad/norm", "grad/ratio", "grad/mean_abs", "backprop/norm"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_tensorboard(logdir: Path, timeout: float = 30) -> Iterator[str]:
    """``tensorboard --logdir`` on a free local port; yields its URL once it serves the
    custom-scalars layout, and stops it on the way out."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
         "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not layout_of(url):
            if process.poll() is not None:
                raise RuntimeError(f"tensorboard exited {process.returncode}: "
                                   f"{process.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard served no custom-scalars layout in {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def layout_of(url: str) -> dict[str, Any]:
    """The layout TensorBoard serves (its custom_scalars plugin), {} until it has one."""
    try:
        with urllib.request.urlopen(f"{url}/data/plugin/custom_scalars/layout", timeout=2) as r:
            return json.load(r)
    except OSError:
        return {}


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (``playwright install`` not needed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def series_counts(url: str) -> dict[str, int]:
    """Chart title -> how many series TensorBoard's backend finds for it over every run (the
    regexes joined as its frontend joins them): what each chart should draw."""
    with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as r:
        runs = json.load(r)
    counts = {}
    for category in layout_of(url)["category"]:
        for chart in category["chart"]:
            regex = "|".join(f"({tag})" for tag in chart["multiline"]["tag"])
            counts[chart["title"]] = sum(len(_scalars(url, run, regex)) for run in runs)
    return counts


def _scalars(url: str, run: str, regex: str) -> dict[str, Any]:
    query = urllib.parse.urlencode({"run": run, "tag": regex})
    with urllib.request.urlopen(f"{url}/data/plugin/custom_scalars/scalars?{query}",
                                timeout=5) as r:
        return json.load(r)["tag_to_events"]


def open_dashboard(browser: Any, url: str, expected: dict[str, int], width: int = 1400,
                   height: int = 1000, timeout_ms: float = 20_000) -> tuple[Any, dict[str, Any]]:
    """The custom-scalars page (smoothing off: one line per series) once each chart of
    ``expected`` (title -> series) is on it, says it matched that many series, has plotted as
    many lines and drawn at least one (outliers ignored, as by default, a series far from the
    others lies outside the view); returns the page and {chart title: its card}."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(timeout_ms)
    expect.set_options(timeout=timeout_ms)
    page.goto(f"{url}/#custom_scalars&_smoothingWeight=0")
    cards = page.locator(CARD)
    expect(cards).to_have_count(len(expected))
    by_title = {card.locator("[itemprop=name]").inner_text(): card for card in cards.all()}
    for title, count in expected.items():
        card = by_title[title]
        expect(card.locator(".matches-text")).to_have_text(f"Matches ({count})")
        if count:
            card.locator(LINE).nth(count - 1).wait_for(state="attached")
            card.locator(DRAWN).first.wait_for(state="attached")
    return page, by_title


def log_scale(cards: dict[str, Any], titles: list[str]) -> None:
    """These charts' y axes to log scale (the button under each chart)."""
    for title in titles:
        cards[title].locator("paper-icon-button[title='Toggle y-axis log scale']").click()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run made with logger=tensorboard")
    parser.add_argument("--out", type=Path,
                        default=Path("docs/img/tensorboard_custom_scalars.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=980)
    parser.add_argument("--log-scale", nargs="*", metavar="CHART", default=LOG_CHARTS,
                        help="charts drawn with a log y axis (default: %(default)s)")
    args = parser.parse_args(argv)
    logdir = args.run_dir / "tensorboard"
    if not logdir.is_dir():
        parser.error(f"{logdir} does not exist: make the run with logger=tensorboard")
    with serve_tensorboard(logdir) as url, chromium() as browser:
        page, cards = open_dashboard(browser, url, series_counts(url), args.width, args.height)
        log_scale(cards, args.log_scale)
        page.wait_for_timeout(500)  # Plottable's last redraw after the data
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
