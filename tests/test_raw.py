"""The raw-row parser on hand-written rows: valid rows and every bad kind."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep import raw
from tests.rawrows import common, feature_list, item_features, skeleton, user_features


def test_skeleton_row_parses_into_fields():
    row = raw.parse_skeleton_row(skeleton(7, 1, 0, "abc", item_features(3)))
    assert (row.sample_id, row.click, row.conversion) == (7, 1, 0)
    assert row.common_feature_index == b"abc"
    k = [f.id for f in raw.ITEM_INDEX.fields]
    ids, weights = row.features.field(k.index("210"))
    np.testing.assert_array_equal(ids, [7003, 7100])
    ids, weights = row.features.field(k.index("508"))
    np.testing.assert_array_equal(ids, [8003])
    np.testing.assert_allclose(weights, [0.5])
    ids, _ = row.features.field(k.index("216"))  # absent field
    assert ids == []


def test_common_row_parses_user_fields():
    cfi, feats = raw.parse_common_row(common("u1", user_features(2)))
    assert cfi == b"u1"
    k = [f.id for f in raw.USER_INDEX.fields]
    ids, weights = feats.field(k.index("109_14"))
    np.testing.assert_array_equal(ids, [3002, 3100])
    np.testing.assert_allclose(weights, [0.69315, 1.09861], rtol=1e-6)


def test_unknown_field_is_ignored_and_counted():
    feats = raw.parse_feature_list(
        feature_list([("999", 1, 1.0), ("205", 2, 1.0)]), 2, raw.ITEM_INDEX
    )
    assert feats.ignored == {b"999": 1}
    assert [i for ids in feats.ids for i in ids] == [2]


def test_weights_near_the_float32_limit():
    """Each weight must fit float32 (what the records store); large weights
    that fit are kept even when their sum would not."""
    big = [("101", 1, 1.0), ("109_14", 1, 3e38), ("109_14", 2, 3e38)]
    _, feats = raw.parse_common_row(common("u", big))
    _, weights = feats.field([f.id for f in raw.USER_INDEX.fields].index("109_14"))
    assert weights == [3e38, 3e38]
    for values in ([4e38, -4e38], [1.0, 1e39], [float("inf"), 1.0], [float("nan"), 1.0]):
        row = [("101", 1, 1.0), ("109_14", 1, values[0]), ("109_14", 2, values[1])]
        with pytest.raises(raw.BadRow) as error:
            raw.parse_common_row(common("u", row))
        assert error.value.kind == raw.BAD_FEATURE_VALUE


def test_user_field_on_item_side_is_ignored():
    feats = raw.parse_feature_list(feature_list([("101", 1, 1.0)]), 1, raw.ITEM_INDEX)
    assert feats.ignored == {b"101": 1}


def test_empty_feature_list():
    row = raw.parse_skeleton_row(b"1,0,0,abc,0,")
    assert not any(row.features.ids)


GOOD = skeleton(1, 1, 1, "abc", item_features(0))


@pytest.mark.parametrize(
    "line, kind",
    [
        (b"1,0,0,abc,1", raw.WRONG_COLUMN_COUNT),
        (GOOD + b",extra", raw.WRONG_COLUMN_COUNT),
        (GOOD.replace(b"1,1,1,", b"x,1,1,", 1), raw.BAD_SAMPLE_ID),
        (GOOD.replace(b"1,1,1,", b"1,2,1,", 1), raw.BAD_LABEL),
        (GOOD.replace(b"1,1,1,", b"1,1,-1,", 1), raw.BAD_LABEL),
        (GOOD.replace(b"1,1,1,", b"1,1.0,1,", 1), raw.BAD_LABEL),
        (GOOD.replace(b",6,", b",5,", 1), raw.FEATURE_NUM_MISMATCH),
        (GOOD.replace(b",6,", b",x,", 1), raw.BAD_FEATURE_NUM),
        (GOOD.replace(b"\x03", b"\x02", 1), raw.BROKEN_SEPARATOR),
        (GOOD.replace(b"\x01", b"", 1), raw.BROKEN_SEPARATOR),
        (GOOD.replace(b"\x025000\x03", b"\x02abc\x03", 1), raw.BAD_FEATURE_ID),
        (GOOD.replace(b"\x025000\x03", b"\x02-5\x03", 1), raw.BAD_FEATURE_ID),
        (GOOD.replace(b"\x025000\x03", b"\x0299999999999999999999\x03", 1), raw.BAD_FEATURE_ID),
        (GOOD.replace(b"\x030.5", b"\x03zz", 1), raw.BAD_FEATURE_VALUE),
        (GOOD.replace(b"\x030.5", b"\x03nan", 1), raw.BAD_FEATURE_VALUE),
        (GOOD.replace(b"\x030.5", b"\x031e39", 1), raw.BAD_FEATURE_VALUE),  # float32 inf
        (GOOD.replace(b"\x030.5", b"\x03-1e39", 1), raw.BAD_FEATURE_VALUE),
        (GOOD.replace(b"abc", b"", 1), raw.BAD_COMMON_FEATURE_INDEX),
        (GOOD.replace(b"abc", b"\xc3\xa9", 1), raw.INVALID_BYTES),
    ],
)
def test_bad_skeleton_rows(line, kind):
    with pytest.raises(raw.BadRow) as err:
        raw.parse_skeleton_row(line)
    assert err.value.kind == kind
    assert str(err.value)  # a human-readable message


@pytest.mark.parametrize(
    "line, kind",
    [
        (b"abc,1", raw.WRONG_COLUMN_COUNT),
        (common("u", user_features(0)).replace(b",4,", b",3,", 1), raw.FEATURE_NUM_MISMATCH),
        (common("u", user_features(0)) + b"\xff", raw.INVALID_BYTES),
    ],
)
def test_bad_common_rows(line, kind):
    with pytest.raises(raw.BadRow) as err:
        raw.parse_common_row(line)
    assert err.value.kind == kind


HUGE = b"9" * 5000  # int() refuses strings over 4,300 digits


@pytest.mark.parametrize(
    "line, kind",
    [
        (GOOD.replace(b"1,1,1,", HUGE + b",1,1,", 1), raw.BAD_SAMPLE_ID),
        (GOOD.replace(b",6,", b"," + HUGE + b",", 1), raw.BAD_FEATURE_NUM),
        (GOOD.replace(b"\x025000\x03", b"\x02" + HUGE + b"\x03", 1), raw.BAD_FEATURE_ID),
        (GOOD.replace(b"1,1,1,", b"9223372036854775808,1,1,", 1), raw.BAD_SAMPLE_ID),  # 2^63
    ],
)
def test_numbers_of_any_length_are_bad_rows_with_short_messages(line, kind):
    with pytest.raises(raw.BadRow) as err:
        raw.parse_skeleton_row(line)
    assert err.value.kind == kind and len(str(err.value)) < 120, str(err.value)
    for bad in (HUGE + b",0.25,0.5,1", b"5,0.25,0.5," + HUGE):
        with pytest.raises(raw.BadRow):
            raw.parse_ground_truth_row(bad)


def test_the_largest_int64_and_leading_zeros_are_ids():
    row = raw.parse_skeleton_row(GOOD.replace(b"1,1,1,", b"9223372036854775807,1,1,", 1))
    assert row.sample_id == raw.INT64_MAX
    row = raw.parse_skeleton_row(GOOD.replace(b"1,1,1,", b"0000000000000000000000007,1,1,", 1))
    assert row.sample_id == 7
    assert raw.sample_id_or(b"9223372036854775807", -1) == raw.INT64_MAX
    assert raw.sample_id_or(b"0000000000000000000000007", -1) == 7
    for bad in (b"9223372036854775808", HUGE, b"+7", b""):
        assert raw.sample_id_or(bad, -1) == -1
    # Zero-padded past int()'s 4,300 digits: still the value.
    padded = b"0" * 5000 + b"7"
    assert raw.sample_id_or(padded, -1) == 7
    assert raw.parse_skeleton_row(GOOD.replace(b"1,1,1,", padded + b",1,1,", 1)).sample_id == 7
    row = raw.parse_skeleton_row(GOOD.replace(b"\x025000\x03", b"\x02" + padded + b"\x03", 1))
    assert 7 in [i for k in range(len(raw.ITEM_INDEX.fields)) for i in row.features.field(k)[0]]
    assert raw.parse_ground_truth_row(padded + b",0.25,0.5,1").sample_id == 7


def test_truncated_last_line_is_its_own_kind():
    err = raw.BadRow(raw.FEATURE_NUM_MISMATCH, "x")
    assert raw.classify(err, has_newline=False) == raw.TRUNCATED_LAST_LINE
    assert raw.classify(err, has_newline=True) == raw.FEATURE_NUM_MISMATCH


def test_ground_truth_row():
    gt = raw.parse_ground_truth_row(b"5,0.25,0.5,1")
    assert (gt.sample_id, gt.pctr, gt.pcvr, gt.conversion) == (5, 0.25, 0.5, 1)
    for bad in (b"5,0.25,0.5", b"5,2.0,0.5,1", b"5,x,0.5,1", b"5,0.2,0.5,3"):
        with pytest.raises(raw.BadRow):
            raw.parse_ground_truth_row(bad)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(raw.RawInputError, match="not found"):
        raw.find_raw_file(str(tmp_path), "sample_skeleton_train")
    (tmp_path / "sample_skeleton_train.csv").write_bytes(b"")
    with pytest.raises(raw.RawInputError, match="empty"):
        raw.find_raw_file(str(tmp_path), "sample_skeleton_train")
    assert raw.find_raw_file(str(tmp_path), "ground_truth_train", required=False) is None


@pytest.mark.parametrize("token", [b"+240", b" 241", b"242_0", b"241 ", b"0x10", b"\xd9\xa1"])
def test_integers_are_ascii_digits_only(token):
    """int() takes each of these; the raw grammar does not (``242_0`` would
    become sample id 2420 and collide with the real row 2420)."""
    for line, kind in (
        (GOOD.replace(b"1,1,1,", token + b",1,1,", 1), raw.BAD_SAMPLE_ID),
        (GOOD.replace(b",6,", b"," + token + b",", 1), raw.BAD_FEATURE_NUM),
        (GOOD.replace(b"\x025000\x03", b"\x02" + token + b"\x03", 1), raw.BAD_FEATURE_ID),
        (GOOD.replace(b"1,1,1,", b"1," + token + b",1,", 1), raw.BAD_LABEL),
    ):
        with pytest.raises(raw.BadRow) as err:
            raw.parse_skeleton_row(line)
        assert err.value.kind in (kind, raw.INVALID_BYTES)


@pytest.mark.parametrize(
    "token", [b"1_0.5", b"+1.5", b" 1.5", b"1.5 ", b"inf", b"nan", b"1e", b".", b"-", b"1.2.3"]
)
def test_values_are_plain_decimals(token):
    line = GOOD.replace(b"\x030.5", b"\x03" + token, 1)
    with pytest.raises(raw.BadRow) as err:
        raw.parse_skeleton_row(line)
    assert err.value.kind == raw.BAD_FEATURE_VALUE
    # ... also in a field the converter does not keep
    bad = feature_list([("999", 1, 1.0)]).replace(b"\x031.0", b"\x03" + token)
    with pytest.raises(raw.BadRow):
        raw.parse_feature_list(bad, 1, raw.ITEM_INDEX)


@pytest.mark.parametrize("token", [b"0.5", b"-0.5", b"5", b"5.", b".5", b"1e-05", b"2.5E+3"])
def test_plain_decimal_values_parse(token):
    row = raw.parse_skeleton_row(GOOD.replace(b"\x030.5", b"\x03" + token, 1))
    k = [f.id for f in raw.ITEM_INDEX.fields].index("508")
    assert row.features.field(k)[1] == [float(token)]


def test_strict_ground_truth_numbers():
    for bad in (b"+5,0.25,0.5,1", b"5,0.2_5,0.5,1", b"5,0.25,0.5, 1", b"5_0,0.25,0.5,1"):
        with pytest.raises(raw.BadRow):
            raw.parse_ground_truth_row(bad)


def test_both_csv_and_gz_are_refused_naming_both(tmp_path):
    (tmp_path / "sample_skeleton_train.csv").write_bytes(b"x\n")
    (tmp_path / "sample_skeleton_train.csv.gz").write_bytes(b"y")
    with pytest.raises(raw.RawInputError) as err:
        raw.find_raw_file(str(tmp_path), "sample_skeleton_train")
    assert "sample_skeleton_train.csv and " in str(err.value)
    assert "sample_skeleton_train.csv.gz exist" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not_gzip"])
def test_bad_gzip_is_one_error_naming_the_file(tmp_path, damage):
    import gzip

    data = gzip.compress(b"".join(b"%d,some row of text\n" % i for i in range(20000)))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt":
        data = data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:]
    else:
        data = b"plain text, not gzip\n"
    path = tmp_path / "common_features_train.csv.gz"
    path.write_bytes(data)
    with pytest.raises(raw.RawInputError) as err:
        list(raw.read_lines(str(path)))
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)
    # The converter's first look (the line count that sizes its partitions) too.
    from data_prep import raw_layout

    with pytest.raises(raw.RawInputError) as err:
        raw_layout.estimated_lines(str(path))
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
