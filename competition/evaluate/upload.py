"""`compete upload`: validate, send to Kaggle with the official client, record it.

The `kaggle` package is an optional extra (`pip install 'compete[kaggle]'`); credentials
are found the way the kaggle CLI finds them: KAGGLE_USERNAME + KAGGLE_KEY in the
environment, or kaggle.json in $KAGGLE_CONFIG_DIR, ~/.config/kaggle or ~/.kaggle. A
failure (no client, no credentials, no network) is one clear line and changes nothing.
"""

from __future__ import annotations

import importlib
import os
from datetime import datetime
from pathlib import Path

from competition.data.discover import discover_competition
from competition.errors import CompeteError
from competition.evaluate.leaderboard import mark_uploaded
from competition.evaluate.validate import validate_submission
from competition.io import sha256_of_file


def credentials_found() -> str | None:
    """Where the kaggle client will find credentials, or None."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME, KAGGLE_KEY)"
    folders = [os.environ.get("KAGGLE_CONFIG_DIR"), Path.home() / ".config" / "kaggle", Path.home() / ".kaggle"]
    for folder in filter(None, folders):
        if (Path(folder) / "kaggle.json").is_file():
            return str(Path(folder) / "kaggle.json")
    return None


def _kaggle_api():
    try:
        module = importlib.import_module("kaggle.api.kaggle_api_extended")
    except ImportError as error:
        raise CompeteError("the kaggle client is not installed: pip install 'compete[kaggle]'") from error
    api = module.KaggleApi()
    api.authenticate()
    return api


def upload_submission(submission: str | Path, competition: str, message: str, data: str | Path,
                      leaderboard: str | Path = "leaderboard.md") -> dict:
    submission = Path(submission)
    found = discover_competition(data, need_train=False)
    problems = validate_submission(submission, [r.name for r in found.query], [r.name for r in found.gallery])
    if problems:
        raise CompeteError(f"{submission} is not valid, not uploaded: " + "; ".join(problems))
    if not credentials_found():
        raise CompeteError("no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in "
                           "~/.kaggle/ (Kaggle > Settings > API > Create New Token); nothing was uploaded")
    try:
        api = _kaggle_api()
        response = api.competition_submit(str(submission), message, competition)
    except CompeteError:
        raise
    except Exception as error:  # the client raises many kinds: network, HTTP, auth
        raise CompeteError(f"upload to '{competition}' failed ({type(error).__name__}: {error}); "
                           f"nothing was recorded, {submission} is unchanged") from error
    upload = {"competition": competition, "message": message, "sha256": sha256_of_file(submission),
              "file": str(submission), "time": datetime.now().isoformat(timespec="seconds"),
              "response": str(response or "")[:500]}
    mark_uploaded(leaderboard, submission.stem, upload)
    return upload
