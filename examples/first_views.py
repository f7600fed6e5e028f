"""Which view of a run fired first: tailguard's post_tool slice, tailguard's all-token view, the trainer's own
metrics, or PTT-style rules on those metrics. Used by demo.py (its summary) and demo_seeds.py (docs tables).

- tailguard views: the first finding at `warn` or above, and at `high` or above, by the slice it names
  (`post_tool`; `all` or none = the all-token view; a finding naming no pair, such as `alpha_ramp`, is "other").
- trainer metrics: the first step the loss, reward or entropy moved (demo.onset: 3 steps outside the baseline
  band), one level only.
- PTT-style rules (ptt_rules.py): its `medium` and `high` alarms at its live cadence.
"""

from __future__ import annotations

from ptt_rules import first_alarms

VIEWS = ("post_tool slice", "all-token view", "pre_tool slice", "other", "trainer metrics", "PTT-style rules")
LEVELS = {"warn": 1, "high": 2, "critical": 3}


def view_of(f: dict) -> str:
    if not f.get("pair"):
        return "other"
    s = f.get("slice")
    return "all-token view" if s in (None, "all") else f"{s} slice" if s in ("post_tool", "pre_tool") else "other"


def first_fired(audit: list[dict], rows: list[dict], onsets: dict) -> dict[str, dict]:
    """view → {"warn": (step, what) | None, "high": (step, what) | None}."""
    out: dict[str, dict] = {v: {"warn": None, "high": None} for v in VIEWS}
    for f in sorted((e for e in audit if e.get("kind") == "finding"), key=lambda e: e["step"]):
        lvl = LEVELS.get(str(f.get("severity")), 0)
        if not lvl or f.get("evidence", {}).get("event") == "clear":
            continue
        slot = out[view_of(f)]
        what = f"{f['detector']} {f['severity']}" + (f" rank {f['rank']}" if f.get("rank") is not None else "")
        if slot["warn"] is None:
            slot["warn"] = (f["step"], what)
        if lvl >= 2 and slot["high"] is None:
            slot["high"] = (f["step"], what)
    moved = [(s, name.split(" ")[0]) for name, s in onsets.items() if s is not None and name.split(" ")[0] in ("loss", "reward", "entropy")]
    out["trainer metrics"]["warn"] = min(moved) if moved else None
    ptt = first_alarms(rows)
    alarms = [a for a in (ptt["medium"], ptt["high"]) if a]
    out["PTT-style rules"] = {"warn": min(alarms)[:2] if alarms else None, "high": ptt["high"][:2] if ptt["high"] else None}
    return out


def earliest(fired: dict[str, dict], level: str = "warn") -> str:
    """The view(s) that fired first at `level` ("-" when none did)."""
    steps = {v: d[level][0] for v, d in fired.items() if d.get(level)}
    if level == "high":  # the trainer's metrics have one level: count them at both
        steps.update({v: d["warn"][0] for v, d in fired.items() if v == "trainer metrics" and d.get("warn")})
    if not steps:
        return "-"
    first = min(steps.values())
    return " and ".join(v for v, s in steps.items() if s == first) + f" (step {first})"


def fmt_cell(x) -> str:
    return "-" if not x else f"{x[0]} ({x[1]})"
