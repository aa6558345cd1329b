"""Commands that read no model do not pay for the trainer: xgboost imports scikit-learn (~1.5 s a command)."""

from __future__ import annotations

import subprocess
import sys


def test_the_app_and_the_segment_path_import_neither_xgboost_nor_scikit_learn():
    code = (
        "import sys; import propstream.app, propstream.campaigns, propstream.cli, models.registry; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'xgboost', 'sklearn', 'statsmodels'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
