"""Settings: what defines a training run, a submission and a sweep, declared once, with no
torch import (the other commands' few options are declared beside them in cli/).

A setting is one pydantic field: its name (the flag is the name with dashes, the config-file
key the name itself), type, default, range or choices, help and `--help` panel. The CLI's
options, the `--config` files and `--print-config`, the sweep files and the checks are all
derived from these declarations.
"""
