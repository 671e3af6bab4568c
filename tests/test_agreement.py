"""Dawid-Skene combination of picker votes and the network's logit."""
import numpy as np

from deepconsensus_plugin.core.agreement import dawid_skene, score_logit


def _simulated(n=4000, seed=0):
    """Particles and junk; a good, a junk-happy and a weak picker; a noisy network."""
    rng = np.random.default_rng(seed)
    particle = rng.random(n) < 0.6
    rates = {"good": (0.95, 0.15), "junky": (0.8, 0.7), "weak": (0.3, 0.2)}
    voters = np.column_stack([np.where(particle, rng.random(n) < s, rng.random(n) < f)
                              for s, f in rates.values()])
    keep = voters.any(axis=1)  # the OR set: picked by at least one
    logit = np.where(particle, 2.0, -2.0) + rng.normal(0, 2.0, n)
    return particle[keep], voters[keep], logit[keep]


def _auc(labels, scores):
    from deepconsensus_plugin.core.metrics import roc_auc
    return roc_auc(labels, scores)


def test_recovers_picker_reliability_and_beats_each_source():
    particle, voters, logit = _simulated()
    posterior, model = dawid_skene(voters, logit)
    assert model.sensitivity[0] > 0.85 and model.false_pick_rate[0] < 0.3
    assert model.false_pick_rate[1] > 0.5  # the junk-happy picker is found out
    assert model.logit_mean[1] > model.logit_mean[0]
    combined = _auc(particle, posterior)
    assert combined > _auc(particle, logit) + 0.02
    assert combined > _auc(particle, voters.sum(axis=1)) + 0.02
    assert np.all((posterior >= 0) & (posterior <= 1))


def test_votes_alone_and_nan_logits():
    particle, voters, logit = _simulated(seed=1)
    posterior, model = dawid_skene(voters)
    assert model.logit_mean is None
    assert _auc(particle, posterior) > 0.7
    logit = logit.copy()
    logit[:5] = np.nan
    posterior, _ = dawid_skene(voters, logit)
    assert np.isnan(posterior[:5]).all() and np.isfinite(posterior[5:]).all()


def test_empty_input():
    posterior, model = dawid_skene(np.zeros((0, 3), bool), np.zeros(0))
    assert len(posterior) == 0 and model.iterations == 0


def test_logit_of_saturated_scores_is_finite():
    assert np.isfinite(score_logit(np.array([0.0, 0.5, 1.0]))).all()
    assert score_logit(np.array([0.5]))[0] == 0.0


def test_saturated_network_does_not_collapse_the_particle_class():
    """A network trained to saturation clips a third of the particles to one logit; EM must
    not shrink the particle class onto that spike and call the other particles junk
    (seen on EMPIAR-10028: retained F1 0.60 instead of 0.80)."""
    rng = np.random.default_rng(0)
    n = 1000
    particle = rng.random(n) < 0.6
    logit = np.minimum(np.where(particle, rng.normal(14, 4, n), rng.normal(2, 6, n)),
                       score_logit(np.array([1.0]))[0])
    rates = np.array([[0.99, 0.3], [0.94, 0.7], [0.07, 0.2]])
    voters = np.where(particle[:, None], rng.random((n, 3)) < rates[:, 0],
                      rng.random((n, 3)) < rates[:, 1])
    assert np.mean(logit == logit.max()) > 0.25
    posterior, model = dawid_skene(voters, logit)
    assert model.logit_std[1] > 1.0
    assert np.mean((posterior >= 0.5) == particle) > 0.9


def test_the_summary_says_when_one_pickers_votes_decide_the_agreement():
    """Two pickers: A picks exactly the particles, B some of them and junk.  EM finds A's
    picks are the particles (sensitivity ~1, false-pick rate ~0); the summary says the
    retained set then follows A's picks, and says nothing of the kind for three pickers of
    ordinary reliability."""
    from deepconsensus_plugin.core.run_folder import (AgreementInfo, ConsensusInfo,
                                                      RankingInfo, RunInfo)
    from deepconsensus_plugin.core.run_summary import decisive_pickers, summary_lines

    rng = np.random.default_rng(1)
    particle = np.r_[np.ones(300, bool), np.zeros(100, bool)]
    voters = np.column_stack([particle, np.r_[rng.random(300) < 0.8, np.ones(100, bool)]])
    voters[~voters.any(axis=1), 1] = True  # the OR set: picked by at least one
    logit = np.where(particle, 2.0, -1.0) + rng.normal(0, 1.5, len(particle))
    _, model = dawid_skene(voters, logit)
    agreement = AgreementInfo(model.sensitivity.tolist(), model.false_pick_rate.tolist(),
                              float(model.prior))
    assert decisive_pickers(agreement) == [0]

    def summary(agreement, names):
        consensus = ConsensusInfo(n_pickers=len(names), picker_names=names, n_micrographs=1,
                                  box=64, sampling_rate=1.0, radius_px=6.4, min_votes=2,
                                  n_or=400, n_and=240, votes_histogram=[0, 160, 240],
                                  picker_counts=[300, 340])
        return "\n".join(summary_lines(RunInfo(consensus=consensus,
                                               ranking=RankingInfo(0.5, agreement))))

    text = summary(agreement, ["'crYOLO' (outputCoordinates)", "'topaz' (outputCoordinates)"])
    assert "The agreement follows one input set: 'crYOLO' (outputCoordinates) picked" in text
    assert "sensitivity 1.00, false-pick rate 0.00" in text
    _, model = dawid_skene(*_simulated()[1:])
    ordinary = AgreementInfo(model.sensitivity.tolist(), model.false_pick_rate.tolist(),
                             float(model.prior))
    assert decisive_pickers(ordinary) == []
    assert "follows one input set" not in summary(ordinary, ["good", "junky", "weak"])
