"""Where the shipped configuration (config/default.yaml and config/templates/) is.

Beside the source tree in a checkout or an editable install; under the installation's
data directory (share/dlp-gateway/) when installed from a wheel.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def _config_directory() -> Path:
    beside = Path(__file__).resolve().parent.parent / "config"
    if (beside / "default.yaml").is_file():
        return beside
    return Path(sysconfig.get_path("data")) / "share" / "dlp-gateway"


CONFIG_DIRECTORY = _config_directory()
TEMPLATES = CONFIG_DIRECTORY / "templates"
