"""``python -m gradprobe.theory <overrides>``: a config's mean-field prediction, without training.

    python -m gradprobe.theory activation=tanh init=meanfield init.sigma_w2=1.5 model.depth=50
    python -m gradprobe.theory activation=tanh --phase-diagram phase.png

Whatever it is given that it cannot use (an unknown option, key or flag, a value the schema
refuses, a config the theory does not cover, a bad number) is one line on stderr and exit 2,
before torch is imported (``gradprobe.theory.refusals``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from gradprobe.errors import ConfigError
from gradprobe.theory.diagram import phase_diagram
from gradprobe.theory.refusals import check_inputs, compose_or_refuse
from gradprobe.theory.runs import activation_params, applies, for_config

SHOWN = ("q_star", "chi1_star", "phase", "depth_scale", "first_last_backprop_ratio", "c_star",
         "chi_c_star", "correlation_depth_scale")


class Parser(argparse.ArgumentParser):
    """argparse that refuses in one line (its own ``error`` prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (--help lists the options)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m gradprobe.theory",
                    description="mean-field prediction for a gradprobe config")
    parser.add_argument("overrides", nargs="*", help="e.g. activation=tanh init=meanfield")
    parser.add_argument("--phase-diagram", type=Path, help="also draw the phase diagram here")
    parser.add_argument("--q-input", type=float, default=1.0,
                        help="mean square of the input features (1 for standardised data)")
    parser.add_argument("--c-input", type=float, default=0.0,
                        help="mean pairwise cosine of the input vectors (0: unrelated inputs)")
    return parser.parse_args(argv)


def drawn_variances(cfg: Any, choices: dict[str, str]) -> tuple[float, float]:
    """(sigma_w2, sigma_b2) the chosen init draws: stated by ``init=meanfield``, otherwise
    measured on the network the pipeline builds (torch only then, and only here)."""
    if choices.get("init") == "meanfield":
        return float(cfg.init.sigma_w2), float(cfg.init.sigma_b2)
    from gradprobe.build import build_network
    from gradprobe.init import implied_variances

    implied = implied_variances(build_network(cfg, (int(cfg.model.width),), 10))
    return implied["sigma_w2"], implied["sigma_b2"]


def show(result: dict[str, Any], sw2: float, sb2: float, c_input: float) -> None:
    print(f"{result['activation']}  sigma_w2={sw2:.4g} sigma_b2={sb2:.4g}  depth {result['depth']}")
    print(f"  q* = {result['q_star']:.4g}   chi_1(q*) = {result['chi1_star']:.4f}   "
          f"phase: {result['phase']}   depth scale xi = {result['depth_scale']:.3g} layers")
    print(f"  predicted first/last back-propagated gradient norm ratio: "
          f"{result['first_last_backprop_ratio']:.3e}")
    xi_c = result["correlation_depth_scale"]
    print(f"  correlation map: c* = {result['c_star']:.4g}   chi_c(c*) = "
          f"{result['chi_c_star']:.4f}   xi_c = {xi_c:.3g} layers   trainable depth "
          f"6 xi_c = {6 * xi_c:.3g}   (cosine at layer {result['depth']}: "
          f"{result['c_layers'][-1]:.4f} from {c_input:g})")
    print(json.dumps({k: result[k] for k in SHOWN} | {"trainable_depth": 6 * xi_c}))


def main(argv: list[str] | None = None) -> None:
    """Print the prediction for a config given as Hydra overrides, without training; what
    cannot be predicted is refused in one line (exit 2) before anything heavy is imported."""
    try:
        args = parse(argv)
        check_inputs(args.q_input, args.c_input, args.phase_diagram)
        cfg, choices = compose_or_refuse(args.overrides)
        reason = applies(choices)
        if reason:
            raise ConfigError(f"config error: {reason}")
    except ConfigError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    sw2, sb2 = drawn_variances(cfg, choices)
    result = for_config(cfg, choices, sw2, sb2, args.q_input, int(cfg.model.width),
                        c_input=args.c_input)
    show(result, sw2, sb2, args.c_input)
    if args.phase_diagram:
        params = activation_params(dict(cfg.activation))
        path = phase_diagram(result["activation"], (sw2, sb2), args.phase_diagram, **params)
        print(f"phase diagram: {path}")


if __name__ == "__main__":
    main()
