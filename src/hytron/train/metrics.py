"""Run telemetry: metrics as JSONL (plus TensorBoard when installed) and a progress bar with tokens/s."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    """Append-only JSONL of dict records. On resume, records past the resumed step are dropped first,
    so the file reads as one uninterrupted run."""

    def __init__(self, path: str | Path, enabled: bool = True, truncate_after: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
                if rec.get("step", 0) <= truncate_after:
                    kept.append(line)
            self.path.write_text("".join(k + "\n" for k in kept))
        try:  # optional: TensorBoard event files beside the JSONL
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard not installed
            self._tb = None

    def write(self, record: dict) -> None:
        if not self.enabled or not record:
            return
        record = {**record, "time": round(time.time(), 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record.get("step", 0))
            self._tb.flush()


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics JSONL file (none when it is missing), skipping a line torn by a crash."""
    path = Path(path)
    out = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class Progress:
    """A tqdm progress bar on stderr (none when disabled, e.g. on ranks other than 0)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = ""):
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr,
                         disable=not enabled)

    def update(self, **fields) -> None:
        self._bar.set_postfix_str(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in fields.items()), refresh=False)
        self._bar.update(1)

    def note(self, message: str) -> None:
        if not self._bar.disable:
            self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()
