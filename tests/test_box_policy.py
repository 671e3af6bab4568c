"""The box a run works in (core/box_policy.py): the diameter's, a reused network's, the fit
to the AND coordinates' spacing, and the lengths in Å that follow the box.  The stages
that use them are in test_run_folder.py, test_streaming.py and test_model_reuse.py."""
import numpy as np
import pytest

from deepconsensus_plugin.core import box_policy, pipeline
from deepconsensus_plugin.core.run_folder import ConsensusInfo
from deepconsensus_plugin.core.selection import DEFAULT_EDGE_MARGIN, DEFAULT_MIN_DISTANCE


def lattice_picks(spacing: float, n_pickers: int = 2, jitter: float = 1.0):
    """``n_pickers`` pickers that each pick the same 10 x 10 lattice of particles
    ``spacing`` px apart on one micrograph (id 1), with their own small errors."""
    grid = np.stack(np.meshgrid(np.arange(10), np.arange(10)), axis=-1).reshape(-1, 2)
    xy = 100.0 + spacing * grid
    rng = np.random.default_rng(0)
    return [{1: xy + rng.normal(scale=jitter, size=xy.shape)} for _ in range(n_pickers)]


def test_the_fitted_box_is_a_share_of_the_spacing_and_never_below_the_smallest():
    assert box_policy.spacing_box(180, 99.0) is None            # 1.8 spacings: EMPIAR-10017's own
    assert box_policy.spacing_box(360, 99.0) == 148
    assert box_policy.spacing_box(168, 58.0) == 87
    assert box_policy.spacing_box(360, None) is None
    assert box_policy.spacing_box(40, 2.0) == box_policy.MIN_BOX


def test_working_box_follows_a_given_particle_diameter():
    """1.5 diameters where the user gives one (in Å), else the coordinates' own box; a
    diameter without a pixel size cannot be converted, and the box never falls under 8 px."""
    assert box_policy.working_box(96, 0, 2.0) == 96
    assert box_policy.working_box(96, -1, None) == 96
    assert box_policy.working_box(96, 64.0, 2.0) == 48  # 32 px particle
    assert box_policy.working_box(84, 300.0, 5.36) == 84  # EMPIAR-10028: 56 px ribosome
    assert box_policy.working_box(96, 2.0, 2.0) == box_policy.MIN_BOX
    with pytest.raises(ValueError, match="pixel size"):
        box_policy.working_box(96, 64.0, None)
    # with the coordinates' box beside it where the two differ, as the front ends record it
    assert box_policy.run_boxes(96, 64.0, 2.0) == (48, 96, False)
    assert box_policy.run_boxes(96, 0, 2.0) == (96, None, False)
    assert box_policy.run_boxes(84, 300.0, 5.36) == (84, None, False)


def test_lengths_in_angstrom_or_the_default_share_of_the_box_the_run_worked_in():
    """A negative length asks for the default share of the box; a length in Å is turned
    into pixels of the micrographs (no pixel size: the length is taken as pixels)."""
    assert box_policy.length_px(-1, 0.3, 148, 1.0) == pytest.approx(0.3 * 148)
    assert box_policy.length_px(54.0, 0.3, 148, 2.0) == pytest.approx(27.0)
    assert box_policy.length_px(54.0, 0.3, 148, None) == pytest.approx(54.0)
    fitted = ConsensusInfo(n_pickers=2, picker_names=["a", "b"], n_micrographs=1, box=148,
                           sampling_rate=2.0, radius_px=14.8, min_votes=2, n_or=0, n_and=0,
                           votes_histogram=[0, 0, 0], picker_counts=[0, 0],
                           coordinates_box=360, box_spacing_px=99.0)
    assert box_policy.split_lengths_px(fitted, -1, -1) == pytest.approx(
        (DEFAULT_MIN_DISTANCE * 148, DEFAULT_EDGE_MARGIN * 148))  # the fitted box, not 360
    assert box_policy.split_lengths_px(fitted, 100.0, 0.0) == pytest.approx((50.0, 0.0))


def test_the_consensus_is_merged_again_in_the_fitted_box():
    """Picks 60 px apart in 360 px boxes (6 spacings): the AND spacing sets a box of 90 px,
    and the table is the consensus merged with the radius of that box.  A box under two
    spacings, no fit asked, or too few agreed picks keep the box given."""
    picks = lattice_picks(60.0)
    table, box, spacing = box_policy.fitted_consensus(picks, 360, 0.1, 2, fit=True)
    assert spacing == pytest.approx(60.0, abs=2.0)
    assert box == box_policy.spacing_box(360, spacing) == int(round(1.5 * spacing))
    again = pipeline.consensus_table(picks, 0.1 * box)
    assert np.array_equal(table.xy, again.xy) and np.array_equal(table.voters, again.voters)
    assert box_policy.and_spacing(table, 2) == pytest.approx(spacing, abs=1.0)

    table, box, spacing = box_policy.fitted_consensus(picks, 100, 0.1, 2, fit=True)
    assert box == 100 and spacing == pytest.approx(60.0, abs=2.0)
    table, box, spacing = box_policy.fitted_consensus(picks, 360, 0.1, 2, fit=False)
    assert (box, spacing) == (360, None)
    few = [{1: p[1][:5]} for p in picks]
    table, box, spacing = box_policy.fitted_consensus(few, 360, 0.1, 2, fit=True)
    assert (box, spacing, len(table)) == (360, None, 5)
