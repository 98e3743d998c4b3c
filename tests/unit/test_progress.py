"""The one progress bar (`oo_features.progress`): drawn when asked, silent otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from oo_features.progress import progress_bar


def test_a_shown_bar_draws_its_label_and_count() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress_bar("publishing", 1000, show=True, unit="bytes", console=console) as bar:
        assert bar.shown
        bar.update(500)
    drawn = console.file.getvalue()  # type: ignore[attr-defined]
    assert "publishing" in drawn and "0.5/1.0 kB" in drawn


def test_a_hidden_bar_draws_nothing(capsys: object) -> None:
    with progress_bar("backfill", None, show=False) as bar:
        bar.advance(3)
        bar.update(10)
        assert not bar.shown
    assert capsys.readouterr() == ("", "")  # type: ignore[attr-defined]
