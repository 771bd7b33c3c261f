"""The README's embedding example (``Pipeline.create()`` / ``process()``), run as written.

The block is taken from README.md and run in a fresh interpreter from the
checkout root, with the real provisioned model on the real clip; only the
clip's path is swapped when the shared folder lives elsewhere
(``MICROEXPR_SHARED``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from microexpr.models import provision

ROOT = Path(__file__).resolve().parents[1]
README_CLIP = "../shared/data/media/single_face.mp4"


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- embed-example -->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README.md has no <!-- embed-example --> python block"
    return match.group(1)


def test_the_example_uses_only_what_it_names() -> None:
    code = _example()
    assert "Pipeline.create()" in code and ".process(" in code and ".finish()" in code
    assert README_CLIP in code
    compile(code, "README.md", "exec")


@pytest.mark.integration
def test_readme_embedding_example_runs(tmp_path: Path, model_mirror: Path, smile_clip: Path) -> None:
    models = tmp_path / "models"
    provision(models_dir=models, mirror=model_mirror, url="")
    code = _example()
    if (ROOT / README_CLIP).resolve() != smile_clip.resolve():
        code = code.replace(README_CLIP, str(smile_clip))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "device"), "MICROEXPR_MODELS_DIR": str(models)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines, proc.stderr[-2000:]
    pattern = re.compile(r"(micro|macro) \d+\.\d\d-\d+\.\d\d s (AU\d+(\+AU\d+)*)?: [a-z]+ \(\d\.\d\d, [a-z]+\)")
    assert all(pattern.fullmatch(line) for line in lines), lines
    # README: on this clip, a smile (one macro happiness episode)
    assert any(" happiness (" in line for line in lines), lines
