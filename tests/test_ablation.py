"""The ablation: its rows, its scoped flags, its records file, and how the table reads a difference."""

import json
import math

import pytest

from raydd.ablation import (AblationSpec, ablation_table, load_records, paired_difference, rows_for, run_ablation,
                            sets_for)
from raydd.ablation.records import AblationRecord, Figure
from raydd.artifacts import MODEL_POOL, SHARED_POOLS
from raydd.config import recipe_dict
from raydd.errors import ConfigError


def _record(row, seed, accs, fused=None, dataset="d"):
    figure = lambda values: Figure(sum(values) / len(values), values)  # noqa: E731
    return AblationRecord(dataset, "dm", row, 10, seed, "quick", accuracy=figure(accs),
                          image_caption=figure(fused) if fused else None)


def test_ablation_rows():
    assert list(rows_for("dm", True)) == ["base", "+cc", "+cm", "+mfa", "+mask_init", "+all", "dm+mm"]
    recipe = lambda name: {k: v for k, v in recipe_dict(name).items() if k != "method"}  # noqa: E731
    assert rows_for("dm", True)["dm+mm"] == recipe("dm+mm")  # its switches and its fusion settings
    assert "dm+mm" not in rows_for("dm", False)  # fashion-mnist: no captions, mask rows only
    dsa_rows = rows_for("dsa", True)
    assert list(dsa_rows)[-1] == "dsa+mm" and dsa_rows["dsa+mm"] == recipe("dsa+mm")
    assert rows_for("dsa", False) == {"base": {}, "+mgm": {"mm": {"mgm": True}}, "+mask_init": {"mm": {"mask_init": True}},
                                      "+all": {"mm": {"mgm": True, "mask_init": True}}}


def test_one_seed_spreads_over_the_evaluation_models_and_is_not_read():
    table = ablation_table([_record("base", 0, [0.5, 0.7]), _record("+mfa", 0, [0.7, 0.9])])
    # Population std of the two models; the difference's s.e. from both rows' models; no verdict.
    assert "| d | dm | +mfa | 1 | 80.00 ± 10.00 | +20.00 ± 10.00 | — | one seed | — | 2 |" in table


def test_the_difference_to_base_is_paired_by_seed():
    base = {0: 0.20, 1: 0.30, 2: 0.25}
    steady = {s: a + 0.01 for s, a in base.items()}  # one point above base at every seed
    noisy = {0: 0.22, 1: 0.28, 2: 0.26}  # +2, -2, +1 points
    records = [_record("base", s, [a, a]) for s, a in base.items()]
    records += [_record("+mask_init", s, [a, a]) for s, a in steady.items()]
    records += [_record("+mfa", s, [a, a]) for s, a in noisy.items()]
    table = ablation_table(records)
    # Seed-to-seed spread of base is 5 points, yet the paired difference of +mask_init is exactly one.
    assert "| d | dm | base | 3 | 25.00 ± 5.00 | — | — | — | — | 6 |" in table
    assert "| d | dm | +mask_init | 3 | 26.00 ± 5.00 | +1.00 ± 0.00 | 0.000 | gain | — | 6 |" in table
    delta, se, paired = paired_difference({s: Figure(a) for s, a in noisy.items()},
                                          {s: Figure(a) for s, a in base.items()})
    assert paired == 3 and delta == pytest.approx(1 / 3) and se == pytest.approx(2.0817 / 3**0.5, rel=1e-4)
    assert "| d | dm | +mfa | 3 | 25.33 ± 3.06 | +0.33 ± 1.20 | 0.808 | within noise |" in table
    assert "Holm's correction over the rows tested against base in each dataset and method (up to 2 here)" in table


def test_a_difference_is_read_against_the_t_interval_of_its_seeds():
    from raydd.ablation.table import holm, p_value, reading

    # Three seeds: the 95 % t-interval is ±4.30 standard errors; eleven seeds: ±2.23.
    assert p_value(4.303, 1.0, 3) == pytest.approx(0.05, abs=1e-4)
    assert p_value(2.228, 1.0, 11) == pytest.approx(0.05, abs=1e-3)
    assert p_value(2.5, 1.0, 3) > 0.05 and p_value(2.5, 1.0, 11) < 0.05
    assert p_value(1.0, 0.0, 3) == 0.0 and p_value(0.0, 0.0, 3) == 1.0
    assert math.isnan(p_value(9.0, 0.1, 1))
    assert reading(-4.5, 3, True) == "loss" and reading(4.5, 3, False) == "within noise"
    assert reading(9.0, 1, True) == "one seed" and reading(1.0, 0, True) == "no base seed"


def test_holm_corrects_for_the_number_of_rows_tested():
    from raydd.ablation.table import holm

    # Alone, p = 0.03 stands at 5 %; beside five other rows it needs p <= 0.05 / 6.
    assert holm({"+mfa": 0.03}) == {"+mfa"}
    six = {"+mfa": 0.03, "+cc": 0.5, "+cm": 0.6, "+mask_init": 0.7, "+all": 0.8, "dm+mm": 0.9}
    assert holm(six) == set()
    # Step-down: the smallest p against 0.05/3, the next against 0.05/2, stopping at the first that fails.
    assert holm({"a": 0.01, "b": 0.02, "c": 0.04}) == {"a", "b", "c"}
    assert holm({"a": 0.01, "b": 0.03, "c": 0.04}) == {"a"}
    assert holm({"a": 0.02, "b": 0.001, "c": math.nan}) == {"a", "b"}  # a row without seeds is not tested
    # In the table: a one-point gain over three seeds (p 0.013) stands alone, not beside five other rows.
    base_by_seed = {0: 0.20, 1: 0.30, 2: 0.25}
    base = [_record("base", s, [a, a]) for s, a in base_by_seed.items()]
    row = lambda name, gains: [_record(name, s, [a + g, a + g])  # noqa: E731
                               for (s, a), g in zip(base_by_seed.items(), gains)]
    gain = row("+mfa", [0.012, 0.008, 0.010])
    others = [row(name, gains) for name, gains in (("+cc", [0.02, -0.02, 0.0]), ("+cm", [0.01, -0.01, 0.0]),
              ("+all", [0.03, -0.03, 0.0]), ("+mask_init", [0.02, -0.01, 0.0]), ("dm+mm", [0.01, -0.02, 0.0]))]
    line = "| +mfa | 3 | 26.00 ± 4.80 | +1.00 ± 0.12 | 0.013 |"
    assert f"{line} gain |" in ablation_table(base + gain)
    crowd = ablation_table(base + gain + [r for rows in others for r in rows])
    assert f"{line} within noise |" in crowd and "(up to 6 here)" in crowd


def test_rows_pair_only_the_seeds_they_share_with_base():
    records = [_record("base", 0, [0.2, 0.2]), _record("base", 1, [0.3, 0.3]),
               _record("+cm", 1, [0.25, 0.25], fused=[0.6, 0.5]), _record("+cm", 2, [0.9, 0.9], fused=[0.6, 0.7])]
    line = next(line for line in ablation_table(records).splitlines() if "+cm" in line)
    # Seed 2 has no base: the difference is seed 1's alone; the accuracy column still has both seeds.
    assert "| 2 | 57.50 ± 45.96 | -5.00 ± 0.00 | — | one seed | 60.00 ± 7.07 | 4 |" in line


def test_ablation_sets_can_be_scoped_to_one_method():
    sets = ["eval.epochs=150", "dm:distill.iterations=100", "components.text_encoder=openclip:ViT-B-32:laion2b"]
    assert sets_for(sets, "dm", ["dm", "dsa"]) == ["eval.epochs=150", "distill.iterations=100",
                                                   "components.text_encoder=openclip:ViT-B-32:laion2b"]
    assert sets_for(sets, "dsa", ["dm", "dsa"]) == ["eval.epochs=150",
                                                    "components.text_encoder=openclip:ViT-B-32:laion2b"]
    with pytest.raises(ConfigError, match="'dc' is not one of the ablation's methods"):
        sets_for(["dc:distill.iterations=3"], "dm", ["dm", "dsa"])


def _finished(work_dir, row, seed, accs, fused=None, devices=None):
    run = work_dir / f"cluttered-fashion-mnist-dm-{row}-ipc10-seed{seed}"
    run.mkdir(parents=True)
    ev = {"accuracy": {"mean": sum(accs) / 2, "per_model": accs}, **({"devices": devices} if devices else {})}
    if fused:
        ev["accuracy_image_caption"] = {"mean": sum(fused) / 2, "per_model": fused}
        ev["caption_only"] = {"accuracy": 0.7}
    (run / "eval.json").write_text(json.dumps(ev))


def test_ablation_row_filter_and_table_only_read_finished_runs(tmp_path):
    _finished(tmp_path, "base", 0, [0.2, 0.2])
    _finished(tmp_path, "base", 1, [0.3, 0.3])
    _finished(tmp_path, "dm+mm", 0, [0.2, 0.2])
    spec = AblationSpec(["cluttered-fashion-mnist"], ["dm"], 10, [0, 1, 2], rows=["base", "dm+mm"])
    results = run_ablation(spec, str(tmp_path), table_only=True, log=lambda line: None)
    # Only finished runs come back (no run is started), and only the rows asked for.
    assert sorted((r.row, r.seed) for r in results) == [("base", 0), ("base", 1), ("dm+mm", 0)]
    with pytest.raises(ConfigError, match="unknown ablation row.*\\+mgm"):
        run_ablation(AblationSpec(["cluttered-fashion-mnist"], ["dm"], 10, [0], rows=["+mgm"]), str(tmp_path),
                     table_only=True)


def test_rows_the_settings_rule_out_stop_the_ablation_before_any_row_runs(tmp_path):
    """Mask-aware initialisation has no meaning under noise init: +mask_init and +all are refused up front."""
    def runner(*args, **kwargs):
        raise AssertionError("no row may run")

    spec = AblationSpec(["cluttered-fashion-mnist"], ["dm"], 10, [0], sets=["distill.init=noise"])
    with pytest.raises(ConfigError, match=r"dm \+mask_init, dm \+all cannot run.*mm.mask_init.*--row"):
        run_ablation(spec, str(tmp_path), runner=runner, log=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_records_outlive_the_run_directories_and_keep_protocols_apart(tmp_path):
    runs, records = tmp_path / "runs", str(tmp_path / "records.jsonl")
    _finished(runs, "base", 0, [0.2, 0.4], devices=["cpu, 1 torch threads of 2 CPUs, torch 2.14.1"])
    _finished(runs, "cc", 0, [0.2, 0.2], fused=[0.5, 0.6])
    spec = AblationSpec(["cluttered-fashion-mnist"], ["dm"], 10, [0], sets=["eval.epochs=150"], rows=["base", "+cc"])
    first = run_ablation(spec, str(runs), table_only=True, log=lambda line: None, records=records)
    stored = load_records(records)
    assert len(stored) == 2
    cc = next(r for r in stored.values() if r.row == "+cc")
    assert cc.protocol == "quick eval.epochs=150" and cc.image_caption.per_model == [0.5, 0.6]
    assert cc.caption_only == 0.7 and cc.source == "run cluttered-fashion-mnist-dm-cc-ipc10-seed0"
    base = next(r for r in stored.values() if r.row == "base")  # where it ran, when eval.json says so
    assert base.devices == ["cpu, 1 torch threads of 2 CPUs, torch 2.14.1"] and "devices" not in cc.to_json()

    for run in runs.iterdir():  # a later session: the run directories are gone, the records are not
        (run / "eval.json").unlink()
    again = run_ablation(spec, str(runs), table_only=True, log=lambda line: None, records=records)
    assert ablation_table(again) == ablation_table(first)
    # A record of another protocol does not stand in for this one.
    other = AblationSpec(["cluttered-fashion-mnist"], ["dm"], 10, [0], sets=["eval.epochs=300"], rows=["base"])
    assert run_ablation(other, str(runs), table_only=True, log=lambda line: None, records=records) == []


def test_a_malformed_records_file_names_the_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(_record("base", 0, [0.2, 0.2]).to_json()) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"records.jsonl, line 2: not an ablation record"):
        load_records(str(path))


def _add_records(path, start, count):
    from raydd.ablation.records import add_record

    for seed in range(start, start + count):
        add_record(path, _record("base", seed, [0.2, 0.2]))


def test_ablations_sharing_a_records_file_keep_each_others_rows(tmp_path):
    import multiprocessing

    from raydd.ablation.records import add_record

    path = str(tmp_path / "records.jsonl")
    add_record(path, _record("base", 100, [0.3, 0.3]))
    stale = load_records(path)  # what a second ablation read when it started
    add_record(path, _record("+mfa", 0, [0.1, 0.1]))  # another ablation finished a row meanwhile
    assert len(add_record(path, _record("base", 101, [0.3, 0.3]))) == 3 and len(stale) == 1
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_add_records, args=(path, start, 15)) for start in (0, 15)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert sorted(key[4] for key in load_records(path) if key[2] == "base") == [*range(30), 100, 101]


def _imagefolder_run(work_dir, folder, row):
    run = work_dir / f"{folder.name}-dm-{row}-ipc10-seed0"
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"accuracy": {"mean": 0.5, "per_model": [0.5, 0.5]}}))


def test_an_imagefolder_gets_the_caption_rows_only_when_every_image_has_a_caption(tmp_path):
    from raydd.errors import DataError
    from tests.helpers import write_imagefolder

    folder = write_imagefolder(tmp_path / "pets")
    runs = tmp_path / "runs"
    for row in ("base", "cc", "mfa"):
        _imagefolder_run(runs, folder, row)
    spec = AblationSpec([str(folder)], ["dm"], 10, [0])
    rows = lambda spec: sorted(r.row for r in run_ablation(spec, str(runs), table_only=True,  # noqa: E731
                                                               log=lambda line: None))
    assert rows(spec) == ["+cc", "+mfa", "base"]

    metadata = folder / "train" / "metadata.jsonl"
    lines = [json.loads(line) for line in metadata.read_text().splitlines()]
    del lines[2]["caption"]  # one training image loses its caption
    metadata.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError, match=r"pets: 1 image\(s\) without a caption \(first: .*img002"):
        run_ablation(spec, str(runs), log=lambda line: None)
    # Asking only for rows that need no caption is no error (both are finished, so nothing runs).
    mask_rows = AblationSpec([str(folder)], ["dm"], 10, [0], rows=["base", "+mfa"])
    assert sorted(r.row for r in run_ablation(mask_rows, str(runs), log=lambda line: None)) == ["+mfa", "base"]
    assert rows(spec) == ["+mfa", "base"]  # and a table leaves the caption rows out

    for split in ("train", "test"):  # no captions at all: the mask rows, as on fashion-mnist
        _drop_captions(folder / split / "metadata.jsonl")
    assert rows(spec) == ["+mfa", "base"]


def _drop_captions(metadata):
    lines = [json.loads(line) for line in metadata.read_text().splitlines()]
    metadata.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "caption"}) + "\n" for line in lines))


def test_the_row_flag_is_spelled_as_the_cli_spells_it_and_the_old_spelling_still_works():
    from jobs.ablation import parse_args

    for argv in (["--row", "base", "dm+mm"], ["--row", "base", "--row", "dm+mm"], ["--rows", "base", "dm+mm"]):
        assert parse_args(argv).rows == ["base", "dm+mm"], argv
    assert parse_args([]).rows is None


def test_the_row_flag_help_names_one_spelling(capsys):
    from typer.testing import CliRunner

    from jobs.ablation import parse_args
    from raydd.cli import app

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    job_help = capsys.readouterr().out
    assert "--row " in job_help and "--rows" not in job_help
    assert "--row" in CliRunner().invoke(app, ["ablate", "--help"]).output


def test_the_rows_of_one_seed_share_the_trained_model_pool(tmp_path, monkeypatch):
    """Loss weights and switches do not change the trained pool, so a seed trains it once for all its
    rows; another seed trains its own."""
    from raydd.methods import dm_setup
    from tests.helpers import write_imagefolder

    folder = write_imagefolder(tmp_path / "pets")
    trainings = []
    train_pool = dm_setup.train_pool
    monkeypatch.setattr(dm_setup, "train_pool", lambda *a, **k: trainings.append(a[3]) or train_pool(*a, **k))
    sets = ["dm.bank=true", "dm.pool=trained", "dm.networks=2", "dm.draws=1", "dm.bank_real=4",
            "dm.pool_trainings=1", "dm.pool_steps=2", "distill.iterations=2", "eval.models=1", "eval.epochs=1",
            "device=cpu"]
    runs = tmp_path / "runs"
    spec = AblationSpec([str(folder)], ["dm"], 1, [0, 1], sets=sets, rows=["base", "+cc"])
    records = run_ablation(spec, str(runs), log=lambda line: None)
    assert sorted((r.row, r.seed) for r in records) == [("+cc", 0), ("+cc", 1), ("base", 0), ("base", 1)]
    assert trainings == [0, 1]  # one training per seed (train_pool's 4th argument is the seed)
    shared = sorted((runs / SHARED_POOLS).iterdir())
    assert len(shared) == 2
    for seed in (0, 1):
        pools = {(runs / f"pets-dm-{row}-ipc1-seed{seed}" / MODEL_POOL).read_bytes() for row in ("base", "cc")}
        assert len(pools) == 1 and pools & {path.read_bytes() for path in shared}
