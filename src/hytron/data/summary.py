"""What a curation run did, in a few lines for people: kept share, top removal reasons, where the reasons are."""

from __future__ import annotations

from pathlib import Path


def removal_summary(manifest: dict, out_dir: str | Path, top: int = 5) -> list[str]:
    """Lines for a terminal: how many documents were kept with which profile, the `top` removal reasons
    (step and reason with counts), and where every removed document's reason is written."""
    c = manifest["counts"]
    profile = manifest.get("config", {}).get("profile", "web")
    lines = [f"kept {c['kept']} of {c['input']} documents ({c['kept'] / max(c['input'], 1):.0%}) with the "
             f"'{profile}' curation profile; removed {c['removed']}"]
    reasons = sorted(((n, reason, step) for step, by_reason in manifest.get("removed_by_step", {}).items()
                      for reason, n in by_reason.items()), key=lambda x: (-x[0], x[2], x[1]))
    if reasons:
        lines.append("top removal reasons: " + ", ".join(f"{reason} {n} ({step})" for n, reason, step in reasons[:top]))
        lines.append(f"every removed document with its reason: {Path(out_dir) / 'removed'} (fields step, "
                     f"removal_reason, score, detail); one document: hytron curate --out {out_dir} --explain ID")
    return lines
