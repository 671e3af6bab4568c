"""The parameters' ranges, which the Scipion form and the command line both check."""
import pytest

from deepconsensus_plugin.core.parameters import out_of_range


def test_values_inside_their_ranges_and_values_not_given_pass():
    assert out_of_range({"min_distance": -1, "edge_margin": 0, "radius": 1, "seed": 0,
                         "threshold": None, "box_size": None, "network_size": 16}) == []


def test_each_value_outside_is_named_with_what_it_must_be_in_the_order_given():
    assert out_of_range({"min_distance": -0.5, "radius": 0, "seed": 3, "box_size": 7}) == [
        ("min_distance", -0.5, "-1 (automatic) or at least 0 A"), ("radius", 0, "in (0, 1]"),
        ("box_size", 7, "at least 8 px")]


def test_a_parameter_without_a_range_is_a_programming_error():
    with pytest.raises(KeyError):
        out_of_range({"radious": 0.1})
