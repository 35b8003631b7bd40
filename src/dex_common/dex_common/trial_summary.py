"""Dactyl's Table-3 summary of trials (consecutive successes) and its plot: shared by the
evaluator (``dex-policy-eval``, trials in the training env) and ``dex report`` (recorded trials).

A row is a dict with at least ``successes`` and ``end_reason`` (dropped | timeout | completed |
cap). A pure core (no ROS, no torch); matplotlib is imported only to plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    s = np.array([r["successes"] for r in rows], float)
    return {"trials": len(rows), "mean": float(s.mean()) if len(s) else float("nan"),
            "sd": float(s.std()) if len(s) else float("nan"),
            "median": float(np.median(s)) if len(s) else float("nan"),
            "sorted": sorted(int(v) for v in s),
            "drops": sum(r["end_reason"] == "dropped" for r in rows),
            "timeouts": sum(r["end_reason"] == "timeout" for r in rows),
            "completed": sum(r["end_reason"] == "completed" for r in rows),
            "capped": sum(r["end_reason"] == "cap" for r in rows)}


def plot(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: histogram of consecutive successes and successes per trial (end reason marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = result["rows"]
    s = np.array([r["successes"] for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.hist(s, bins=np.arange(0, max(s.max(), 1) + 2) - 0.5, color="tab:blue")
    a.axvline(np.median(s), color="k", ls="--", label=f"median {np.median(s):.1f}")
    a.set_xlabel("consecutive successes")
    a.set_ylabel("trials")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    a.legend()
    colors = {"dropped": "tab:red", "timeout": "tab:orange", "completed": "tab:green",
              "cap": "tab:gray"}
    for reason, c in colors.items():
        idx = [i for i, r in enumerate(rows) if r["end_reason"] == reason]
        if idx:
            b.bar(idx, s[idx], color=c, label=reason)
    b.set_xlabel("trial")
    b.set_ylabel("successes")
    b.legend(fontsize=8)
    ru = result.get("rules", {})
    fig.suptitle(f"{result.get('controller', 'onnx')} on {result['hand']}: mean "
                 f"{s.mean():.2f} ± {s.std():.2f}, median {np.median(s):.1f} "
                 f"({ru.get('goal_rule')} goals, < {ru.get('success_threshold_rad')} rad)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
