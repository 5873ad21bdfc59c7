"""What people who live with timm, Typer and Kaggle expect of the command line, tracking and reports."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from competition.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def test_importing_augmentation_asks_no_network():
    probe = (
        "import urllib.request, warnings\n"
        "calls = []\n"
        "urllib.request.OpenerDirector.open = lambda self, *a, **k: calls.append(a) or 1 / 0\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import competition.augment.transforms\n"
        "print(len(calls), [str(w.message) for w in caught if 'version' in str(w.message)])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "[]"], out.stdout + out.stderr
