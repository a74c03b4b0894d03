"""Test-session setup: the suite runs on the plan's built-in defaults, whatever `fastrnn tune`
cached on this machine (tests of the planner assume them; tests/test_tuning.py turns the cache
back on where it tests it)."""
import os

os.environ["FASTRNN_NO_TUNE_CACHE"] = "1"
