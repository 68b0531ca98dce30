"""The processor name recorded in benchmark reports."""

import platform

from nhllib.machine import cpu_name


def test_the_model_name_line_of_cpuinfo_is_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: Example\nmodel name\t: Example CPU 9000 @ 3.0GHz\nflags\t: fpu\n")
    assert cpu_name(info) == "Example CPU 9000 @ 3.0GHz"


def test_without_cpuinfo_the_platform_answers(tmp_path):
    assert cpu_name(tmp_path / "missing") == (platform.processor() or "unknown")
    (tmp_path / "no_model").write_text("processor\t: 0\n")
    assert cpu_name(tmp_path / "no_model") == (platform.processor() or "unknown")
