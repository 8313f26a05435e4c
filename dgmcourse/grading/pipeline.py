"""The grading pipeline, declared once, and the course configuration every route reads.

``nbgrader_config.py`` assigns :data:`SANITIZE`, :data:`AUTOGRADE` and :data:`FEEDBACK` to
nbgrader's preprocessor lists, so plain ``nbgrader autograde``, ``generate_feedback`` and the
formgrader run the steps that ``dgmcourse grade`` and ``dgmcourse feedback`` run: those read the
same file (:func:`course_config`) and fall back to these lists only where it sets none. The
sandbox's limits are settings of
:class:`~dgmcourse.grading.preprocessors.SandboxedExecute` (``c.SandboxedExecute.memory_mb = 8192``
in ``nbgrader_config.py``), whose defaults are those of :class:`~dgmcourse.grading.sandbox.Policy`;
:func:`course_policy` resolves them, with command-line overrides, into one ``Policy``.
"""

from __future__ import annotations

from pathlib import Path

# Every route repairs the submission's cells against the release first (a copied test cell,
# metadata from another nbgrader version, edited points, deleted test cells) ...
SANITIZE = (
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "dgmcourse.grading.preprocessors.RepairCells",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
)
# ... then runs student code in the grading sandbox: SandboxedExecute takes the place of
# nbgrader's Execute (bubblewrap, limits, signed verdicts).
AUTOGRADE = (
    "dgmcourse.grading.preprocessors.SandboxedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
)
# Feedback without hidden tests or mark schemes (nbgrader's default feedback shows both, since
# autograding restores them), its TeX rendered to MathML so that it reads offline.
FEEDBACK = (
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "dgmcourse.grading.feedback.RenderMath",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
)
_PIPELINE = {("Autograde", "sanitize_preprocessors"): SANITIZE,
             ("Autograde", "autograde_preprocessors"): AUTOGRADE,
             ("GenerateFeedback", "preprocessors"): FEEDBACK}


def course_config(course: str | Path):
    """The course's nbgrader configuration (its ``nbgrader_config.py``, or an empty one), with
    :data:`SANITIZE`, :data:`AUTOGRADE` and :data:`FEEDBACK` where it sets no list of its own.

    Raises:
        ValueError: ``nbgrader_config.py`` cannot be executed (the error in one line).
    """
    from traitlets.config import Config, PyFileConfigLoader
    path = Path(course) / "nbgrader_config.py"
    try:
        config = PyFileConfigLoader(str(path)).load_config() if path.is_file() else Config()
    except Exception as err:  # noqa: BLE001 - the file is Python: anything can go wrong in it
        raise ValueError(f"{path}: {type(err).__name__}: {err}".splitlines()[0]) from None
    for (section, setting), steps in _PIPELINE.items():
        if setting not in config[section]:
            config[section][setting] = list(steps)
    return config


def course_policy(course: str | Path | None, overrides: dict | None = None) -> tuple:
    """The sandbox's limits for a course: each ``SandboxedExecute`` setting of its
    ``nbgrader_config.py`` where set, else the default, with ``overrides`` on top.

    Args:
        course: course directory; None: no course (defaults and overrides only).
        overrides: ``{setting: value}`` for settings of
            :data:`~dgmcourse.grading.preprocessors.POLICY_TRAITS` (e.g. ``{"memory_mb": 8192}``);
            a None value means "not given".

    Returns:
        ``(policy, limits)``: the :class:`~dgmcourse.grading.sandbox.Policy`, and
        ``{setting: (value, source)}`` in the order of ``POLICY_TRAITS``, ``source`` being
        ``"command line"``, ``"nbgrader_config.py"`` or ``"default"``.

    Raises:
        ValueError: ``nbgrader_config.py`` cannot be executed, a setting is not a positive
            number (``unsafe``: not a bool), or an override names no such setting.
    """
    from traitlets import TraitError
    from traitlets.config import Config

    from dgmcourse.grading.preprocessors import POLICY_TRAITS, SandboxedExecute
    config = course_config(course) if course is not None else Config()
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(POLICY_TRAITS))
    if unknown:
        raise ValueError(f"overrides: no sandbox setting {', '.join(unknown)} "
                         f"(settings: {', '.join(POLICY_TRAITS)})")
    configured = config.SandboxedExecute
    try:
        execute = SandboxedExecute(config=config)
    except TraitError as err:
        raise ValueError(f"{Path(course) / 'nbgrader_config.py'}: {str(err).splitlines()[0]}") from None
    try:
        for name, value in given.items():
            setattr(execute, name, value)
    except TraitError as err:
        raise ValueError(f"overrides: {str(err).splitlines()[0]}") from None
    limits = {name: (getattr(execute, name), "command line" if name in given else
                     "nbgrader_config.py" if name in configured else "default") for name in POLICY_TRAITS}
    return execute.policy, limits
