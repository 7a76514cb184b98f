"""Provider configuration: a YAML file, with environment variables filling what it leaves out.

A value in the file (or a `--set` on the command line) wins over the environment
variable of the same setting, for credentials, options and the endpoint alike.

The file (``$MOOER_PROVIDERS_CONFIG`` or ``~/.config/mooer/providers.yaml``)::

    tencent:
      endpoint: https://asr.tencentcloudapi.com     # optional override
      credentials: {secret_id: AKID..., secret_key: ...}
      options: {engine: 16k_zh, region: ap-shanghai, price_per_hour: 1.2}

Credential values become Secret objects the moment they are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .base import ProviderConfig
from .secrets import Secret


def config_path() -> Path:
    return Path(os.environ.get("MOOER_PROVIDERS_CONFIG", Path.home() / ".config" / "mooer" / "providers.yaml"))


def load_provider_config(name: str, path: Path | None = None) -> ProviderConfig:
    path = path or config_path()
    entry: dict = {}
    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of provider name -> settings")
        entry = data.get(name) or {}
    credentials = {key: Secret(str(value)) for key, value in (entry.get("credentials") or {}).items()}
    return ProviderConfig(
        name=name,
        endpoint=entry.get("endpoint"),
        credentials=credentials,
        options=dict(entry.get("options") or {}),
        timeout=float(entry.get("timeout", 30.0)),
    )
