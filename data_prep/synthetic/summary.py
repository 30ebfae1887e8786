"""The measured summary written to synthetic_config.json: rates, oracle AUCs, field shares."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from esmm_tf import features

# The oracle AUCs come from histograms of the true logits, not from
# esmm_tf.metrics.exact_auc / AucAccumulator: those keep every score (5 bytes
# per impression per AUC, ~1.7 GB for these four over the public set's 84M
# impressions), while the generator streams in bounded memory. With 16k bins
# over [-16, 16] (0.002 in logit) the result matches the exact AUC to ~1e-5
# (tests/test_synthetic.py checks it against exact_auc).
_AUC_BINS = 1 << 14
_AUC_RANGE = 16.0  # logits binned over [-16, 16]


def _auc_bins(logit: np.ndarray) -> np.ndarray:
    scaled = (logit + _AUC_RANGE) * (_AUC_BINS / (2 * _AUC_RANGE))
    return np.clip(scaled.astype(np.int64), 0, _AUC_BINS - 1)


def _auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Rank AUC from score histograms (ties within a bin count one half)."""
    p, n = positive.sum(), negative.sum()
    if not p or not n:
        return None
    below = np.cumsum(negative) - negative
    return float((positive * (below + 0.5 * negative)).sum() / (p * n))


def round_sig(x):
    """Floats to 6 significant digits (ints and None unchanged)."""
    return x if x is None or isinstance(x, int) else float(f"{x:.6g}")


class SplitStats:
    """Counts, means and oracle AUC histograms of one split."""

    def __init__(self):
        self.rows = self.impressions = self.clicks = self.conversions = 0
        self.counterfactual = 0
        self.sums = np.zeros(4)  # pctr, pcvr, pcvr over clicks, pctr * pcvr
        self.first_sample_id = self.last_sample_id = None
        self.moments = np.zeros(5)  # x, y, xx, yy, xy of (pctr, pcvr)
        self.hist = {k: np.zeros((2, _AUC_BINS)) for k in ("ctr", "cvr", "ctcvr", "cvr_entire")}

    def add(self, rows, sample_id, logit_ctr, logit_cvr, pctr, pcvr, click, counterfactual):
        conversion = click & counterfactual
        self.rows += rows
        self.impressions += len(sample_id)
        self.clicks += int(click.sum())
        self.conversions += int(conversion.sum())
        self.counterfactual += int(counterfactual.sum())
        self.first_sample_id = self.first_sample_id or int(sample_id[0])
        self.last_sample_id = int(sample_id[-1])
        self.sums += [pctr.sum(), pcvr.sum(), pcvr[click].sum(), (pctr * pcvr).sum()]
        self.moments += [pctr.sum(), pcvr.sum(), pctr @ pctr, pcvr @ pcvr, pctr @ pcvr]
        pctcvr = pctr * pcvr
        logit_ctcvr = np.log(pctcvr) - np.log1p(-pctcvr)
        for key, logit, label, among in (
            ("ctr", logit_ctr, click, None),
            ("cvr", logit_cvr, conversion, click),
            ("ctcvr", logit_ctcvr, conversion, None),
            ("cvr_entire", logit_cvr, counterfactual, None),
        ):
            if among is not None:
                logit, label = logit[among], label[among]
            bins = _auc_bins(logit)
            self.hist[key][1] += np.bincount(bins[label], minlength=_AUC_BINS)
            self.hist[key][0] += np.bincount(bins[~label], minlength=_AUC_BINS)

    def merged(self, other: SplitStats) -> SplitStats:
        out = SplitStats()
        for name in ("rows", "impressions", "clicks", "conversions", "counterfactual"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.sums, out.moments = self.sums + other.sums, self.moments + other.moments
        out.hist = {k: self.hist[k] + other.hist[k] for k in self.hist}
        ids = [s for s in (self, other) if s.impressions]
        if ids:
            out.first_sample_id, out.last_sample_id = ids[0].first_sample_id, ids[-1].last_sample_id
        return out

    def summary(self) -> dict[str, Any]:
        n = max(self.impressions, 1)
        sx, sy, sxx, syy, sxy = self.moments
        var_x, var_y = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        corr = (sxy / n - sx * sy / n**2) / math.sqrt(var_x * var_y) if var_x * var_y > 0 else None
        return {
            "rows": self.rows,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "counterfactual_conversions": self.counterfactual,
            "first_sample_id": self.first_sample_id,
            "last_sample_id": self.last_sample_id,
            "ctr": round_sig(self.clicks / n),
            "cvr_given_click": round_sig(self.conversions / max(self.clicks, 1)),
            "ctcvr": round_sig(self.conversions / n),
            "mean_true_pctr": round_sig(self.sums[0] / n),
            "mean_true_pcvr": round_sig(self.sums[1] / n),
            "mean_true_pcvr_clicked": round_sig(self.sums[2] / max(self.clicks, 1)),
            "mean_true_pctcvr": round_sig(self.sums[3] / n),
            "true_pctr_pcvr_correlation": round_sig(corr),
            "oracle_auc": {k: round_sig(_auc(h[1], h[0])) for k, h in self.hist.items()},
        }


class FieldStats:
    """Per field: lines holding it and ids in them (over both splits)."""

    def __init__(self):
        self.lines = np.zeros(len(features.FIELDS), np.int64)
        self.ids = np.zeros(len(features.FIELDS), np.int64)
        self.total = {"common": 0, "skeleton": 0}

    def add(self, kind: str, n_lines: int, keys: np.ndarray):
        nf = len(features.FIELDS)
        first = np.ones(len(keys), bool)
        first[1:] = keys[1:] != keys[:-1]
        self.lines += np.bincount(keys[first] % nf, minlength=nf)
        self.ids += np.bincount(keys % nf, minlength=nf)
        self.total[kind] += n_lines

    def summary(self) -> dict[str, Any]:
        out = {}
        for i, f in enumerate(features.FIELDS):
            total = self.total["common" if f.user_side else "skeleton"]
            out[f.id] = {
                "share_of_lines": round_sig(self.lines[i] / max(total, 1)),
                "mean_ids_when_present": round_sig(self.ids[i] / max(self.lines[i], 1)),
            }
        return out
