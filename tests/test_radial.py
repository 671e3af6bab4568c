"""The rotational-average discriminant (core.radial) and its place in the stages."""
import numpy as np
import pytest

from deepconsensus_plugin.core import radial, run_summary, shards, stages
from deepconsensus_plugin.core.metrics import roc_auc
from deepconsensus_plugin.core.run_folder import RotationalInfo

SIZE = 32


def coloured_noise(rng, n, size=SIZE, slope=1.5):
    """Noise whose power falls with frequency, as a micrograph's does (CTF and ice)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / size) ** (slope / 2)
    spectrum = (rng.normal(size=(n, size, size // 2 + 1))
                + 1j * rng.normal(size=(n, size, size // 2 + 1))) * amplitude
    return np.fft.irfft2(spectrum, s=(size, size))


def faint_discs(rng, n, contrast, size=SIZE, radius=7):
    y, x = np.mgrid[:size, :size] - size // 2
    disc = (np.hypot(y, x) < radius).astype(float)
    noise = coloured_noise(rng, n, size)
    return noise + contrast * noise.std() * disc


def test_rotational_averages_do_not_change_with_the_view_of_the_box():
    """Particles lie at every angle: a box transposed or mirrored about its centre pixel
    (where extraction puts the pick) has the same rotational average."""
    rng = np.random.default_rng(0)
    boxes = coloured_noise(rng, 5)
    power = radial.mean_power([(boxes, np.arange(5))])
    mirrored = np.roll(boxes[:, :, ::-1], 1, axis=2)  # column i -> (size - i) mod size
    averager = radial.RingAverager.of(power, SIZE)
    reference = averager(boxes)
    np.testing.assert_allclose(averager(boxes.transpose(0, 2, 1)), reference, atol=1e-10)
    np.testing.assert_allclose(averager(mirrored), reference, atol=1e-10)
    assert reference.shape == (5, SIZE // 2 + 1)


def whitened_ring_averages(boxes, power):
    """The rotational averages spelt out: each box whitened through its spectrum,
    normalised to zero mean and unit deviation, then averaged over each ring."""
    size = boxes.shape[-1]
    scale = 1.0 / np.sqrt(np.maximum(power, 1e-12 * power.max()))
    scale[0] = 0.0
    white = np.fft.irfft2(np.fft.rfft2(boxes) * scale[radial._frequency_bins(size)],
                          s=(size, size))
    white -= white.mean(axis=(1, 2), keepdims=True)
    spread = white.std(axis=(1, 2), keepdims=True)
    white /= np.where(spread > 0, spread, 1.0)
    rings = radial._ring_bins(size).ravel()
    return np.stack([white.reshape(len(white), -1)[:, rings == r].mean(axis=1)
                     for r in range(size // 2 + 1)], axis=1)


@pytest.mark.parametrize("size", [32, 33, 48, 64])
def test_the_ring_averager_is_the_whitened_boxes_ring_averages(size):
    """One matrix product and the deviation from the power spectrum give what whitening
    each box and averaging its rings gives (an odd size has no Nyquist column in its
    half spectrum).  A box of one value (a blank border) gives zeros, where whitening it
    spelt out leaves rounding noise that the division by its deviation blows up (at 33
    px, to averages of order one)."""
    rng = np.random.default_rng(size)
    boxes = faint_discs(rng, 40, 0.5, size=size) + 3.0
    boxes[7] = 2.5
    power = radial.mean_power([(boxes, np.arange(40))])
    averager = radial.RingAverager.of(power, size)
    averages = averager(boxes)
    contrast = np.arange(40) != 7
    expected = whitened_ring_averages(boxes[contrast], power)
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(averages[contrast], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(averages[7], 0.0)
    assert averager(boxes[:0]).shape == (0, size // 2 + 1)


def test_whitening_leaves_noise_equally_strong_at_every_frequency():
    rng = np.random.default_rng(1)
    boxes = coloured_noise(rng, 400)
    power = radial.mean_power([(boxes, np.arange(400))])
    assert power[1] > 20 * power[-1]  # the noise is strongly coloured
    bins = radial._frequency_bins(SIZE)
    scale = 1 / np.sqrt(power)[bins]
    whitened = np.fft.irfft2(np.fft.rfft2(boxes) * scale, s=(SIZE, SIZE))
    flat = radial.mean_power([(whitened, np.arange(400))])[1:]
    assert flat.max() < 1.5 * flat.min()


def test_the_discriminant_finds_weak_particles_in_coloured_noise():
    """Fitted on one set, it ranks another: discs at half the noise's deviation score
    above background, and its log-likelihood ratio is positive for particles."""
    rng = np.random.default_rng(2)
    train_p, train_b = faint_discs(rng, 400, 0.5), coloured_noise(rng, 400)
    power = radial.mean_power([(np.concatenate([train_p, train_b]), np.arange(800))])
    fitted = radial.fit_discriminant(radial.ClassMoments.of_stack(train_p, np.arange(400), power),
                                     radial.ClassMoments.of_stack(train_b, np.arange(400), power),
                                     power)
    test_p, test_b = faint_discs(rng, 300, 0.5), coloured_noise(rng, 300)
    llr = fitted.log_likelihood_ratio(radial.RingAverager.of(power, SIZE)(
        np.concatenate([test_p, test_b])))
    assert roc_auc(np.r_[np.ones(300), np.zeros(300)], llr) > 0.9
    assert np.median(llr[:300]) > 0 > np.median(llr[300:])
    assert fitted.separation > 1


def test_moments_gathered_chunk_by_chunk_are_those_of_all_the_averages(monkeypatch):
    """The discriminant's moments are gathered a few boxes at a time (memory flat in the
    stack's length): in any row order they equal the mean and covariance of every
    average at once, and so does the fit."""
    monkeypatch.setattr(radial, "boxes_per_chunk", lambda size: 7)
    rng = np.random.default_rng(3)
    stack = faint_discs(rng, 50, 0.5) + 3.0  # an offset that a plain sum would cancel
    power = radial.mean_power([(stack, np.arange(50))])
    rows = rng.permutation(50)[:30]
    moments = radial.ClassMoments.of_stack(stack, rows, power)
    averages = radial.RingAverager.of(power, SIZE)(stack[rows])
    assert moments.n == 30
    np.testing.assert_allclose(moments.mean, averages.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(moments.covariance, np.cov(averages, rowvar=False), rtol=1e-10,
                               atol=1e-14)
    background = radial.ClassMoments.of_stack(stack, np.arange(30, 50), power)
    fitted = radial.fit_discriminant(moments, background, power)
    at_once = radial.fit_discriminant(radial.ClassMoments.of_stack(stack[rows], np.arange(30),
                                                                   power),
                                      radial.ClassMoments.of_stack(stack[30:], np.arange(20),
                                                                   power), power)
    np.testing.assert_allclose(fitted.weights, at_once.weights, rtol=1e-8)


def test_a_stack_is_read_in_any_row_order_and_the_discriminant_survives_the_record():
    rng = np.random.default_rng(3)
    stack = faint_discs(rng, 50, 0.5)
    power = radial.mean_power([(stack, np.arange(50))])
    rows = rng.permutation(50)[:30]
    fitted = radial.fit_discriminant(radial.ClassMoments.of_stack(stack, np.arange(25), power),
                                     radial.ClassMoments.of_stack(stack, np.arange(25, 50),
                                                                  power), power)
    np.testing.assert_allclose(fitted.score_stack(stack, rows),
                               fitted.log_likelihood_ratio(radial.RingAverager.of(
                                   power, SIZE)(stack[rows])))
    again = RotationalInfo.of(fitted, 25, 25, 0.0).discriminant()  # through the run record
    np.testing.assert_array_equal(again.score_stack(stack, rows), fitted.score_stack(stack, rows))


def test_too_few_boxes_to_fit_are_refused_with_the_counts():
    boxes = np.random.default_rng(4).normal(size=(20, SIZE, SIZE))
    power = np.ones(SIZE // 2 + 1)
    with pytest.raises(ValueError, match="at least 10 boxes of each class .got 5 particles, "
                                         "20 background"):
        radial.fit_discriminant(radial.ClassMoments.of_stack(boxes, np.arange(5), power),
                                radial.ClassMoments.of_stack(boxes, np.arange(20), power),
                                power)


def test_extraction_fits_it_the_agreement_adds_it_and_it_can_be_switched_off(prepared):
    run, _ = prepared
    extracted = stages.extraction_stage(run, stages.ExtractionParams(network_size=16))
    table = run.consensus()
    evidence = run.rotational_evidence()
    assert evidence.shape == (len(table),) and np.isfinite(evidence).all()
    fitted = extracted.rotational
    assert fitted.n_particles == int((table.votes >= run.info().consensus.min_votes).sum())
    assert fitted.n_background == len(run.negatives())
    assert run.info().extraction.rotational == fitted  # read back from the record
    is_and = table.votes >= run.info().consensus.min_votes
    assert np.median(evidence[is_and]) > 0
    cnn = np.full(len(table), 0.5)
    with_it, _ = stages.agreement_posterior(table.voters, cnn, evidence)
    without, _ = stages.agreement_posterior(table.voters, cnn)
    assert not np.allclose(with_it, without)
    run.write_array(run.CNN_SCORES, cnn)
    stages.ranking_stage(run, combine=True)
    np.testing.assert_array_equal(run.scores(), with_it)
    assert "Score = network and rotational averages" in "\n".join(
        run_summary.summary_lines(run.info()))
    stages.extraction_stage(run, stages.ExtractionParams(network_size=16,
                                                         rotational_average=False))
    assert run.info().extraction.rotational is None and run.rotational_evidence() is None


def test_the_shards_merge_into_the_evidence_of_a_one_piece_extraction(prepared):
    run, _ = prepared
    params = stages.ExtractionParams(network_size=16)
    stages.extraction_stage(run, params)
    whole = run.rotational_evidence()
    for shard in (1, 2):
        shards.extraction_shard_stage(run, shard, 2, params)
    shards.merge_extraction_stage(run, 2, params)
    np.testing.assert_allclose(run.rotational_evidence(), whole, rtol=1e-9, atol=1e-9)


def test_the_published_method_leaves_it_out():
    assert not stages.MethodOptions.for_method(stages.METHOD_PUBLISHED).rotational_average
    assert stages.MethodOptions.for_method(stages.METHOD_AGREEMENT).rotational_average
    assert not stages.MethodOptions.for_method(stages.METHOD_AGREEMENT,
                                               rotational_average=False).rotational_average
