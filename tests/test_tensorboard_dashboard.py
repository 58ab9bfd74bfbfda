"""The TensorBoard dashboard: a run with ``logger=tensorboard`` carries a custom-scalars layout
that draws each per-layer statistic's layers in one chart, and TensorBoard draws those charts in
a real browser (Debian's headless Chromium through Playwright, no browser download).

Without Chromium or Playwright the browser test is skipped, unless GRADPROBE_REQUIRE_BROWSER is
set (.ci/run sets it; conftest sets CI for every test, so CI itself cannot tell)."""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata

from conftest import FAST, REPO, run_job
from gradprobe.instruments.recorder import LAYER_STATS, metric_key

sys.path.insert(0, str(REPO / "scripts"))
from screenshot_tensorboard import (  # noqa: E402
    CHROMIUM,
    DRAWN,
    chromium,
    open_dashboard,
    serve_tensorboard,
)

REQUIRED = "GRADPROBE_REQUIRE_BROWSER"


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> Path:
    """A tiny run (depth 4, one epoch, a sample every 5 steps) logged to TensorBoard."""
    run_dir = tmp_path_factory.mktemp("tensorboard") / "run"
    run_job(run_dir, [*FAST, "logger=tensorboard", "data=digits", "model.depth=4",
                      "gradflow.every_n_steps=5"])
    return run_dir


def logged(run_dir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    """What the event files hold: {chart title: regexes}, {category: its chart titles}, and
    the scalar tags."""
    events = EventAccumulator(str(run_dir / "tensorboard"),
                              size_guidance={"scalars": 0, "tensors": 0}).Reload()
    config = events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(config)
    charts = {chart.title: list(chart.multiline.tag)
              for category in layout.category for chart in category.chart}
    assert len(charts) == sum(len(category.chart) for category in layout.category)  # unique
    categories = {category.title: [chart.title for chart in category.chart]
                  for category in layout.category}
    return charts, categories, set(events.Tags()["scalars"])


def matched(regexes: list[str], tags: set[str]) -> set[str]:
    """The tags a chart draws (TensorBoard's backend uses re.match, as here)."""
    return {tag for tag in tags if any(re.match(regex, tag) for regex in regexes)}


def test_the_layout_has_one_chart_per_logged_statistic(tb_run) -> None:
    charts, categories, tags = logged(tb_run)
    with open(tb_run / "gradflow" / "layers.csv") as f:
        rows = list(csv.DictReader(f))
    layers = {row["layer"] for row in rows}
    assert len(layers) == 5  # 4 hidden layers and the output
    per_layer = {tag for tag in tags if tag.count("/") == 2}
    assert {tag.rsplit("/", 1)[1] for tag in per_layer} == layers
    for tag in per_layer:  # every per-layer tag in exactly one chart
        assert [t for t, regexes in charts.items() if matched(regexes, {tag})] == \
            [tag.rsplit("/", 1)[0]], tag
    stats = {tag.rsplit("/", 1)[0] for tag in per_layer}
    for title, regexes in charts.items():
        if title in stats:  # exactly that statistic's tags, whatever else was logged
            assert matched(regexes, tags) == {t for t in per_layer if t.startswith(title + "/")}
    # the step-level charts
    assert matched(charts["grad/global_norm"], tags) == {"grad/global_norm",
                                                         "grad/global_norm_preclip"}
    assert matched(charts["grad/first_last_ratio"], tags) == {"grad/first_last_ratio"}
    # a chart that drew nothing is a statistic the recorder never measured in this net
    column = {metric_key(stat): stat for stat in LAYER_STATS}
    empty = set(charts) - stats - {"grad/global_norm", "grad/first_last_ratio"}
    assert empty == {"act/saturated_frac"}  # relu saturates nowhere
    assert all(not row[column[title]] for title in empty for row in rows)
    assert list(categories) == ["gradient flow", "activations"]
    assert categories["activations"][:3] == ["act/dead_frac", "act/saturated_frac",
                                             "act/pre_cosine"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium (one per module; each test opens its own page)."""
    try:
        import playwright  # noqa: F401
        missing = None if CHROMIUM.exists() else f"{CHROMIUM} is absent (apt-get install chromium)"
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get(REQUIRED):
            pytest.fail(f"{missing}, and {REQUIRED} says this machine must run the browser test")
        pytest.skip(missing)
    with chromium() as browser:
        yield browser


def test_tensorboard_draws_each_statistic_in_one_chart(browser, tb_run) -> None:
    """Every chart of the layout is on the custom-scalars page under its title, lists the tags
    the event files hold for it and draws one line for each."""
    from playwright.sync_api import expect

    charts, _, tags = logged(tb_run)
    expected = {title: matched(regexes, tags) for title, regexes in charts.items()}
    with serve_tensorboard(tb_run / "tensorboard") as url:
        page, cards = open_dashboard(browser, url, {t: len(m) for t, m in expected.items()})
        assert set(cards) == set(charts)
        page.get_by_text("Ignore outliers in chart scaling").click()  # every line in view
        for title, tags_drawn in expected.items():
            card = cards[title]
            expect(card.locator(DRAWN)).to_have_count(len(tags_drawn))
            legend = card.locator(".match-list-entry").all_text_contents()
            assert {entry.split()[-2] for entry in legend} == tags_drawn, title
        page.close()
