"""Synthetic logs in the raw Ali-CCP format, with the ground truth that made them.

``python -m data_prep.synthetic --out_dir=DIR --impressions=N --seed=S`` writes
(``.csv.gz`` instead of ``.csv`` with ``--gzip``):

* ``sample_skeleton_{train,test}.csv``: one impression per line,
  ``sample_id,click,conversion,common_feature_index,feature_num,feature_list``,
  holding the item-side fields (item, combination, context).
* ``common_features_{train,test}.csv``: one user context per line,
  ``common_feature_index,feature_num,feature_list``, holding the user fields.
* ``ground_truth_{train,test}.csv``: one line per skeleton line, same order,
  ``sample_id,true_pctr,true_pcvr,counterfactual_conversion``.
* ``synthetic_config.json``: the resolved config and a measured summary. It is
  renamed into place last: its presence marks a complete, consistent output.

Every field of ``SyntheticConfig`` is a flag of the same name (``--helpfull``).

A ``feature_list`` is features joined by 0x01, each ``field_id 0x02 feature_id
0x03 value`` (see ``esmm_tf.features``). Unweighted fields carry ``1.0``;
weighted fields carry ``log(1 + count)`` with 5 decimals.

The world behind the data: users with a profile, a few favourite categories and
behaviour lists (categories, shops, brands, intentions of items they interacted
with, with counts); items with a category, shop, brand (sometimes none) and 1-4
intention nodes, Zipf-distributed popularity. Each common row is one visit of a
user; it serves a geometric number of consecutive impressions, half chosen
from the user's favourite categories, half by global popularity. A combination
field (508/509/702/853) is present when the user's behaviour list of that
visit holds the item's category/shop/brand/intention; its id names the matched
category/shop/brand/intention (in its own id range) and its value is the user's
weight on it. True pCTR and pCVR are sigmoids of sums of effects of user id,
profile, item id, category, shop, brand, context and user-item affinity (the
combination weights); the two logits share correlated effects but each has its
own parts (context moves only CTR, a price-tier vs consumption-level match only
CVR), so clicked impressions convert more than average: the selection bias
ESMM addresses. The intercepts are calibrated on a pilot sample to hit the
requested CTR and conversion-given-click rates.

Feature ids: field k of ``features.FIELDS`` owns ``[(k + 1) * span, (k + 2) *
span)`` (``span`` a power of ten above the largest field); the summary lists
each field's range. The item, behaviour and combination fields of one attribute
share the shuffle of their indices, so ``id - range start`` names the same
category in 206, 109_14 and 508 (likewise 207/110_14/509, 216/127_14/702,
210/150_14/853). Within a line, features come grouped by field in
``features.FIELDS`` order; nothing else about their order is promised.

By default the skeleton rows of one common row are consecutive. With
``--interleave_fraction=F`` a share F of the requests have their skeleton rows
scattered up to ``--interleave_window`` lines further down the file, among other
requests' rows, as in logs written in time order (``interleave.py``: a bounded
reorder window; sample ids still count lines in file order, and the ground
truth follows its skeleton rows).

Everything is drawn from ``numpy.random.default_rng`` seeded by the config, in
fixed-size chunks of common rows, so equal configs give byte-identical files
(on one platform and numpy version).

Modules, one concern each: ``config`` (the parameters, file names), ``text``
(vectorised line formatting), ``world`` (users, items, effects), ``sampling``
(one chunk of requests and impressions), ``calibration`` (intercepts),
``lines`` (the Ali-CCP lines of a chunk), ``interleave`` (requests in time
order), ``summary`` (measured rates and oracle AUCs), ``output`` (atomic
files), ``generator`` (``generate``) and ``__main__`` (the command line).
The generator never imports TensorFlow.
"""

from data_prep.synthetic.config import (
    COMMON,
    CONFIG_FILE,
    GROUND_TRUTH,
    SKELETON,
    SPLITS,
    SyntheticConfig,
    file_names,
)
from data_prep.synthetic.generator import generate
from data_prep.synthetic.world import (
    BEHAVIOUR_FIELDS,
    COMBINATION_FIELDS,
    ITEM_ATTRIBUTE_FIELDS,
    MAX_INTENTIONS,
    PROFILE_FIELDS,
)

__all__ = [
    "BEHAVIOUR_FIELDS",
    "COMBINATION_FIELDS",
    "COMMON",
    "CONFIG_FILE",
    "GROUND_TRUTH",
    "ITEM_ATTRIBUTE_FIELDS",
    "MAX_INTENTIONS",
    "PROFILE_FIELDS",
    "SKELETON",
    "SPLITS",
    "SyntheticConfig",
    "file_names",
    "generate",
]
