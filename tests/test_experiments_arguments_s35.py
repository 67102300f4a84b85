"""seed_iris.py and reproduce.py refused a bad output path only after all their work (a whole study, or
every experiment of a reproduction), with a traceback; seed_iris's --n-jobs 0 ended in joblib's traceback,
and finetuning's --shots 10,10 tabled one measured cell twice (hunt-experiments findings 5, 6 and 9b).
Each is now a parser error naming the option, before any work."""

import pytest

from _helpers import import_experiment


class WorkStarted(Exception):
    pass


@pytest.fixture
def paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    return {"file": str(afile), "under a file": str(afile / "sub"), "uncreatable": "/proc/hypergrad-nope/x"}


@pytest.mark.parametrize("argv, named", [
    (["--out", "file"], "--out"), (["--out", "under a file"], "--out"), (["--out", "uncreatable"], "--out"),
    (["--n-jobs", "0"], "--n-jobs")])
def test_seed_iris_refuses_a_bad_command_line_before_the_study(argv, named, paths, monkeypatch, capsys):
    seed_iris = import_experiment("seed_iris")

    def study(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(seed_iris, "study", study)
    argv = [paths.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as exit:
        seed_iris.main(["--smoke", "--library", "scikit-learn", *argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and named in err, err


@pytest.mark.parametrize("argv, named", [
    (["--out", "dir"], "--out"), (["--out", "under a file"], "--out"), (["--out", "uncreatable"], "--out"),
    (["--results", "under a file"], "--results"), (["--results", "uncreatable"], "--results")])
def test_reproduce_refuses_an_unwritable_results_or_out_before_any_run(argv, named, paths, tmp_path, capsys):
    reproduce = import_experiment("reproduce")
    paths = dict(paths, dir=str(tmp_path))
    argv = [paths.get(a, a) for a in argv]
    if "--results" not in argv:
        argv += ["--results", str(tmp_path / "results")]
    with pytest.raises(SystemExit) as exit:
        reproduce.arguments(["--collect", *argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and named in err, err
    assert not (tmp_path / "results").exists()  # nothing created


def test_reproduce_accepts_an_out_in_a_folder_it_will_create(tmp_path):
    reproduce = import_experiment("reproduce")
    args = reproduce.arguments(["--collect", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "n" / "R.md")])
    assert args.out == str(tmp_path / "n" / "R.md") and not (tmp_path / "n").exists()


@pytest.mark.parametrize("shots", ["10,10", "all,5,all"])
def test_finetuning_refuses_a_repeated_shot_count(shots, tmp_path, capsys):
    finetuning = import_experiment("finetuning")
    with pytest.raises(SystemExit) as exit:
        finetuning.arguments(["--shots", shots, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "--shots" in err and "more than once" in err, err
