"""Gas conversion against published reference densities (CH4, CO2), sequences, range
selection, truth."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from acquisition.config.station import ConfigError, StationConfig
from acquisition.config.tables import GasConfig, MfcConfig
from acquisition.gas import FlowConversion, species, to_kg_h
from acquisition.run.ranging import choose_mfc
from acquisition.run.sequence import SequenceSpec, load_sequence, mfc_capacity_kg_h, plan_sequence
from acquisition.run.status import progress_line
from acquisition.run.truth import compute_truth, corrected_flow
from tests.test_run import POINTS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("gas", "t_c", "rho"), [
    ("CH4", 0.0, 0.7174), ("CH4", 20.0, 0.6682), ("CH4", 25.0, 0.6569), ("CO2", 0.0, 1.977)])
def test_density_matches_reference_values(gas: str, t_c: float, rho: float) -> None:
    assert species(gas).density(t_c, 101.325) == pytest.approx(rho, rel=2e-4)  # 4 digits


def test_one_kg_per_hour_of_methane_is_23_23_slpm_at_0_degc() -> None:
    conversion = FlowConversion("CH4", 0.0, 101.325, purity=1.0)
    assert conversion.setpoint_for(1.0) == pytest.approx(23.23, abs=0.005)
    # The same mass rate on an Alicat at 25 degC standard reads 9.2 % more SLPM.
    alicat = FlowConversion("CH4", 25.0, 101.325, purity=1.0)
    assert alicat.setpoint_for(1.0) / conversion.setpoint_for(1.0) == pytest.approx(
        0.7174 / 0.6569, rel=2e-4)


def test_purity_and_gcf_enter_the_mass_rate() -> None:
    pure = FlowConversion("CH4", 0.0, 101.325, purity=1.0)
    mix = FlowConversion("CH4", 0.0, 101.325, purity=0.95, gcf=0.76)
    assert mix.mass_rate(10.0) == pytest.approx(pure.mass_rate(10.0) * 0.95 * 0.76)
    assert mix.setpoint_for(mix.mass_rate(7.3)) == pytest.approx(7.3)


@pytest.mark.parametrize(("value", "unit", "kg_h"), [
    (1.0, "kg/h", 1.0), (500, "g/h", 0.5), (1, "g/s", 3.6), (10, "g/min", 0.6),
    (23.23, "SLPM", 1.0), (23230, "sccm", 1.0), (24, "kg/d", 1.0)])
def test_rate_units(value: float, unit: str, kg_h: float) -> None:
    assert to_kg_h(value, unit, "CH4") == pytest.approx(kg_h, rel=5e-4)


def test_unknown_unit_and_gas_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown rate unit 'lb/h'"):
        to_kg_h(1, "lb/h", "CH4")
    with pytest.raises(ValueError, match="unknown gas 'H2S'"):
        species("H2S")


@pytest.fixture
def config(make_config: Callable[..., StationConfig]) -> StationConfig:
    return make_config(extra=POINTS)


def plan(config: StationConfig, steps: list[dict], **spec: object):  # type: ignore[no-untyped-def]
    return plan_sequence(SequenceSpec.model_validate({"name": "t", "steps": steps, **spec}),
                         config, Path("seq.toml"))


@pytest.mark.parametrize(("step", "key", "words"), [
    ({"point": "P9", "rate": 1}, "steps[0].point", "unknown release point 'P9'"),
    ({"point": "P1", "rate": 0.6}, "steps[0].rate", "above the limit of point 'P1'"),
    ({"point": "P2", "rate": 5}, "steps[0].rate", "above the largest MFC of point 'P2'"),
])
def test_sequence_limits_name_the_step(config: StationConfig, step: dict, key: str,
                                       words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan(config, [{"point": "P1", "rate": 0.1}, step])
    problems = caught.value.problems
    assert any(k == key.replace("[0]", "[1]") and words in m for k, m in problems), problems


def test_sequence_bad_unit_is_rejected_when_read(config: StationConfig, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[[steps]]\npoint = "P1"\nrate = 1\nunit = "lb/h"\n')
    with pytest.raises(ConfigError, match=r"steps\.0\.unit: unknown rate unit 'lb/h'"):
        load_sequence(str(path), config)
    with pytest.raises(ConfigError, match="no such sequence"):
        load_sequence("absent", config)


def test_repeats_randomized_with_recorded_seed(config: StationConfig) -> None:
    steps = [{"point": "P1", "rate": r, "repeats": 3} for r in (0, 0.1, 0.2)]
    first = plan(config, steps, randomize=True)
    again = plan_sequence(first.spec, config, Path("s"), seed=first.seed)
    assert first.seed is not None and len(first.steps) == 9
    assert [s.target_kg_h for s in first.steps] == [s.target_kg_h for s in again.steps]
    assert [s.index for s in first.steps] == list(range(9))
    assert sorted(s.target_kg_h for s in first.steps) == [0] * 3 + [0.1] * 3 + [0.2] * 3
    ordered = plan(config, steps)
    assert ordered.seed is None and [s.repeat for s in ordered.steps[:3]] == [1, 2, 3]


def test_range_selection_prefers_the_highest_fraction_within_span(
        config: StationConfig) -> None:
    small = mfc_capacity_kg_h(config, "alicat")
    assert choose_mfc(config, "P1", 0.9 * small).mfc == "alicat"
    assert choose_mfc(config, "P1", 1.2 * small).mfc == "over_tcp"
    low = choose_mfc(config, "P1", 0.05 * small)
    assert low.mfc == "alicat" and low.qc_flags == ("below_accurate_span",)
    assert choose_mfc(config, "P1", 0).setpoint == 0.0


def mfc(**fields: object) -> MfcConfig:
    return MfcConfig.model_validate({"line": "l", "unit_id": 1, "profile": "alicat",
                                     "full_scale": 10.0, **fields})


def test_truth_budget_combines_by_root_sum_square() -> None:
    conversion = FlowConversion("CH4", 25.0, 101.325, purity=0.999)
    readings = [5.0 + 0.01 * ((i % 5) - 2) for i in range(50)]
    truth = compute_truth(readings, mfc(certificate_u_pct=0.6), conversion,
                          GasConfig(purity=0.999, purity_u=0.0005), "SLPM")
    mean = conversion.mass_rate(5.0)
    assert truth.mean_kg_h == pytest.approx(mean)
    items = {item.name: item for item in truth.budget}
    assert items["MFC calibration certificate"].u_rel_pct == pytest.approx(0.3)
    spec = (0.008 * 5.0 + 0.002 * 10.0) / math.sqrt(3)
    assert items["MFC accuracy spec (uncorrected)"].u_rel_pct == pytest.approx(100 * spec / 5)
    assert items["gas purity"].u_rel_pct == pytest.approx(100 * 0.0005 / 0.999)
    assert truth.u_kg_h == pytest.approx(math.sqrt(sum(i.u_kg_h ** 2 for i in truth.budget)))
    assert truth.expanded_kg_h == pytest.approx(2 * truth.u_kg_h)
    assert truth.expanded_rel_pct == pytest.approx(100 * truth.expanded_kg_h / mean)


def test_calibration_correction_replaces_the_spec_term() -> None:
    pairs = [(0.0, 0.0), (5.0, 5.1), (10.0, 10.1)]
    assert corrected_flow(2.5, pairs) == pytest.approx(2.55)
    assert corrected_flow(12.0, pairs) == pytest.approx(12.1)  # along the last segment
    conversion = FlowConversion("CH4", 0.0, 101.325, purity=1.0)
    truth = compute_truth([5.0, 5.0, 5.0], mfc(calibration=pairs, certificate_u_pct=0.5),
                          conversion, GasConfig(), "SLPM")
    assert truth.corrected and truth.mean_kg_h == pytest.approx(conversion.mass_rate(5.1))
    assert "MFC accuracy spec (uncorrected)" not in {item.name for item in truth.budget}


def test_truth_needs_readings() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        compute_truth([1.0], mfc(), FlowConversion("CH4", 0, 101.325, 1.0), GasConfig(), "SLPM")


def test_shipped_sequences_fit_the_simulated_station() -> None:
    from acquisition.config.station import load_config

    config = load_config(REPO / "config" / "sim.toml")
    assert len(load_sequence("demo", config).steps) == 4
    ladder = load_sequence("ch4-ladder", config)
    assert len(ladder.steps) == 18 and ladder.seed is not None


def test_progress_line_hides_nothing_it_should_show() -> None:
    line = progress_line({"run_id": "r", "state": "holding", "step": 2, "steps": 5,
                          "point": "P1", "target": "0.5 kg/h", "mfc": "m",
                          "hold_elapsed_s": 12.0, "hold_s": 60, "truth_so_far_kg_h": 0.4987,
                          "eta_s": 125})
    assert line == ("step 2/5  P1  0.5 kg/h  [m]  holding 12/60 s  truth 0.4987 kg/h  "
                    "ETA 02:05")
