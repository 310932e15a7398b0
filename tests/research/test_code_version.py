"""The code state a dataset or sweep records: the commit, whether tracked files differ, and a hash of the diff
(two runs on the same commit with the same uncommitted changes share it; other changes do not)."""

from __future__ import annotations

import subprocess

from qmachina_assets.core.research.datasets import git_code_version


def _git(root, *cmd: str) -> str:
    return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_dirty_state_and_diff_hash(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "signal.py").write_text("THRESHOLD = 0.1\n")
    _git(tmp_path, "add", "signal.py")
    _git(tmp_path, "commit", "-qm", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    clean = git_code_version(tmp_path)
    assert (clean.commit, clean.dirty, clean.diff_sha256, clean.source) == (head, False, None, "git")
    (tmp_path / "signal.py").write_text("THRESHOLD = 0.2\n")
    dirty = git_code_version(tmp_path)
    assert dirty.commit == head and dirty.dirty and len(dirty.diff_sha256) == 64
    assert git_code_version(tmp_path).diff_sha256 == dirty.diff_sha256  # the same changes, the same hash
    assert "uncommitted changes" in dirty.describe() and dirty.diff_sha256[:16] in dirty.describe()
    (tmp_path / "signal.py").write_text("THRESHOLD = 0.3\n")
    assert git_code_version(tmp_path).diff_sha256 != dirty.diff_sha256
    (tmp_path / "notes.txt").write_text("untracked files are not code the run imported\n")
    (tmp_path / "signal.py").write_text("THRESHOLD = 0.1\n")
    assert not git_code_version(tmp_path).dirty
