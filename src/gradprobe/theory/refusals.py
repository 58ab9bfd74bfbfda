"""What the theory command cannot use, as the one line (a ``ConfigError``) a user sees.

Hydra's own messages for an unknown option, key or malformed override run to many lines (the
option list, the search path); here each becomes one line naming the key, the value and what is
allowed. Torch-free: a refusal comes before anything heavy is imported.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gradprobe.errors import ConfigError


def check_inputs(q_input: float, c_input: float, phase_diagram: Path | None) -> None:
    """The command's own numbers and the figure's folder (argparse checked they are numbers)."""
    if not (math.isfinite(q_input) and q_input > 0):
        raise ConfigError(f"config error: --q-input={q_input:g} is not allowed; expected a "
                          f"number > 0 (the inputs' mean square; 1 for standardised data)")
    if not (math.isfinite(c_input) and -1 <= c_input <= 1):
        raise ConfigError(f"config error: --c-input={c_input:g} is not allowed; expected a "
                          f"number in [-1, 1] (the inputs' mean pairwise cosine)")
    if phase_diagram is not None:
        folder = Path(phase_diagram).absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"config error: --phase-diagram={phase_diagram}: {folder} is not "
                              f"a writable folder")


def compose_or_refuse(overrides: list[str]) -> tuple[DictConfig, dict[str, str]]:
    """The validated config and group choices of ``overrides``, or a one-line refusal."""
    from hydra.errors import HydraException

    from gradprobe.config import compose
    from gradprobe.schema import validate

    try:
        cfg, choices = compose(overrides)
    except HydraException as err:
        raise ConfigError(one_line(err, overrides)) from None
    validate(cfg)
    return cfg, choices


def one_line(err: Exception, overrides: list[str]) -> str:
    """Hydra's refusal of ``overrides`` in one line: key, value and what is allowed."""
    options, missing = getattr(err, "options", None), getattr(err, "missing_cfg_file", None)
    if options and missing and "/" in missing:  # an option the group does not have
        group, value = missing.rsplit("/", 1)
        return (f"config error: {group}={value} is not an option; allowed: "
                f"{', '.join(options)}")
    unknown = re.match(r"Could not (?:override|append to|delete from) '([^']+)'", str(err))
    if unknown:
        key = unknown.group(1)
        given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)
        return (f"config error: {given}: {key} is not a key of this config "
                f"(`python train.py --cfg job <overrides>` lists them)")
    bad = unparsable(overrides)
    if bad is not None:
        return (f"config error: {bad!r} is not an override; expected key=value or "
                f"group=option (Hydra's override grammar)")
    return "config error: " + "; ".join(line.strip() for line in str(err).splitlines()
                                        if line.strip() and "search path" not in line)


def unparsable(overrides: list[str]) -> Any:
    """The first override Hydra's grammar rejects, or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            return override
    return None
