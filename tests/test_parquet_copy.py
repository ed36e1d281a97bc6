"""Where `raydd run`'s preprocessing stage puts a dataset, and when it is reused (no Ray needed)."""

import os

from raydd.config import build_config
from raydd.pipeline.parquet_copy import encoder_for, prepared_dir
from tests.helpers import write_imagefolder


def config(data, tmp_path, components=None, **mm):
    return build_config("quick", overrides={"data": {"name": str(data)}, "mm": mm, "components": components or {},
                                            "prepare": {"root": str(tmp_path / "prepared")}})


def test_the_same_inputs_share_a_directory_and_a_changed_input_gets_its_own(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    first = prepared_dir(config(data, tmp_path))
    assert first == prepared_dir(config(data, tmp_path))
    assert first.startswith(str(tmp_path / "prepared") + "/data-")
    other_seed = build_config("quick", overrides={"seed": 1, "data": {"name": str(data)},
                                                  "prepare": {"root": str(tmp_path / "prepared")}})
    assert prepared_dir(other_seed) != first  # the validation split depends on the seed
    assert prepared_dir(config(data, tmp_path, {"segmenter": "grabcut"})) != first

    image = next((data / "train").glob("*.png"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the folder changed
    assert prepared_dir(config(data, tmp_path)) != first


def test_captions_are_embedded_only_for_runs_that_use_them(tmp_path):
    data = write_imagefolder(tmp_path / "data")
    plain, with_cc = config(data, tmp_path), config(data, tmp_path, cc=True)
    assert encoder_for(plain) is None and encoder_for(with_cc) == "minilm"
    assert prepared_dir(plain) != prepared_dir(with_cc)
    assert prepared_dir(config(data, tmp_path, mfa=True)) == prepared_dir(plain)  # masks are always written


def test_skipping_bad_rows_is_its_own_copy_and_a_bad_mode_is_refused(tmp_path):
    import pytest

    from raydd.errors import ConfigError

    data = write_imagefolder(tmp_path / "data")
    plain = config(data, tmp_path)
    skip = build_config("quick", overrides={"data": {"name": str(data)}, "prepare": {
        "root": str(tmp_path / "prepared"), "on_bad_row": "skip"}})
    assert prepared_dir(skip) != prepared_dir(plain)
    with pytest.raises(ConfigError, match="prepare.on_bad_row must be fail or skip, got 'ignore'"):
        build_config("quick", overrides={"prepare": {"on_bad_row": "ignore"}})
