"""Refuse an online W&B run that has no API key before training, not 35 lines into its set-up.

wandb itself finds out only in ``wandb.init`` (after the data, the network and the trainer are
built) and raises with a long traceback. Importing wandb to ask it costs ~0.7 s, so this
replicates its documented lookup (wandb 0.31, ``wandb.sdk.lib.wbauth``; ``wandb.login``'s
docstring), torch- and wandb-free, and never contacts the server (the key is not verified):

- ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE`` in the environment;
- the netrc file (``$NETRC``, else ``~/.netrc``, else ``~/_netrc``) with an entry for the server's
  host (``WANDB_BASE_URL``, else ``base_url`` of a settings file, else api.wandb.ai);
- ``api_key`` in a settings file: the workspace's ``./wandb/settings`` over the global
  ``$WANDB_CONFIG_DIR/settings`` (default ``~/.config/wandb/settings``).

``tests/test_wandb_check.py`` checks the netrc part against wandb's own reader.
"""

from __future__ import annotations

import configparser
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gradprobe.errors import ConfigError

DEFAULT_BASE_URL = "https://api.wandb.ai"
NEEDS_KEY = ("online", "run", "shared")  # wandb's modes that talk to a server


def settings() -> dict[str, str]:
    """The ``[default]`` section of wandb's settings files, the workspace's over the global."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    global_file = (Path(config_dir).expanduser() if config_dir
                   else Path("~", ".config", "wandb").expanduser()) / "settings"
    found: dict[str, str] = {}
    for path in (global_file, Path("wandb", "settings")):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue  # wandb too treats an unreadable settings file as empty
        if parser.has_section("default"):
            found |= dict(parser["default"])
    return found


def base_url(files: dict[str, str]) -> str:
    return os.environ.get("WANDB_BASE_URL") or files.get("base_url") or DEFAULT_BASE_URL


def netrc_path() -> Path:
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()
    return windows if windows.exists() and not unix.exists() else unix


def netrc_key(host: str) -> str | None:
    """The password of the netrc entry for ``host``'s network location, as wandb reads it."""
    netloc = urlsplit(host).netloc
    try:
        entry = netrc.netrc(netrc_path()).authenticators(netloc) if netloc else None
    except (netrc.NetrcParseError, OSError):
        return None
    return entry[2] or None if entry else None


def has_api_key() -> bool:
    """Whether wandb would find credentials for its server without asking (no network)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    files = settings()
    return bool(netrc_key(base_url(files)) or files.get("api_key"))


def online_wandb_loggers(cfg: Any) -> list[str]:
    """The ``logger`` entries that are W&B loggers logging live (their ``mode``; none set:
    ``WANDB_MODE``, else wandb's default, online)."""
    live = []
    for name, logger in (cfg.get("logger") or {}).items():
        if not str(logger.get("_target_", "")).endswith("WandbLogger") or logger.get("offline"):
            continue
        mode = logger.get("mode") or os.environ.get("WANDB_MODE") or "online"
        if str(mode) in NEEDS_KEY:
            live.append(f"logger.{name}.mode={mode}")
    return live


def check_wandb_login(cfg: Any) -> None:
    """Refuse (``ConfigError``, one line) a config that logs to W&B online without a key."""
    live = online_wandb_loggers(cfg)
    if live and not has_api_key():
        raise ConfigError(
            f"config error: {live[0]} needs a W&B API key and none is set (WANDB_API_KEY, "
            f"~/.netrc or wandb's settings for {base_url(settings())}): run `wandb login` or "
            f"export WANDB_API_KEY, or log offline with {live[0].rsplit('=', 1)[0]}=offline "
            f"(`wandb sync` uploads later)")
