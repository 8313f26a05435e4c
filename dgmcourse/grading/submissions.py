"""Submission discovery and repair, before nbgrader sees a notebook.

A renamed notebook (``a1_vae (1).ipynb``), invalid JSON, an old nbformat version, edited or
invented nbgrader metadata and deleted graded cells are repaired or rejected here, with one
note per repair for the instructor; every file that is not a notebook is ignored, so nothing a
student uploads next to the notebook reaches the sandbox.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shutil
from pathlib import Path

import nbformat

_EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")  # written by nbgrader's exchange

_COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|[-_ ]copy\d*|-checkpoint)+$", re.IGNORECASE)

def repair_submission(submitted: Path, release: Path, dest: Path) -> list:
    """Repair the notebooks of one submission into ``dest``; return notes for the instructor.

    For every notebook the release ships (``release/<name>.ipynb``): find it in ``submitted``
    (also under a renamed file such as ``"a1_vae (1).ipynb"``), parse it (invalid JSON or an
    unreadable notebook is rejected: the notebook then counts as missing and scores zero),
    convert old nbformat versions to v4, and give every cell that carries nbgrader metadata the
    release's metadata for its ``grade_id`` (unknown ``schema_version``, edited points, a test
    cell turned into markdown). Cells whose ``grade_id`` the release does not know, and repeats
    of a ``grade_id``, lose their nbgrader metadata; deleted locked and graded cells are restored
    (:func:`repair_cells`). Other files in the submission are ignored.

    Raises:
        ValueError: if ``release`` holds no notebook.
    """
    expected = {p.stem: p for p in sorted(release.glob("*.ipynb"))}
    if not expected:
        raise ValueError(f"release={release} holds no notebook")
    dest.mkdir(parents=True, exist_ok=True)
    notes = []
    present = sorted(p for p in submitted.glob("*.ipynb")) if submitted.is_dir() else []
    unmatched = [p for p in present if p.stem not in expected]
    for name, release_path in expected.items():
        path = submitted / f"{name}.ipynb"
        if not path.is_file():
            guesses = [p for p in unmatched if _COPY_SUFFIX.sub("", p.stem).lower() == name.lower()]
            if not guesses and len(expected) == 1 and len(unmatched) == 1:
                guesses = unmatched
            if not guesses:
                notes.append(f"missing notebook {name}.ipynb")
                continue
            path = guesses[0]
            unmatched.remove(path)
            notes.append(f"renamed {path.name!r} to {name}.ipynb")
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            notes.append(f"rejected {path.name}: not valid JSON ({str(err)[:60]})")
            continue
        try:
            version = json.loads(text).get("nbformat")
            nb = nbformat.reads(text, as_version=4)
        except Exception as err:  # noqa: BLE001 - nbformat raises many types on bad notebooks
            notes.append(f"rejected {path.name}: not a notebook ({str(err)[:60]})")
            continue
        if version != 4:
            notes.append(f"converted {path.name} from nbformat {version}")
        notes += repair_cells(nb, nbformat.read(release_path, as_version=4))
        nbformat.write(nb, dest / f"{name}.ipynb")
    for path in sorted(submitted.iterdir()) if submitted.is_dir() else []:
        if path.name in _EXCHANGE_FILES and path.is_file() and not path.is_symlink():
            shutil.copy(path, dest / path.name)
        elif path.suffix != ".ipynb":
            notes.append(f"ignored file {path.name}")
    return notes

def repair_cells(nb, release) -> list:
    """Give each graded/locked cell the release's nbgrader metadata (see repair_submission)."""
    reference = {c.metadata.nbgrader["grade_id"]: c for c in release.cells
                 if "nbgrader" in c.metadata and "grade_id" in c.metadata.nbgrader}
    keep = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id in reference and (grade_id not in keep or (
                cell.source == reference[grade_id].source
                and nb.cells[keep[grade_id]].source != reference[grade_id].source)):
            keep[grade_id] = i
    notes, cells = [], []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            cells.append(cell)
            continue
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id not in reference or keep.get(grade_id) != i:
            notes.append(f"removed nbgrader metadata from a cell with grade_id {grade_id!r}")
            del cell.metadata["nbgrader"]
            cells.append(cell)
            continue
        ref = reference[grade_id]
        if dict(meta) != dict(ref.metadata.nbgrader):
            notes.append(f"restored nbgrader metadata of {grade_id}")
        if cell.cell_type != ref.cell_type:
            notes.append(f"restored cell type of {grade_id} ({cell.cell_type} -> {ref.cell_type})")
            cell = (nbformat.v4.new_code_cell if ref.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)(source=cell.source)
        cell.metadata["nbgrader"] = nbformat.from_dict(dict(ref.metadata.nbgrader))
        cells.append(cell)
    nb.cells = _restore_deleted(cells, release, notes)
    return notes

def _restore_deleted(cells: list, release, notes: list) -> list:
    """Put back deleted locked and graded cells of the release after their release predecessor.

    A deleted written answer comes back unanswered, as released.

    (nbgrader's own ``OverwriteCells.add_missing_cells`` would do it too, but in nbgrader 0.9.6 it
    fails with a KeyError when the deleted cell follows a locked cell that is neither graded nor
    a solution.)
    """
    order = [c for c in release.cells if "grade_id" in c.metadata.get("nbgrader", {})]
    position = {c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(cells)
                if "nbgrader" in c.metadata}
    for k, ref in enumerate(order):
        grade_id, meta = ref.metadata.nbgrader["grade_id"], ref.metadata.nbgrader
        if grade_id in position or not (meta.get("locked") or meta.get("grade")):
            continue
        before = [position[c.metadata.nbgrader["grade_id"]] for c in order[:k]
                  if c.metadata.nbgrader["grade_id"] in position]
        at = max(before, default=-1) + 1
        restored = copy.deepcopy(ref)
        if "id" in restored:
            restored["id"] = secrets.token_hex(4)
        cells.insert(at, restored)
        position = {g: i + (i >= at) for g, i in position.items()}
        position[grade_id] = at
        notes.append(f"restored deleted cell {grade_id}")
    return cells
