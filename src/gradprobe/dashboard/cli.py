"""The command line: read what the runs logged, build the workspace, then save it to W&B (or,
with ``--spec``, write its spec offline). Refusals are one line and exit 2, having written
nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradprobe.errors import ConfigError

USAGE = (
    "gradprobe-dashboard ENTITY/PROJECT [--runs PATH ...] [--group-by KEY ...] [--name NAME]"
    " [--spec FILE] [--preview PNG]")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gradprobe.dashboard", usage=USAGE,
        description="Write a saved W&B workspace for gradient flow: a diagnosis runs table, one "
                    "line plot per per-layer statistic holding every layer, activation shares, "
                    "depth profiles, training curves and the sweep view.")
    parser.add_argument("project", help="ENTITY/PROJECT the workspace is saved to")
    parser.add_argument("--runs", nargs="+", type=Path, metavar="PATH",
                        help="read the logged keys from the offline W&B runs under these run, "
                             "sweep or outputs directories (default: the project's newest runs "
                             "on the W&B server)")
    parser.add_argument("--group-by", nargs="+", metavar="KEY", default=None,
                        help="config keys to group the runs by, e.g. activation norm (default: "
                             "the Hydra choices the runs differ in, at most two)")
    parser.add_argument("--name", default="gradprobe: gradient flow", help="workspace name")
    parser.add_argument("--spec", type=Path, metavar="FILE",
                        help="write the workspace's spec (JSON) here instead of saving it")
    parser.add_argument("--preview", type=Path, metavar="PNG",
                        help="also draw the workspace's layout (sections and panels) here")
    return parser.parse_args(argv)


def entity_and_project(text: str) -> tuple[str, str]:
    entity, _, project = text.partition("/")
    if not entity or not project or "/" in project:
        raise ConfigError(f"dashboard: {text!r} is not ENTITY/PROJECT (e.g. my-team/gradprobe)")
    return entity, project


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        entity, project = entity_and_project(args.project)
        if args.spec is None:
            from gradprobe.wandb_check import has_api_key

            if not has_api_key():
                raise ConfigError("dashboard: saving a workspace needs a W&B login (wandb login, "
                                  "or WANDB_API_KEY); --spec FILE writes it offline instead")
        from gradprobe.dashboard import logged

        runs = (logged.read_paths(args.runs) if args.runs
                else logged.read_project(args.project))
        from gradprobe.dashboard import workspace

        group_by = check_group_by(args.group_by, runs) if args.group_by is not None \
            else workspace.default_group_by(runs)
    except ConfigError as e:
        print(e)
        return 2
    view = workspace.build(entity, project, runs, group_by, args.name)
    print(workspace.describe(view, runs, group_by))
    if args.preview is not None:
        from gradprobe.dashboard.preview import draw

        print(f"wrote {draw(view, args.preview)} (the layout, drawn from the spec)")
    if args.spec is not None:
        from gradprobe.instruments.files import write_atomic

        write_atomic(args.spec, json.dumps(view._spec, indent=1))
        print(f"wrote {args.spec} (not saved: --spec)")
        return 0
    try:
        view.save()
    except Exception as e:  # the server's answer (permissions, network): one line, exit 1
        from gradprobe.dashboard.logged import first_line

        print(f"dashboard: W&B did not save the workspace to {args.project}: {first_line(e)}")
        return 1
    print(f"saved: {view.url}")
    return 0


def check_group_by(keys: list[str], runs: list) -> list[str]:
    """The keys, if every one is a config key of the runs; a one-line refusal otherwise."""
    from gradprobe.dashboard.workspace import choice_keys

    known = {k for r in runs for k in r.config}
    for key in keys:
        if key not in known:
            raise ConfigError(f"dashboard: --group-by {key} is not a config key of these runs; "
                              f"allowed: a Hydra choice ({', '.join(choice_keys(runs))}) or a "
                              "dotted config key (e.g. model.depth)")
    return keys
