"""What export checks between the stored trial and its recompression."""

import pytest

from sweep.export import ExportError
from sweep.export.service import check_same_plan


def test_a_plan_measured_with_other_widths_is_refused_naming_a_layer():
    measured = {"a.q_proj": [0.0, 3], "a.k_proj": [0.0, 4]}
    check_same_plan(None, measured, "trial 1")  # uniform: nothing to compare
    check_same_plan(measured, dict(measured), "trial 1")
    with pytest.raises(ExportError, match=r"trial 1 was measured with other widths .* 1 layers "
                       r"\(a.k_proj: 4 bits then, 3 now"):  # fmt: skip
        check_same_plan(measured, {"a.q_proj": [0.0, 3], "a.k_proj": [0.0, 3]}, "trial 1")
