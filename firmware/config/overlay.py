"""The fleet's desired configuration, laid over the box's own TOML.

The operator's desired-config document (README "Fleet operations") may set only the keys
of `REMOTE_KEYS`: probe targets and the offline risk limits, nothing that could cut the
box off its fleet or its POS (no addresses, keys, URLs, interfaces). The fleet agent
writes an accepted document, after verifying its signature and version, to
`<state_dir>/OVERLAY_FILE`; the loader lays its `settings` over the TOML on every load
(start, SIGHUP, `storebox config check`). The TOML itself is never rewritten: it is the
operator's conffile (the .deb would ask about it at every upgrade) and a technician's
comments stay where they are.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("storebox.config")

OVERLAY_FILE = "fleet-desired-config.json"
#: The keys a desired-config document may set, dotted `section.key`.
REMOTE_KEYS = frozenset({
    "probes.targets",
    "payments.offline_max_amount", "payments.offline_max_total",
    "payments.offline_max_count", "payments.offline_max_age_s",
    "payments.velocity_window_s", "payments.velocity_max_count",
    "payments.velocity_max_amount", "payments.blocked_bins",
})
#: Where the state directory is when the TOML does not say (the schema's default).
DEFAULT_STATE_DIR = "/var/lib/storebox"


def overlay_path(data: dict[str, Any]) -> Path:
    """The overlay file for the (raw, unvalidated) TOML `data`."""
    device = data.get("device")
    state_dir = device.get("state_dir") if isinstance(device, dict) else None
    return Path(state_dir if isinstance(state_dir, str) and state_dir
                else DEFAULT_STATE_DIR) / OVERLAY_FILE


def read_overlay(path: Path) -> dict[str, Any] | None:
    """The stored document, or None when there is none. An unreadable one is logged and
    ignored: a box must start on its own TOML rather than not at all."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("config: ignoring the fleet's desired config %s: %s", path, exc)
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
        log.error("config: ignoring the fleet's desired config %s: no settings", path)
        return None
    return doc


def lay_over(data: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """`data` with `settings` (dotted keys of REMOTE_KEYS) laid over it; other keys are
    skipped (the agent refuses them before it writes a document)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for key, value in settings.items():
        if key not in REMOTE_KEYS:
            log.error("config: the fleet may not set %r; ignored", key)
            continue
        section, _, name = key.partition(".")
        table = merged.get(section)
        if not isinstance(table, dict):
            table = merged[section] = {}
        table[name] = value
    return merged


def with_overlay(data: dict[str, Any]) -> dict[str, Any]:
    """The TOML `data` with the stored desired config (if any) laid over it."""
    doc = read_overlay(overlay_path(data))
    return data if doc is None else lay_over(data, doc["settings"])


def write_overlay(path: Path, doc: dict[str, Any]) -> None:
    """Store an accepted document atomically (0600: only the daemon reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fleet-config-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # the temporary file goes; the old document stays
        Path(tmp).unlink(missing_ok=True)
        raise
