"""`mooer-data providers list|check`: installed providers, credentials set or missing."""

from __future__ import annotations

import os

from .config import config_path, load_provider_config
from .errors import ProviderError
from .registry import all_specs, provider_class


def provider_report(check: bool = False) -> tuple[list[str], bool]:
    lines = [f"provider config file: {config_path()} ({'found' if config_path().is_file() else 'absent'})", ""]
    all_ok = True
    for spec in all_specs():
        try:
            cls = provider_class(spec.kind, spec.name)
        except ValueError as error:
            lines.append(f"{spec.kind:3s} {spec.name:8s} NOT INSTALLED  {error}")
            all_ok = False
            continue
        provider = cls(load_provider_config(spec.name))
        missing = []
        present = []
        for key, envs in getattr(cls, "credential_env", {}).items():
            if key in provider.config.credentials or any(os.environ.get(e) for e in envs):
                present.append(key)
            else:
                missing.append(f"{key} ({' or '.join(envs)})")
        status = "ready" if not missing else "needs " + ", ".join(missing)
        if check:
            try:
                provider.check_configured()
            except ProviderError as error:
                status = f"NOT READY: {error}"
                all_ok = False
        endpoint = provider.endpoint or "-"
        where = "local" if getattr(cls, "is_local", False) else endpoint
        lines.append(f"{spec.kind:3s} {spec.name:8s} {where:45s} credentials set: {', '.join(present) or 'none'}; {status}")
    lines += ["", "set credentials as environment variables or under credentials: in the config file (values are never printed)"]
    return lines, all_ok
