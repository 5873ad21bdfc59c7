"""Settings: every setting of every command, declared once, with no torch import.

A setting is one pydantic field: its name (the flag is the name with dashes, the config-file
key the name itself), type, default, range or choices, and help. The CLI's options, the
`--config` files, the sweep files and the checks are all derived from these declarations.
"""
