"""Every Python block of the README runs as written: a new user pastes them."""
import os
import re
import runpy

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may save files
    script = tmp_path / f"block{i}.py"
    script.write_text(BLOCKS[i], encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
