"""`compete upload`: validate, send to Kaggle with the official client, record it.

The `kaggle` package is an optional extra (`pip install 'compete[kaggle]'`). Credentials
are found the way current kaggle releases find them: an API token in KAGGLE_API_TOKEN or
~/.kaggle/access_token, KAGGLE_USERNAME + KAGGLE_KEY in the environment, or kaggle.json
in $KAGGLE_CONFIG_DIR, ~/.config/kaggle or ~/.kaggle. File competitions take the file;
code competitions take the notebook that writes it (`--notebook owner/slug --version N`).
A failure (no client, no credentials, no network) is one clear line and changes nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from datetime import datetime
from pathlib import Path

from competition.data.discover import detect_layout
from competition.errors import CompeteError
from competition.evaluate.formats import KAGGLE, Rows, SubmissionFormat
from competition.evaluate.leaderboard import mark_uploaded, read_records
from competition.evaluate.submission import read_submission_rows
from competition.evaluate.validate import validate_against
from competition.io import counted, sha256_of_file

NO_CREDENTIALS = (
    "no Kaggle credentials: set KAGGLE_API_TOKEN (Kaggle > Settings > API > Generate New Token) or "
    "save the token to ~/.kaggle/access_token, or use KAGGLE_USERNAME + KAGGLE_KEY or kaggle.json "
    "in ~/.kaggle/; nothing was uploaded"
)


def credentials_found() -> str | None:
    """Where the kaggle client will find credentials, or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME, KAGGLE_KEY)"
    kaggle_home = Path.home() / ".kaggle"
    for token in (kaggle_home / "access_token", kaggle_home / "access_token.txt"):
        if token.is_file():
            return str(token)
    folders = [os.environ.get("KAGGLE_CONFIG_DIR"), Path.home() / ".config" / "kaggle", kaggle_home]
    for folder in filter(None, folders):
        if (Path(folder) / "kaggle.json").is_file():
            return str(Path(folder) / "kaggle.json")
    return None


def kaggle_api():
    """An authenticated client. Some releases call exit() while importing or authenticating
    without credentials, and a broken install fails on its own imports: each is one line."""
    chatter = io.StringIO()  # the client prints a page of advice before it exits: we say one line
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            module = importlib.import_module("kaggle.api.kaggle_api_extended")
            api = module.KaggleApi()
            api.authenticate()
    except ImportError as error:
        raise CompeteError(
            f"the kaggle client could not be imported ({type(error).__name__}: {error}): pip install 'compete[kaggle]'"
        ) from error
    except SystemExit as error:
        raise CompeteError(
            f"the kaggle client could not authenticate (it exited with {error.code}); " + NO_CREDENTIALS
        ) from None
    return api


def scored_format(competition: str, data: str | Path) -> SubmissionFormat | None:
    """The file format a competition scores, where we know it: the Google Landmark Retrieval
    competitions (and any folder in their layout) score `id,images`; None: unknown, sent as is."""
    if "landmark-retrieval" in competition.lower() or detect_layout(Path(data)) == "glr":
        return KAGGLE
    return None


def describe_file(submission: Path, fmt: SubmissionFormat, rows: Rows) -> str:
    """What is about to be sent, in one line: the format and the rows (`read_submission_rows`)."""
    per_row = max((len(ranked) for _, ranked in rows), default=0)
    return f"{submission} ({fmt.title}: {counted(len(rows), 'query')}, up to {per_row} ids each)"


def refuse_wrong_format(
    submission: Path, fmt: SubmissionFormat, competition: str, data: str | Path, leaderboard: str | Path
) -> None:
    """A file the competition would score as 0 (and a daily submission lost) is not sent; the
    message is the one command that writes the right file, with the row's own models."""
    wanted = scored_format(competition, data)
    if wanted is None or fmt == wanted:
        return
    record = next((r for r in reversed(read_records(leaderboard)) if r.get("name") == submission.stem), {})
    models = " ".join(f"-m {m}" for m in record.get("models", [])) or "-m RUN"
    raise CompeteError(
        f"{competition} scores {wanted.title} (up to {wanted.most_per_row} per query) and {submission} is in "
        f"{fmt.title}: it would score 0, so nothing was sent. Write the right file with `compete submit --data "
        f"{data} {models} --format {wanted.name} --name {submission.stem}-{wanted.name}` and upload that"
    )


def upload_submission(
    submission: str | Path,
    competition: str,
    message: str,
    data: str | Path,
    leaderboard: str | Path = "leaderboard.md",
    notebook: str = "",
    notebook_version: int | None = None,
    say=print,
) -> dict:
    submission = Path(submission)
    problems, _ = validate_against(submission, data)
    if problems:
        raise CompeteError(f"{submission} is not valid, not uploaded: " + "; ".join(problems))
    fmt, rows = read_submission_rows(submission)
    refuse_wrong_format(submission, fmt, competition, data, leaderboard)
    if notebook and notebook.count("/") != 1:
        raise CompeteError(f"--notebook must be owner/notebook-slug, not '{notebook}'")
    if not credentials_found():
        raise CompeteError(NO_CREDENTIALS)
    say(f"sending {describe_file(submission, fmt, rows)} to {competition}")
    try:
        api = kaggle_api()
        if notebook:  # a code competition: Kaggle runs the notebook, which writes the file
            response = api.competition_submit_code(submission.name, message, competition, notebook, notebook_version)
        else:
            response = api.competition_submit(str(submission), message, competition)
    except CompeteError:
        raise
    except Exception as error:  # the client raises many kinds: network, HTTP, auth
        raise CompeteError(
            f"upload to '{competition}' failed ({type(error).__name__}: {error}); "
            f"nothing was recorded, {submission} is unchanged"
        ) from error
    upload = {
        "competition": competition,
        "message": message,
        "sha256": sha256_of_file(submission),
        "file": str(submission),
        "time": datetime.now().isoformat(timespec="seconds"),
        "notebook": f"{notebook} v{notebook_version}" if notebook else "",
        "response": str(response or "")[:500],
    }
    mark_uploaded(leaderboard, submission.stem, upload)
    return upload
