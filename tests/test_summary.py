"""The end-of-run report (trainer/summary.py): three rows, the margin on every metric, the picture to open."""

import os

from trainer import summary


def test_the_report_gives_every_margin_and_the_picture_to_open_first(tmp_path):
    final = {"fg_ari": 0.60, "ari": 0.05, "miou": 0.25, "static_box_fg_ari": 0.36, "static_box_ari": 0.42,
             "static_box_miou": 0.21, "num_videos": 32}
    os.makedirs(tmp_path / "pictures")
    (tmp_path / "pictures" / "step0003000_video0.png").write_bytes(b"png")
    text = summary.report({"step": 3000, "final": final, "initial": {"fg_ari": 0.01, "ari": 0.0, "miou": 0.01}},
                          str(tmp_path))
    lines = text.splitlines()
    assert lines[1].split()[-3:] == ["60.00", "5.00", "25.00"] and lines[2].split()[-3:] == ["36.00", "42.00", "21.00"]
    assert lines[3].startswith("  untrained model (step 0)")
    assert lines[4].split()[-3:] == ["+24.00", "-37.00", "+4.00"]
    assert lines[5].startswith(f"open first: {tmp_path / 'pictures' / 'step0003000_video0.png'}")


def test_the_report_says_whether_the_background_slot_owns_the_floor(tmp_path):
    base = {"fg_ari": 0.6, "ari": 0.5, "miou": 0.3, "num_videos": 32}
    # the three states of BENCHMARKS.md's demo runs: 0.827, 0.679 and 0.479 against an even split of 0.458
    for alpha, said in ((0.827, "the background slot owns the floor"),
                        (0.679, "the background slot holds part of the floor"),
                        (0.479, "nobody owns the floor")):
        text = summary.report({"step": 8, "final": {**base, "floor_alpha": alpha, "floor_even_split": 0.458}},
                              str(tmp_path))
        line = next(x for x in text.splitlines() if x.startswith("  the floor's alpha"))
        assert f"{alpha:.3f} (an even split over the slots: 0.458): {said}" in line
    assert "the floor's alpha" not in summary.report({"step": 8, "final": base}, str(tmp_path))  # learned slots
