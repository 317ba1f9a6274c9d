"""The bench suite's judging and its rewrite of BENCHMARKS.md (the measures themselves run in `python -m bench`)."""

from bench.report import Measure, Section, rewrite, table


def test_targets_are_judged_in_their_direction_and_a_missing_value_is_a_miss():
    assert Measure("ratio", 0.79, "x", "<= 0.8").met
    assert not Measure("ratio", 0.81, "x", "<= 0.8").met
    assert Measure("speed-up", 3.0, "x", ">= 3").met
    assert not Measure("speed-up", 2.9, "x", ">= 3").met
    assert not Measure("tf ratio", None, "x", ">= 2.5", "needs TensorFlow").met
    assert Measure("reported", 12.0, "videos/s").met  # no target: reported, nothing to miss
    rows = table([Measure("a", 0.9, "x", "<= 0.8"), Measure("b", None, "x", ">= 2"), Measure("c", 1.0, "x")])
    assert "**MISSED**" in rows.splitlines()[2] and "not measured" in rows.splitlines()[3]
    assert rows.splitlines()[4].endswith("| reported |")
    js = Measure("a", 0.9, "x", "<= 0.8").as_json("s")
    assert js == {"name": "a", "section": "s", "value": 0.9, "unit": "x", "target": "<= 0.8", "met": False,
                  "note": ""}


def test_rewrite_replaces_only_its_blocks_and_keeps_the_prose(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# B\n\nintro\n\n<!-- bench:scan -->\nold table\n<!-- /bench:scan -->\n\nHow measured: by hand.\n")
    rewrite(str(path), [Section("scan", "Scan", [Measure("m", 2.0, "x", "<= 1.5")]),
                        Section("new", "New one", [Measure("n", 1.0, "s")], "extra rows")], "python -m bench", "box")
    text = path.read_text()
    assert "old table" not in text and "How measured: by hand." in text and "intro" in text
    assert text.count("<!-- bench:scan -->") == 1 and "| m | 2 | x | <= 1.5 | **MISSED** |" in text
    assert "## New one" in text and "extra rows" in text and "box: `python -m bench`" in text
    rewrite(str(path), [Section("new", "New one", [Measure("n", 3.0, "s")])], "python -m bench", "box")
    assert path.read_text().count("## New one") == 1 and "| n | 3 | s |" in path.read_text()
