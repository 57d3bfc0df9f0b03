"""The HTML report of a training run (`hytron report RUN_DIR`): one self-contained page, charts inline.

    from hytron.report import build_report
    build_report("runs/quickstart/run", claims=["runs/claims/data"])   # -> runs/quickstart/run/report.html

Model and data cards: `hytron.report.cards.write_cards(model_dir, run_dir)` (the CLI writes them with every
model directory it trains).
"""

from hytron.report.cards import refresh_cards, write_cards
from hytron.report.page import build_report

__all__ = ["build_report", "refresh_cards", "write_cards"]
