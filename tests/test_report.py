"""Report: a comparison that draws itself; what `Report.plot` refuses before drawing anything."""

import numpy as np
import pytest

import hypergrad as hg


def _report() -> hg.Report:
    trial = hg.Trial(number=0, hparams={"lr": np.asarray(0.1)}, value=0.5, scores={"val_loss": 0.5},
                     state="complete", flops=1.0, seconds=0.1, run_flops=1.0)
    return hg.compare({"random": hg.Result("random", (trial,), 1.0, 0.0)})


def test_plot_refuses_a_file_or_a_non_path_as_out_dir_naming_it(tmp_path):
    """hg.compare(...).plot("some_file") raised a raw FileExistsError from os.makedirs (and a folder
    under a file a NotADirectoryError); each is now a ValueError naming out_dir=, before anything is
    drawn (matplotlib or not) or created."""
    a_file = tmp_path / "afile"
    a_file.write_text("")
    report = _report()
    for out_dir, match in ((a_file, r"Report.plot\(out_dir='.*afile'\) is a file; give a folder"),
                           (a_file / "figures", r"out_dir='.*afile/figures'\) lies under '.*afile', which is a "
                                                r"file; give a folder"),
                           (3, r"Report.plot\(out_dir=3\) must be the path of a folder")):
        with pytest.raises(ValueError, match=match):
            report.plot(out_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
