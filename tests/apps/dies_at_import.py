"""Kills its own process while importing: a crash, not an import error."""

import os

os._exit(1)
