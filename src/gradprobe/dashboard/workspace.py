"""The saved W&B workspace, as code (``wandb-workspaces``): a diagnosis runs table grouped by Hydra
choices, one line plot per per-layer statistic holding every layer, the activations' shares, the
native depth-profile charts, training curves and the sweep view. Built offline from what runs
logged (``logged``, ``keys``); only ``save`` talks to a W&B server."""

from __future__ import annotations

from collections.abc import Iterable

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces import expr

from gradprobe.dashboard import keys as K
from gradprobe.dashboard.logged import LoggedRun, media_keys, scalar_keys
from gradprobe.instruments.recorder import metric_key
from gradprobe.wandb_charts import LAYERS_TABLE_KEY, PROFILE_PREFIX

STEP = "trainer/global_step"  # Lightning's step, the x of every logged series
# the runs table: verdicts, first/last ratios (dL/dh and dL/dW), accuracy, the theory's phase
TABLE_COLUMNS = ("diagnosis/init", "diagnosis/final",
                 "backprop/first_last_ratio_init", "backprop/first_last_ratio_final",
                 "grad/first_last_ratio_init", "grad/first_last_ratio_final",
                 "test/acc", "test_last/acc", "val/acc", "test/loss", "theory/phase",
                 "theory/chi1_star")
# what decides gradient flow (the brief's list): the parallel coordinates' axes when nothing varies
FACTORS = ("model", "model.depth", "activation", "norm", "init", "optimizer")
BOOKKEEPING = ("logger.", "sweep.")  # differ between sweeps, not within what a sweep studies
MAX_AXES = 8
OBJECTIVES = ("val/acc", "val/loss", "test/acc")  # the parallel coordinates' last axis
SWEEP_REPORT = "report/"  # the sweep report run's figures and runs table (publish.sweep_report)
LINEAR_STATS = ("act/",)  # shares and means: linear y; norms and ratios span decades: log y
READING = (
    "**Reading gradient flow.** The runs table holds each run's verdict at init and at the end "
    "(`diagnosis/*`) and the first/last hidden-layer ratios of dL/dh (`backprop/*`) and dL/dW "
    "(`grad/*`): far below 1 is vanishing, far above exploding. Each line plot below holds every "
    "layer of one statistic; the *depth profile* charts show it against depth at init, mid and "
    "end. See docs/diagnosis.md and docs/dashboards.md in the gradprobe repository.")


def config_path(key: str) -> str:
    """W&B's path to a config key gradprobe logs: its config is flat (``model.depth`` is one key,
    record.flat_config), which W&B stores as ``model.depth.value``; wandb-workspaces assumes a
    nested dict (``model.value.depth``) unless the path names ``.value`` itself."""
    return f"{key}.value"


class ConfigColumn(wr.ParallelCoordinatesPlotColumn):
    """A parallel-coordinates axis for a flat config key (the library nests every dotted key)."""

    def _to_model(self):
        model = super()._to_model()
        model.accessor = f"config:{config_path(self.metric.name)}"
        return model


def line(title: str, y: list[str], log_y: bool) -> wr.LinePlot:
    return wr.LinePlot(title=title, x=STEP, y=y, log_y=log_y or None, title_x="optimizer step")


def statistic_panel(stat: K.Statistic) -> wr.LinePlot:
    """Every layer of one statistic in one chart: the depth profile over time at a glance."""
    log_y = not stat.key.startswith(LINEAR_STATS)
    return line(f"{stat.key} (all {len(stat.layer_keys)} layers)", list(stat.layer_keys), log_y)


def profile_chart(table_key: str) -> wr.CustomChart:
    """A run's end-of-run ``wandb.plot.line_series`` (depth on x, init/mid/end) as a panel."""
    chart = wr.CustomChart.from_table(table_key, {"step": "step", "lineKey": "lineKey",
                                                  "lineVal": "lineVal"},
                                      {"title": table_key.removesuffix("_table"),
                                       "xname": "depth"})
    chart.chart_name = "wandb/lineseries/v0"
    return chart


def profile_charts(runs: list[LoggedRun], namespaces: tuple[str, ...],
                   first: tuple[str, ...] = ()) -> list[wr.CustomChart]:
    """The depth-profile charts of the statistics in these namespaces (``profile/grad_norm``),
    in the order of their line plots."""
    prefix = PROFILE_PREFIX + "/"
    stats = [k.removeprefix(prefix).removesuffix("_table") for k in media_keys(runs, "table")
             if k.startswith(prefix) and k.endswith("_table")]
    stats = [s for s in stats if "_" in s and metric_key(s).split("/", 1)[0] in namespaces]
    order = sorted(stats, key=lambda s: K.rank(metric_key(s), first))
    return [profile_chart(f"{prefix}{s}_table") for s in order]


def diagnosis_section(runs: list[LoggedRun], group_by: list[str]) -> ws.Section:
    scalars = scalar_keys(runs)
    accuracy = [k for k in ("test/acc", "test_last/acc", "val/acc") if k in scalars]
    panels: list = [wr.MarkdownPanel(markdown=READING), wr.RunComparer(diff_only="split")]
    if accuracy:
        panels.append(wr.BarPlot(title="accuracy", metrics=accuracy,
                                 groupby=wr.Config(config_path(group_by[0])) if group_by else None,
                                 groupby_aggfunc="mean" if group_by else None,
                                 groupby_rangefunc="stderr" if group_by else None))
    if LAYERS_TABLE_KEY in media_keys(runs, "table"):
        panels.append(wr.WeavePanelSummaryTable(table_name=LAYERS_TABLE_KEY))
    return section("Diagnosis", panels, pinned=True)


def statistics_section(name: str, runs: list[LoggedRun], namespaces: tuple[str, ...],
                       first: tuple[str, ...] = ()) -> ws.Section:
    """One panel per per-layer statistic of these namespaces, the native depth-profile charts,
    then the step-level series (global norms, first/last ratio) of the same namespaces."""
    scalars = scalar_keys(runs)
    stats = K.in_namespaces(K.per_layer_statistics(scalars), namespaces, first)
    panels: list = [statistic_panel(s) for s in stats]
    panels += profile_charts(runs, namespaces, first)
    steps = K.step_series(scalars, namespaces, exclude=TABLE_COLUMNS)
    panels += [line(stem, series, log_y=not stem.startswith(LINEAR_STATS))
               for stem, series in steps.items()]
    return section(name, panels, columns=3)


def training_section(runs: list[LoggedRun]) -> ws.Section:
    scalars = scalar_keys(runs)
    pairs = {"loss": ["train/loss", "val/loss"], "accuracy": ["train/acc", "val/acc"]}
    panels = [line(title, [k for k in y if k in scalars], log_y=False)
              for title, y in pairs.items() if any(k in scalars for k in y)]
    return section("Training", panels)


def varied(runs: list[LoggedRun], candidates: Iterable[str]) -> list[str]:
    """The keys whose value differs between the runs."""
    return [k for k in candidates if len({repr(r.config.get(k)) for r in runs}) > 1]


def swept(runs: list[LoggedRun]) -> list[str]:
    """What a sweep swept, at most ``MAX_AXES`` keys: the Hydra choices that differ, then the
    dotted keys that differ outside those groups (``optimizer=adam,sgd`` also changes
    ``optimizer.*``: that is one axis) and outside bookkeeping (``logger.*``, ``sweep.*``); seeds
    are replicates, not an axis."""
    choices = varied(runs, choice_keys(runs))
    dotted = sorted({k for r in runs for k in r.config
                     if "." in k and not k.startswith(BOOKKEEPING)})
    keys = choices + [k for k in varied(runs, dotted) if k.split(".", 1)[0] not in choices]
    return keys[:MAX_AXES]


def sweep_section(runs: list[LoggedRun], group_by: list[str]) -> ws.Section:
    """Parallel coordinates from the swept keys (or, when the runs vary nothing, the grouping or
    the factors of gradient flow) to the objectives; the sweep report's figures and table, and
    each run's figures."""
    keys = swept(runs) or group_by or [k for k in FACTORS if any(k in r.config for r in runs)]
    scalars = scalar_keys(runs)
    objectives = [k for k in OBJECTIVES if k in scalars]
    columns = [ConfigColumn(metric=wr.Config(k)) for k in keys]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k)) for k in objectives]
    panels: list = [wr.ParallelCoordinatesPlot(title="swept keys → " + ", ".join(objectives),
                                               columns=columns)]
    report = [k for k in media_keys(runs, "image") if k.startswith(SWEEP_REPORT)]
    if report:
        panels.append(wr.MediaBrowser(title="sweep report", media_keys=report, num_columns=2))
    panels += [wr.WeavePanelSummaryTable(table_name=k) for k in media_keys(runs, "table")
               if k.startswith(SWEEP_REPORT)]
    figures = [k for k in media_keys(runs, "image") if k.startswith("figures/")]
    if figures:
        panels.append(wr.MediaBrowser(title="each run's figures", media_keys=figures,
                                      num_columns=2))
    return section("Sweeps and figures", panels, columns=2)


def section(name: str, panels: list, pinned: bool = False, columns: int = 2) -> ws.Section:
    return ws.Section(name=name, panels=panels, is_open=True, pinned=pinned,
                      layout_settings=ws.SectionLayoutSettings(columns=columns, rows=2),
                      panel_settings=ws.SectionPanelSettings(x_axis=STEP))


def choice_keys(runs: list[LoggedRun]) -> list[str]:
    """The Hydra groups the runs chose options of, in the order they were tagged."""
    return list(dict.fromkeys(k for r in runs for k in r.choices))


def default_group_by(runs: list[LoggedRun]) -> list[str]:
    """The Hydra choices the runs differ in (at most two), else none."""
    return varied(runs, choice_keys(runs))[:2]


def build(entity: str, project: str, runs: list[LoggedRun], group_by: list[str],
          name: str = "gradprobe: gradient flow") -> ws.Workspace:
    """The whole workspace; ``group_by`` keys must be config keys of the runs (the CLI checks)."""
    scalars = scalar_keys(runs)
    strings = {k for r in runs for k, v in r.summary.items() if isinstance(v, str)}
    table = [f"summary:{k}" for k in TABLE_COLUMNS if k in scalars | strings]
    sections = [
        diagnosis_section(runs, group_by),
        statistics_section("Gradient flow", runs, K.GRADIENT_NAMESPACES),
        statistics_section("Activations", runs, K.ACTIVATION_NAMESPACES, K.ACTIVATION_FIRST),
        training_section(runs),
        sweep_section(runs, group_by),
    ]
    return ws.Workspace(
        entity=entity, project=project, name=name, sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP),
        runset_settings=ws.RunsetSettings(
            groupby=[expr.Config(config_path(k)) for k in group_by],
            pinned_columns=[*(f"config:{config_path(k)}" for k in group_by), *table]))


def describe(view: ws.Workspace, runs: list[LoggedRun], group_by: list[str]) -> str:
    """One line: what was built, from how many runs, grouped how."""
    panels = sum(len(s.panels) for s in view.sections)
    stats = K.per_layer_statistics(scalar_keys(runs))
    layers = max((len(s.layer_keys) for s in stats), default=0)
    grouping = f"grouped by {', '.join(group_by)}" if group_by else "ungrouped"
    return (f"workspace {view.name!r}: {len(view.sections)} sections, {panels} panels from "
            f"{len(runs)} runs ({len(stats)} per-layer statistics of up to {layers} layers), "
            f"{grouping}")
