"""Online W&B without an API key is refused before training, in one line (exit 2, nothing
written); with a key wandb would find (environment, netrc, settings file) the run goes on.
Every case runs in a temporary HOME and environment; the accepted ones call only the check,
which never contacts the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, compose_config, snapshot
from gradprobe.errors import ConfigError
from gradprobe.wandb_check import check_wandb_login, netrc_key

KEY = "0123456789abcdef0123456789abcdef01234567"  # the format of a W&B API key (40 hex)
CREDENTIAL_VARS = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL",
                   "WANDB_CONFIG_DIR", "NETRC", "WANDB_MODE")


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A HOME without credentials, no W&B variables, and an empty working directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def online() -> object:
    return compose_config(["logger.wandb.mode=online"])[0]


def test_online_without_a_key_is_refused_in_one_line(home) -> None:
    with pytest.raises(ConfigError) as err:
        check_wandb_login(online())
    message = str(err.value)
    assert "\n" not in message
    for part in ("logger.wandb.mode=online", "wandb login", "WANDB_API_KEY",
                 "logger.wandb.mode=offline", "https://api.wandb.ai"):
        assert part in message, message


def test_wandb_mode_online_in_the_environment_is_refused_too(home, monkeypatch) -> None:
    cfg = compose_config([])[0]  # logger.wandb.mode: ${oc.env:WANDB_MODE,offline}
    check_wandb_login(cfg)  # offline by default: no key needed
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match="logger.wandb.mode=online"):
        check_wandb_login(cfg)
    check_wandb_login(compose_config(["logger=csv"])[0])  # no W&B logger, nothing to check


def test_a_key_in_the_environment_is_accepted(home, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    check_wandb_login(online())


def test_a_netrc_entry_for_the_server_is_accepted(home, monkeypatch) -> None:
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    check_wandb_login(online())
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")  # another server
    with pytest.raises(ConfigError, match="wandb.example.com"):
        check_wandb_login(online())


def test_netrc_from_the_netrc_variable_and_a_settings_file_key_are_accepted(
        home, tmp_path, monkeypatch) -> None:
    netrc = tmp_path / "elsewhere.netrc"
    netrc.write_text(f"machine api.wandb.ai login user password {KEY}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    check_wandb_login(online())
    monkeypatch.delenv("NETRC")
    config_dir = tmp_path / "wandb-config"
    config_dir.mkdir()
    (config_dir / "settings").write_text(f"[default]\napi_key = {KEY}\n")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config_dir))
    check_wandb_login(online())


@pytest.mark.parametrize("host", ["https://api.wandb.ai", "https://wandb.example.com",
                                  "http://localhost:8080"])
def test_netrc_lookup_agrees_with_wandbs_own(home, host) -> None:
    """The replicated netrc lookup against wandb's reader, for its host and others."""
    from wandb.sdk.lib.wbauth import read_netrc_auth

    (home / ".netrc").write_text(f"machine api.wandb.ai login user password {KEY}\n"
                                 f"machine localhost:8080 login user password {KEY[::-1]}\n")
    assert netrc_key(host) == read_netrc_auth(host=host)


def test_cli_refuses_online_without_a_key_and_writes_nothing(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS} | {"HOME": str(home)}
    before = snapshot(tmp_path)
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "logger.wandb.mode=online",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "wandb login" in lines[0], out.stderr
    assert snapshot(tmp_path) == before
