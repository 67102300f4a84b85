"""`hypergrad compare` prints hypergrad's warnings as its own one-line messages (fast: the command's
run is replaced, nothing is trained)."""

import warnings

import pytest

from hypergrad import cli


def test_a_warning_during_compare_is_one_line_in_the_commands_voice(monkeypatch, capsys):
    # the pretrained cache's "cannot be written" came out as '<path>/pretrained.py:165: UserWarning: ...'
    # plus the source line 'warnings.warn(...', unlike the command's own "hypergrad compare: warning:" lines
    def run(args, stop):
        warnings.warn("pretrained cache: /x cannot be written; not cached", UserWarning)
        return 0

    monkeypatch.setattr(cli, "_compare", run)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["compare"]) == 0
    err = capsys.readouterr().err
    assert err == "hypergrad compare: warning: pretrained cache: /x cannot be written; not cached\n"


def test_other_warning_categories_keep_pythons_format_and_the_hook_is_restored(monkeypatch):
    before = warnings.showwarning

    def run(args, stop):
        warnings.warn("an old API", DeprecationWarning)
        return 0

    monkeypatch.setattr(cli, "_compare", run)
    with pytest.warns(DeprecationWarning, match="an old API"):  # reached Python's (pytest's) own display
        assert cli.main(["compare"]) == 0
    assert warnings.showwarning is before
