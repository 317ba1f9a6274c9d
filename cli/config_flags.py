"""Checks `--config.key=value` overrides before absl parses them, so a typo is one clear error.

ml_collections' own parser fails on an unknown key with a traceback deep inside flag parsing; every CLI of
this project calls `check_config_overrides(sys.argv)` first and exits with the list of valid keys instead.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

import ml_collections


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out += flat_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return sorted(out)


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """FILE.py or FILE.py:ARG (get_config(ARG), as ml_collections' config_flags passes it)."""
    path, _, arg = path.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found (e.g. --config configs/demo.py)")
    spec = importlib.util.spec_from_file_location("_statm_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_overrides(argv: list[str], flag: str = "config") -> tuple[str | None, list[str], list[str]]:
    """(config path, unknown override keys, valid keys) for an argv using --config FILE --config.k=v."""
    path, keys = None, []
    for i, arg in enumerate(argv):
        if arg in (f"--{flag}", f"-{flag}") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith(f"--{flag}="):
            path = arg.split("=", 1)[1]
        elif arg.startswith(f"--{flag}."):
            keys.append(arg[len(flag) + 3 :].split("=", 1)[0])
    if path is None:
        return None, [], []
    valid = flat_keys(load_config_file(path))
    return path, [k for k in keys if k not in valid], valid


def check_config_overrides(argv: list[str], flag: str = "config") -> None:
    """Exits with status 2 and a helpful message when the config file is missing or a key is unknown."""
    try:
        path, unknown, valid = unknown_overrides(argv, flag)
    except (FileNotFoundError, ValueError) as e:  # ValueError: get_config's own refusal (an unknown variant)
        sys.exit(f"error: {e}")
    if unknown:
        hints = [f"--{flag}.{k} (did you mean {', '.join(difflib.get_close_matches(k, valid, 2)) or 'none'}?)"
                 for k in unknown]
        sys.exit(f"error: unknown config key(s) for {path}: {'; '.join(hints)}\n"
                 f"valid keys: {', '.join(valid)}")
