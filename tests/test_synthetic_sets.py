"""Drawing D_S2 (balanced) and D_S1 (skewed like the real data) from the pool."""

import pandas as pd
import pytest

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.synthetic import draw_sets


def pool(per_group: dict[str, int]) -> pd.DataFrame:
    rows = [dict(path=f"{g}/{i:03d}.png", group=g, prompt_index=i % 3) for g in GROUPS for i in range(per_group[g])]
    return pd.DataFrame(rows)


def test_balanced_and_biased_sets_take_the_first_images_of_each_group():
    sets = draw_sets(pool({"0_0": 10, "0_1": 18, "1_0": 18, "1_1": 10}), 10, 40, "1/9")
    assert sets["balanced"]["group"].value_counts().to_dict() == {g: 10 for g in GROUPS}
    assert sets["biased"]["group"].value_counts().to_dict() == {"0_0": 2, "0_1": 18, "1_0": 18, "1_1": 2}
    first = sets["biased"][sets["biased"]["group"] == "0_0"]["path"].tolist()
    assert first == ["0_0/000.png", "0_0/001.png"]  # manifest order: prompts used in turn


def test_a_pool_too_small_for_a_set_names_the_groups_and_the_fixes():
    with pytest.raises(AimfairError, match=r"too small for the biased set .*0_1 17/18, 1_0 17/18.*lower"):
        draw_sets(pool({"0_0": 10, "0_1": 17, "1_0": 17, "1_1": 10}), 10, 40, "1/9")


def test_the_synthetic_validation_set_is_balanced_and_disjoint_from_both_training_sets():
    from aimfair.csdg.pool import pool_sizes

    sizes = pool_sizes(10, 40, "1/9", val_per_group=5)
    assert sizes == {"0_0": 15, "0_1": 23, "1_0": 23, "1_1": 15}  # the larger set's images, then 5 more
    sets = draw_sets(pool(sizes), 10, 40, "1/9", val_per_group=5)
    validation = sets["validation"]
    assert validation["group"].value_counts().to_dict() == {g: 5 for g in GROUPS}
    assert not set(validation["path"]) & (set(sets["balanced"]["path"]) | set(sets["biased"]["path"]))
    assert "validation" not in draw_sets(pool(sizes), 10, 40, "1/9")  # none unless asked


def test_a_synthetic_validation_set_larger_than_the_pool_holds_is_named():
    with pytest.raises(AimfairError, match=r"fewer images beyond D_S1 and D_S2 than synthetic.val_per_group asks "
                                           r"\(available/needed: 0_0 3/5, 0_1 3/5, 1_0 3/5, 1_1 3/5\).*dvc repro"):
        draw_sets(pool({"0_0": 13, "0_1": 21, "1_0": 21, "1_1": 13}), 10, 40, "1/9", val_per_group=5)


def test_the_fidelity_filter_leaves_misread_images_out_only_when_on(tmp_path):
    from aimfair.config import parse_params
    from aimfair.core import paths
    from aimfair.csdg.fidelity import FIDELITY
    from aimfair.csdg.synthetic import usable_pool

    manifest = pool({g: 4 for g in GROUPS})
    (tmp_path / paths.POOL).mkdir(parents=True)
    manifest.to_csv(tmp_path / paths.POOL / "manifest.csv", index=False)
    with pytest.raises(AimfairError, match="fidelity.filter is on but .*scores.csv does not exist"):
        usable_pool(parse_params({"fidelity": {"filter": True}}), tmp_path)
    (tmp_path / FIDELITY).mkdir(parents=True)
    manifest.assign(ok=[i % 4 != 0 for i in range(16)]).to_csv(tmp_path / FIDELITY / "scores.csv", index=False)
    assert len(usable_pool(parse_params({}), tmp_path)) == 16
    kept = usable_pool(parse_params({"fidelity": {"filter": True}}), tmp_path)
    assert len(kept) == 12 and not kept["path"].str.endswith("000.png").any()
