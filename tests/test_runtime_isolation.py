"""runtime/ is pure Python + Gymnasium: importing it loads neither Django nor DRF."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_it_imports_runtime_without_django() -> None:
    code = (
        "import sys\n"
        "import envs_api.runtime.backend, envs_api.runtime.envids\n"
        "import envs_api.runtime.monitor, envs_api.runtime.spaces\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert out.stdout.strip() == "[]"
