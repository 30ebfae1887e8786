"""Hand-written raw Ali-CCP rows for converter tests."""

from __future__ import annotations

import os


def feature_list(features) -> bytes:
    """[(field, id, value), ...] -> the raw 0x01/0x02/0x03 encoding."""
    return b"\x01".join(
        f"{field}".encode() + b"\x02" + f"{fid}".encode() + b"\x03" + f"{value}".encode()
        for field, fid, value in features
    )


def skeleton(sample_id, click, conversion, cfi, features) -> bytes:
    return b"%d,%d,%d,%s,%d,%s" % (
        sample_id,
        click,
        conversion,
        cfi.encode(),
        len(features),
        feature_list(features),
    )


def common(cfi, features) -> bytes:
    return b"%s,%d,%s" % (cfi.encode(), len(features), feature_list(features))


def user_features(user: int):
    return [
        ("101", 1000 + user, 1.0),
        ("121", 2000 + user % 3, 1.0),
        ("109_14", 3000 + user, 0.69315),
        ("109_14", 3100, 1.09861),
    ]


def item_features(item: int):
    return [
        ("205", 5000 + item, 1.0),
        ("206", 6000 + item % 2, 1.0),
        ("210", 7000 + item, 1.0),
        ("210", 7100, 1.0),
        ("508", 8000 + item, 0.5),
        ("301", 9000, 1.0),
    ]


def write_lines(path: str, lines, newline_at_end: bool = True) -> None:
    data = b"\n".join(lines)
    if newline_at_end and lines:
        data += b"\n"
    with open(path, "wb") as f:
        f.write(data)


def write_raw_dir(path: str, train_skeleton, train_common, test_skeleton=None, test_common=None):
    """Writes the four raw files; test defaults to a copy of train."""
    os.makedirs(path, exist_ok=True)
    write_lines(os.path.join(path, "sample_skeleton_train.csv"), train_skeleton)
    write_lines(os.path.join(path, "common_features_train.csv"), train_common)
    write_lines(
        os.path.join(path, "sample_skeleton_test.csv"),
        train_skeleton if test_skeleton is None else test_skeleton,
    )
    write_lines(
        os.path.join(path, "common_features_test.csv"),
        train_common if test_common is None else test_common,
    )
    return path


def simple_dataset(users: int = 4, impressions_per_user: int = 3):
    """(skeleton lines, common lines): user u sees items u..u+k, one click each."""
    sk, cf = [], []
    sid = 1
    for u in range(users):
        cfi = f"{u:016x}"
        cf.append(common(cfi, user_features(u)))
        for k in range(impressions_per_user):
            click = int(k == 0)
            conversion = int(k == 0 and u % 2 == 0)
            sk.append(skeleton(sid, click, conversion, cfi, item_features(u + k)))
            sid += 1
    return sk, cf
