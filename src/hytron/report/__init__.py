"""The HTML report of a training run (`hytron report RUN_DIR`): one self-contained page, charts inline.

    from hytron.report import build_report
    build_report("runs/quickstart/run", claims=["runs/claims/data"])   # -> runs/quickstart/run/report.html

Model and data cards are written by `hytron.train.cards.write_cards` (with every model directory).
"""

from hytron.report.page import build_report

__all__ = ["build_report"]
