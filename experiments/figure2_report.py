"""Figure 2's report, apart from the entry point's flags (so that a test or
another entry point imports it beside experiments.table2): the paper's claim
per sampling rate, and ``figure2.md``."""

from __future__ import annotations

from esmm_tf import registry
from experiments import runner

METRICS = {"cvr_auc": "CVR AUC", "ctcvr_auc": "CTCVR AUC"}


def claims(per_seed: dict[str, dict[str, list[dict]]], rates: list[float]) -> list[dict]:
    """The figure's claim, ESMM above every other line at every sampling rate,
    on CVR AUC and on CTCVR AUC: ``runner.claim`` per (rate, model, metric),
    each with its ``rate``."""
    out = []
    if "esmm" not in per_seed:
        return out
    for metric in METRICS:
        for other in per_seed:
            if other == "esmm":
                continue
            for rate in rates:
                row = runner.claim(
                    f"ESMM > {registry.get(other).display}",
                    metric,
                    per_seed["esmm"][str(rate)],
                    per_seed[other][str(rate)],
                )
                out.append(dict(row, rate=rate))
    return out


def to_markdown(result: dict) -> str:
    """figure2.md: each line's points (mean ± std over seeds) and the claims,
    a row per (model, metric) and a column per rate."""
    rates = result["rates"]
    head = "| model | " + " | ".join(f"{r:.0%}" for r in rates) + " |"
    rule = "|---|" + "---|" * len(rates)
    runs = {len(seeds) for by_rate in result["runs"].values() for seeds in by_rate.values()}
    lines = [
        f"# Figure 2 on {result['data_dir']}",
        "",
        f"AUC in % at each training-set sampling rate, mean ± std over "
        f"{'/'.join(map(str, sorted(runs)))} seeds ([figure2.png](figure2.png)).",
    ]
    for metric, name in METRICS.items():
        lines += ["", f"## {name}", "", head, rule]
        for model, points in result["points"].items():
            cells = [runner.fmt(tuple(points[str(r)][metric])) for r in rates]
            lines.append(f"| {registry.get(model).display} | " + " | ".join(cells) + " |")
    rows = result.get("claims") or []
    if rows:
        lines += [
            "",
            "## ESMM above every other line at every rate (the paper's claim)",
            "",
            "ESMM minus the model, AUC points: mean paired difference over the seeds, its 95 % "
            "t interval, and whether the claim holds (yes: the interval is above 0; no: below).",
            "",
            "| claim | metric | " + " | ".join(f"{r:.0%}" for r in rates) + " |",
            "|---|---|" + "---|" * len(rates),
        ]
        by_key: dict[tuple[str, str], dict[float, dict]] = {}
        for row in rows:
            by_key.setdefault((row["claim"], row["metric"]), {})[row["rate"]] = row
        for (claim, metric), by_rate in by_key.items():
            cells = [
                f"{by_rate[r]['mean']:+.2f} {runner.interval(by_rate[r])} {by_rate[r]['holds']}"
                for r in rates
            ]
            lines.append(f"| {claim} | {METRICS[metric]} | " + " | ".join(cells) + " |")
        count = {v: sum(r["holds"] == v for r in rows) for v in ("yes", "no", "unresolved")}
        lines += [
            "",
            f"Of {len(rows)} (model, metric, rate) claims: {count['yes']} hold, "
            f"{count['no']} are contradicted, {count['unresolved']} are unresolved.",
        ]
    lines += ["", f"Made by `{result['command']}`.", ""]
    return "\n".join(lines)
