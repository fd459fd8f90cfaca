"""Persistent settings: ``QSettings`` for the window, a typed dict for training.

Window geometry, splitter states, recent and last corpora live in
``QSettings`` (organisation ``noisekey``, application ``explorer``, INI
format). Training settings are stored as one JSON string with a schema
version, so a newer ``TrainConfig`` with extra fields reads an older file
(unknown keys dropped, missing keys take the config defaults).

Tests (and ``--screenshot``) point everything at a temporary directory with
:func:`use_settings_dir` or the ``NOISEKEY_SETTINGS_DIR`` environment
variable, so they never touch the user's settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QSettings

SCHEMA = 1
MAX_RECENT = 10
_DIR: list[str | None] = [None]


def use_settings_dir(path: str | os.PathLike | None) -> None:
    """Store settings under ``path`` (``None``: the platform default)."""
    _DIR[0] = None if path is None else str(path)


def settings() -> QSettings:
    """The application's ``QSettings`` object."""
    path = _DIR[0] or os.environ.get("NOISEKEY_SETTINGS_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        return QSettings(str(Path(path) / "explorer.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                     "noisekey", "explorer")


def _list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def recent_corpora() -> list[str]:
    return _list(settings().value("corpora/recent"))


def add_recent(paths: list[str]) -> list[str]:
    """Put ``paths`` at the front of the recent list (deduplicated, capped)."""
    rec = [str(p) for p in paths] + [p for p in recent_corpora() if p not in paths]
    rec = rec[:MAX_RECENT]
    settings().setValue("corpora/recent", rec)
    return rec


def last_corpora() -> list[str]:
    return _list(settings().value("corpora/last"))


def set_last_corpora(paths: list[str]) -> None:
    settings().setValue("corpora/last", [str(p) for p in paths])


def training_settings() -> dict:
    """Saved training settings (empty when none or of another schema)."""
    raw = settings().value("training/json")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return {}
    return dict(data.get("values", {}))


def set_training_settings(values: dict) -> None:
    settings().setValue("training/json", json.dumps({"schema": SCHEMA, "values": values}))


def save_bytes(key: str, value) -> None:
    settings().setValue(key, value)


def load_bytes(key: str):
    return settings().value(key)
