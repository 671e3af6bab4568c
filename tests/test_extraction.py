"""Tests for deepconsensus_plugin.core.extraction (numpy + mrcfile, no Scipion)."""
import mrcfile
import numpy as np
import pytest
import tifffile

from deepconsensus_plugin.core.extraction import (
    ExtractionReport, MicrographError, cut_boxes, extract_particles, extract_to_stack,
    blank_padding, format_problem, fourier_resize, micrograph_frame, micrograph_shape,
    median_skewness, normalise, pad_for_boxes, padded_borders, particle_box,
    read_micrograph, read_particle_images)
from deepconsensus_plugin.core.stack import STACK_DTYPE, create_stack, open_stack


def _write_mrc(path, data):
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
    return str(path)


def _gaussian_image(shape, centre_xy, sigma, amplitude=1.0):
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    return amplitude * np.exp(-((xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2)
                              / (2 * sigma ** 2))


def _centroid(image):
    w = np.clip(image - np.median(image), 0, None)
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]]
    return (xx * w).sum() / w.sum(), (yy * w).sum() / w.sum()


# --------------------------------------------------------------------------- a blob stays centred

@pytest.mark.parametrize("box,size", [(96, 32), (96, 64), (64, 64), (65, 21), (48, 96)])
def test_centred_blob_stays_centred_through_mrc_cut_and_resize(tmp_path, box, size):
    shape = (300, 400)
    centres = np.array([[200.0, 150.0], [61.0, 240.0], [333.0, 50.0]])
    image = sum(_gaussian_image(shape, c, sigma=4.0) for c in centres)
    path = _write_mrc(tmp_path / "mic.mrc", image)
    micrograph = read_micrograph(path)
    particles, crossing = extract_particles(micrograph, centres, box, size)
    assert particles.shape == (3, size, size)
    assert particles.dtype == np.float32
    assert not crossing.any()
    for p in particles:
        # argmax exactly at the centre pixel, centroid within half a pixel of it
        row, col = np.unravel_index(np.argmax(p), p.shape)
        assert (row, col) == (size // 2, size // 2)
        cx, cy = _centroid(p)
        assert abs(cx - size // 2) < 0.5 and abs(cy - size // 2) < 0.5


def test_inverted_blob_is_a_minimum_at_the_centre():
    micrograph = _gaussian_image((200, 200), (100, 100), 5.0)
    particles, _ = extract_particles(micrograph, [[100, 100]], 96, 32, invert=True)
    assert np.unravel_index(np.argmin(particles[0]), (32, 32)) == (16, 16)


def test_offset_blob_moves_by_the_scaled_offset():
    """A blob 12 px right and 6 px below the box centre lands 4 px / 2 px off after 96 -> 32."""
    micrograph = _gaussian_image((300, 300), (162, 156), 4.0)
    particles, _ = extract_particles(micrograph, [[150, 150]], 96, 32)
    cx, cy = _centroid(particles[0])
    assert abs(cx - (16 + 4)) < 0.5 and abs(cy - (16 + 2)) < 0.5


# --------------------------------------------------------------------------- normalise

def test_normalise_zero_mean_unit_std_and_invert():
    rng = np.random.default_rng(0)
    images = rng.normal(5.0, 3.0, size=(4, 16, 16)) * np.arange(1, 5)[:, None, None]
    out = normalise(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-5)
    inverted = normalise(images, invert=True)
    np.testing.assert_allclose(inverted, -out, atol=1e-6)
    np.testing.assert_allclose(inverted.std(axis=(1, 2)), 1, atol=1e-5)


def test_normalise_constant_image_gives_zeros_not_nan():
    out = normalise(np.full((2, 8, 8), 3.5))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, 0)


def test_normalise_nearly_constant_image_gives_zeros():
    """Rounding noise of a flat box (float32 mean of a constant) is not blown up to unit std."""
    flat = np.full((1, 32, 32), -0.016129052, dtype=np.float32)
    flat[0, ::3] = np.nextafter(np.float32(-0.016129052), np.float32(1))
    assert flat.std() > 0
    np.testing.assert_array_equal(normalise(flat), 0)
    np.testing.assert_array_equal(normalise(flat, invert=True), 0)
    # a faint but real signal is still normalised
    weak = 1000 + 0.1 * np.random.default_rng(0).normal(size=(1, 32, 32))
    np.testing.assert_allclose(normalise(weak).std(), 1, atol=1e-3)


# --------------------------------------------------------------------------- fourier_resize

@pytest.mark.parametrize("box,size", [(64, 32), (64, 16), (32, 64), (33, 11), (20, 50), (31, 32)])
def test_fourier_resize_keeps_the_mean_of_a_constant_image(box, size):
    images = np.stack([np.full((box, box), 2.5), np.full((box, box), -7.0)])
    out = fourier_resize(images, size)
    assert out.shape == (2, size, size)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], 2.5, atol=1e-4)
    np.testing.assert_allclose(out[1], -7.0, atol=1e-4)


@pytest.mark.parametrize("box,size", [(64, 32), (32, 64), (90, 30), (30, 90)])
def test_fourier_resize_keeps_the_location_of_a_feature(box, size):
    # a smooth blob at fraction (0.25, 0.625) of the box, in pixel-centre coordinates
    fx, fy = 0.25, 0.625
    image = _gaussian_image((box, box), (fx * box, fy * box), sigma=box / 16)
    out = fourier_resize(image[None], size)[0]
    cx, cy = _centroid(out)
    assert abs(cx - fx * size) < 0.5 and abs(cy - fy * size) < 0.5
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert abs(col - fx * size) <= 1 and abs(row - fy * size) <= 1


def test_fourier_resize_same_size_is_identity_and_preserves_mean_of_random_image():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 24, 24))
    np.testing.assert_allclose(fourier_resize(images, 24), images.astype(np.float32))
    down = fourier_resize(images, 12)
    np.testing.assert_allclose(down.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)
    up = fourier_resize(images, 48)
    np.testing.assert_allclose(up.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1e-5)


def test_a_box_resizes_to_the_same_bits_whatever_boxes_share_its_product():
    """Alone, in a slice that straddles a chunk of the products, or among all the others:
    the same float32 bits (a float32 product's last bit depends on how many rows BLAS
    multiplies at once), so shards, slices and one piece give the same scores."""
    from deepconsensus_plugin.core.stack import boxes_per_chunk

    chunk = boxes_per_chunk(90)
    images = np.random.default_rng(3).normal(size=(2 * chunk + 37, 90, 90))
    whole = fourier_resize(images.astype(np.float32), 32)
    assert whole.dtype == np.float32
    for first, last in [(0, 1), (5, 18), (chunk - 3, chunk + 61),
                        (len(images) - 7, len(images))]:
        np.testing.assert_array_equal(fourier_resize(images[first:last].astype(np.float32), 32),
                                      whole[first:last])


def _spectrum_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The resize spelt out: FFT, crop or zero-pad the centred spectrum, inverse FFT."""
    box = images.shape[-1]
    spectrum = np.fft.fftshift(np.fft.fft2(images.astype(np.float64)), axes=(-2, -1))
    cropped = np.zeros(images.shape[:-2] + (size, size), dtype=np.complex128)
    keep = min(box, size)
    src, dst = box // 2 - keep // 2, size // 2 - keep // 2
    cropped[..., dst:dst + keep, dst:dst + keep] = spectrum[..., src:src + keep, src:src + keep]
    return np.fft.ifft2(np.fft.ifftshift(cropped, axes=(-2, -1))).real * (size / box) ** 2


@pytest.mark.parametrize("box,size", [(180, 32), (181, 32), (180, 33), (33, 11), (20, 50),
                                      (31, 32), (48, 48)])
def test_fourier_resize_is_the_spectrum_crop_spelt_out(box, size):
    """The products (the imaginary part of the operator taken as rank one) give the FFT's
    images at even and odd sizes, down and up."""
    images = np.random.default_rng(box + size).normal(size=(5, box, box)).astype(np.float32)
    np.testing.assert_allclose(fourier_resize(images, size), _spectrum_crop(images, size),
                               atol=1e-6)


def test_fourier_resize_down_then_up_of_band_limited_image_is_lossless():
    """An image holding only low frequencies survives 64 -> 32 -> 64 exactly."""
    yy, xx = np.mgrid[:64, :64]
    image = (np.cos(2 * np.pi * 3 * xx / 64) + 0.5 * np.sin(2 * np.pi * 5 * yy / 64)
             + 0.25 * np.cos(2 * np.pi * (2 * xx + 7 * yy) / 64))
    round_trip = fourier_resize(fourier_resize(image[None], 32), 64)[0]
    np.testing.assert_allclose(round_trip, image, atol=1e-4)


# --------------------------------------------------------------------------- cut_boxes at borders

def test_cut_boxes_inside_are_exact_windows():
    micrograph = np.arange(50 * 60, dtype=np.float32).reshape(50, 60)
    boxes, crossing = cut_boxes(micrograph, np.array([[30.0, 25.0], [10.0, 40.0]]), 10)
    assert boxes.shape == (2, 10, 10)
    assert not crossing.any()
    # x = column, y = row; the corner is centre - box/2
    np.testing.assert_array_equal(boxes[0], micrograph[20:30, 25:35])
    np.testing.assert_array_equal(boxes[1], micrograph[35:45, 5:15])
    # touching the border exactly is inside
    boxes, crossing = cut_boxes(micrograph, np.array([[5.0, 5.0], [55.0, 45.0]]), 10)
    assert not crossing.any()
    np.testing.assert_array_equal(boxes[1], micrograph[40:50, 50:60])


@pytest.mark.parametrize("box", [31, 32, 33, 64, 65])
def test_cut_boxes_puts_the_centre_pixel_at_box_half(box):
    """The pixel nearest (x, y) lands at index box // 2 (the Fourier centre) for odd and even
    boxes and for even and odd coordinates alike; a tie goes to the lower pixel."""
    micrograph = np.arange(200 * 200, dtype=np.float64).reshape(200, 200)
    xy = np.array([[100, 100], [101, 100], [100, 101], [101, 101], [76.4, 120.6],
                   [99.5, 99.51], [100.5, 98.5]])
    nearest = np.array([[100, 100], [101, 100], [100, 101], [101, 101], [76, 121], [99, 100],
                        [100, 98]])
    boxes, crossing = cut_boxes(micrograph, xy, box)
    assert not crossing.any()
    for b, (x, y) in zip(boxes, nearest):
        assert b[box // 2, box // 2] == micrograph[y, x]


@pytest.mark.parametrize("box", [7, 8, 40, 41])
def test_cut_boxes_centres_from_box_half_to_size_minus_box_half_are_inside(box):
    """The range negatives.sample_negatives draws from, ends included, never crosses."""
    rows, cols = 41, 60
    xs = np.linspace(box / 2, cols - box / 2, 101)
    ys = np.linspace(box / 2, rows - box / 2, 101)
    micrograph = np.zeros((rows, cols), dtype=np.float32)
    _, crossing = cut_boxes(micrograph, np.stack([xs, ys], axis=1), box)
    assert not crossing.any()
    _, crossing = cut_boxes(micrograph, [[box / 2 - 1.01, 20], [cols - box / 2 + 0.51, 20]], box)
    assert crossing.all()


@pytest.mark.parametrize("box", [9, 10])
def test_cut_boxes_from_a_micrograph_padded_once_are_the_same(box):
    """Cut from the micrograph padded by a box (``pad_for_boxes``, ``margin``), the boxes
    and the crossing mask are those cut from it alone: inside, across the edge, beyond
    it, and on half pixels nudged by a rounding error (the margin must not round it off)."""
    rng = np.random.default_rng(2)
    micrograph = rng.normal(3.0, 1.0, size=(30, 40)).astype(np.float32)
    xy = np.array([[20.0, 15.0], [1.0, 2.0], [39.5, 29.5], [-7.0, 12.0], [52.0, 40.0],
                   [20.5 + 4e-16, 10.5], [7.5, 5.5 + 1e-15], [10.5 - 2e-15, 29.5]])
    alone, crossing = cut_boxes(micrograph, xy, box)
    padded, padded_crossing = cut_boxes(pad_for_boxes(micrograph, box), xy, box, margin=box)
    np.testing.assert_array_equal(padded, alone)
    np.testing.assert_array_equal(padded_crossing, crossing)
    assert crossing.any() and not crossing.all()


def test_extracting_many_boxes_in_chunks_gives_each_box_as_alone():
    """More boxes than a chunk (``boxes_per_chunk``), some across the edge (the micrograph
    then padded once for all the chunks): each box and its crossing flag are those it gets
    extracted alone."""
    from deepconsensus_plugin.core.stack import boxes_per_chunk

    rng = np.random.default_rng(5)
    micrograph = rng.normal(2.0, 1.0, size=(100, 120)).astype(np.float32)
    n = boxes_per_chunk(40) + 45
    xy = np.column_stack([rng.uniform(-15, 135, n), rng.uniform(-15, 115, n)])
    xy[::7] = np.round(xy[::7]) + 0.5  # ties on half pixels
    images, crossing = extract_particles(micrograph, xy, 40, 16, invert=True)
    assert crossing.any() and not crossing.all()
    for i in range(0, n, 37):
        alone, alone_crossing = extract_particles(micrograph, xy[i:i + 1], 40, 16, invert=True)
        np.testing.assert_array_equal(images[i:i + 1], alone)
        assert crossing[i] == alone_crossing[0]


def test_cut_boxes_border_crossing_counted_filled_and_shaped():
    micrograph = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    mean = float(micrograph.mean())
    xy = np.array([[2.0, 20.0],      # crosses left edge
                   [25.0, 38.0],     # crosses bottom edge
                   [49.0, 0.0],      # crosses the top-right corner
                   [25.0, 20.0],     # inside
                   [-500.0, 20.0],   # completely outside
                   [25.0, 1e6]])     # completely outside, far away
    boxes, crossing = cut_boxes(micrograph, xy, 12)
    assert boxes.shape == (6, 12, 12)
    assert crossing.tolist() == [True, True, True, False, True, True]
    assert crossing.sum() == 5
    # left edge: corner column 2-6=-4 -> 4 columns filled with the mean, rest is the image
    np.testing.assert_array_equal(boxes[0][:, :4], mean)
    np.testing.assert_array_equal(boxes[0][:, 4:], micrograph[14:26, 0:8])
    # bottom edge: corner row 32 -> rows 32..39 real, 4 rows filled
    np.testing.assert_array_equal(boxes[1][:8], micrograph[32:40, 19:31])
    np.testing.assert_array_equal(boxes[1][8:], mean)
    # top-right corner: rows -6..5, columns 43..54
    np.testing.assert_array_equal(boxes[2][6:, :7], micrograph[0:6, 43:50])
    np.testing.assert_array_equal(boxes[2][:6], mean)
    np.testing.assert_array_equal(boxes[2][:, 7:], mean)
    np.testing.assert_array_equal(boxes[3], micrograph[14:26, 19:31])
    # completely outside: all filled
    np.testing.assert_array_equal(boxes[4], mean)
    np.testing.assert_array_equal(boxes[5], mean)


def test_extract_particles_with_crossing_and_empty_input():
    micrograph = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    particles, crossing = extract_particles(micrograph, [[0, 0], [32, 32], [-999, -999]], 32, 16)
    assert particles.shape == (3, 16, 16)
    assert crossing.tolist() == [True, False, True]
    assert np.all(np.isfinite(particles))
    np.testing.assert_array_equal(particles[2], 0)  # constant fill normalises to zero
    empty, crossing = extract_particles(micrograph, np.empty((0, 2)), 32, 16)
    assert empty.shape == (0, 16, 16) and crossing.shape == (0,)


# --------------------------------------------------------------------------- reading micrographs

def test_read_micrograph_and_shape(tmp_path):
    data = np.random.default_rng(0).normal(size=(30, 45)).astype(np.float32)
    path = _write_mrc(tmp_path / "ok.mrc", data)
    assert micrograph_shape(path) == (30, 45)
    out = read_micrograph(path)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)
    # a single-section 3D file is accepted as 2D
    single = _write_mrc(tmp_path / "single.mrc", data[None])
    np.testing.assert_array_equal(read_micrograph(single), data)
    # other dtypes are converted to float32
    ints = tmp_path / "int.mrc"
    with mrcfile.new(str(ints)) as mrc:
        mrc.set_data(np.arange(12, dtype=np.int16).reshape(3, 4))
    assert read_micrograph(str(ints)).dtype == np.float32


def test_read_micrograph_missing_file(tmp_path):
    path = str(tmp_path / "nope.mrc")
    with pytest.raises(MicrographError, match="nope.mrc.*not found") as info:
        read_micrograph(path)
    assert info.value.path == path
    with pytest.raises(MicrographError, match="nope.mrc"):
        micrograph_shape(path)
    with pytest.raises(MicrographError, match="nope.mrc.*not found"):
        micrograph_frame(path)


@pytest.mark.parametrize("mode, short", [("edge", 0), ("constant", 1)])
def test_padded_borders_found_on_each_side(mode, short):
    """A border of repeated rows and columns (motion correction's shifted frames) or of a
    constant fill is measured on each side; a micrograph of noise has none.  A constant
    fill's innermost row differs from the data beside it, so that border is found one row
    short: nothing against an edge margin of tens of pixels."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(300, 400))
    assert padded_borders(data) == (0, 0, 0, 0)
    padded = np.pad(data, ((12, 0), (7, 25)), mode=mode)      # low y, -, low x, high x
    assert padded_borders(padded) == (12 - short, 0, 7 - short, 25 - short)
    deeper = np.pad(data, ((0, 60), (0, 0)), mode=mode)        # beyond 10% of 360 rows
    assert padded_borders(deeper) == (0, 36, 0, 0)


def test_padded_borders_whole_under_compression_noise_and_on_blank_micrographs():
    """8-bit micrographs (JPEG, PNG) perturb the outermost padded rows by a grey level or
    so: the border still reaches to its innermost repeated row.  A blank micrograph (no
    texture to compare with) has no measurable padding."""
    rng = np.random.default_rng(4)
    data = np.round(rng.normal(128, 20, size=(400, 400)))
    padded = np.pad(data, ((30, 0), (0, 0)), mode="edge")
    padded[:5] += rng.integers(-1, 2, size=(5, 400))           # the edge's artefact
    assert padded_borders(padded)[0] == 30
    assert padded_borders(np.zeros((200, 200))) == (0, 0, 0, 0)


def test_blank_padding_sets_the_border_to_the_mean_of_the_data():
    """The network should see no stripes near the edge, only the absence of data: the
    padding takes the data's mean, as the part of a box beyond the frame does."""
    rng = np.random.default_rng(6)
    data = rng.normal(5.0, 2.0, size=(200, 300)).astype(np.float32)
    padded = np.pad(data, ((0, 15), (10, 0)), mode="edge")
    blanked = blank_padding(padded)
    np.testing.assert_array_equal(blanked[:200, 10:], data)
    assert np.allclose(blanked[200:], data.mean()) and np.allclose(blanked[:, :10], data.mean())
    assert padded[200:].std() > 1.0                            # the input is left as it was
    assert blank_padding(data) is data
    boxes, _ = cut_boxes(blanked, np.array([[12.0, 150.0]]), 32)
    assert np.ptp(boxes[0][:, :14]) < 1e-4                     # the box's padded columns: flat


def test_micrograph_frame_reads_size_and_padding(tmp_path):
    data = np.random.default_rng(5).normal(size=(200, 300)).astype(np.float32)
    path = _write_mrc(tmp_path / "pad.mrc", np.pad(data, ((0, 10), (4, 0)), mode="edge"))
    assert micrograph_frame(path) == (210, 304, 0, 10, 4, 0)
    assert micrograph_frame(_write_mrc(tmp_path / "one.mrc", data[None])) == (200, 300, 0, 0, 0, 0)
    with pytest.raises(MicrographError, match="stack.mrc.*2D"):
        micrograph_frame(_write_mrc(tmp_path / "stack.mrc", np.stack([data, data])))


def test_read_micrograph_truncated(tmp_path):
    path = _write_mrc(tmp_path / "cut.mrc", np.ones((100, 100)))
    with open(path, "r+b") as handle:
        handle.truncate(1024 + 100 * 4 * 50)  # header plus half the data
    with pytest.warns(RuntimeWarning), pytest.raises(MicrographError, match="cut.mrc") as info:
        read_micrograph(path)
    assert info.value.path == path
    # the header is intact, so the shape can still be read
    assert micrograph_shape(path) == (100, 100)


def test_read_micrograph_not_an_mrc(tmp_path):
    path = tmp_path / "text.mrc"
    path.write_text("this is not an image\n")
    with pytest.raises(MicrographError, match="text.mrc"):
        read_micrograph(str(path))
    with pytest.raises(MicrographError, match="text.mrc"):
        micrograph_shape(str(path))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_micrograph_non_finite(tmp_path, bad):
    data = np.zeros((20, 20), dtype=np.float32)
    data[3, 7] = bad
    path = _write_mrc(tmp_path / "nan.mrc", data)
    with pytest.raises(MicrographError, match="nan.mrc.*NaN or infinite"):
        read_micrograph(path)


def test_read_micrograph_stack_refused(tmp_path):
    path = _write_mrc(tmp_path / "stack.mrc", np.zeros((3, 20, 20)))
    with pytest.raises(MicrographError, match=r"stack.mrc.*2D.*\(3, 20, 20\)"):
        read_micrograph(path)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int8])
def test_tiff_micrograph_reads_as_the_same_mrc(tmp_path, dtype):
    """A TIFF micrograph (one image; float, or integer as detectors write) gives the same
    array, shape, frame and boxes as the MRC file of the same data: rows in file order,
    as RELION and Xmipp read both."""
    rng = np.random.default_rng(7)
    data = np.pad(rng.normal(50, 10, size=(120, 90)), ((0, 8), (3, 0)), mode="edge")
    data = data.astype(dtype)
    mrc_path = _write_mrc(tmp_path / "mic.mrc", data)
    for name in ("mic.tif", "mic.TIFF"):
        tiff_path = str(tmp_path / name)
        tifffile.imwrite(tiff_path, data)
        assert micrograph_shape(tiff_path) == micrograph_shape(mrc_path) == (128, 93)
        np.testing.assert_array_equal(read_micrograph(tiff_path), read_micrograph(mrc_path))
        assert micrograph_frame(tiff_path) == micrograph_frame(mrc_path)
        xy = np.array([[40.0, 60.0], [2.0, 120.0]])
        stacks = [extract_particles(read_micrograph(path), xy, 32, 16)[0]
                  for path in (tiff_path, mrc_path)]
        np.testing.assert_array_equal(*stacks)
    single = str(tmp_path / "single.tif")
    tifffile.imwrite(single, data[None])                       # one page as a 1-image series
    np.testing.assert_array_equal(read_micrograph(single), data.astype(np.float32))


def test_tiff_movie_and_broken_tiff_refused_by_name(tmp_path):
    movie = str(tmp_path / "movie.tif")
    tifffile.imwrite(movie, np.zeros((5, 40, 40), dtype=np.uint16))
    for read in (read_micrograph, micrograph_shape, micrograph_frame):
        with pytest.raises(MicrographError, match=r"movie.tif.*2D.*\(5, 40, 40\).*movie") as info:
            read(movie)
        assert info.value.path == movie
    broken = tmp_path / "broken.tiff"
    broken.write_text("not a tiff\n")
    for read in (read_micrograph, micrograph_shape):
        with pytest.raises(MicrographError, match="broken.tiff.*cannot be read as TIFF"):
            read(str(broken))


@pytest.mark.parametrize("name", ["mic.spi", "mic.xmp", "mic.EM", "mic.dm4", "mic.jpg",
                                  "mic.hdf"])
def test_other_image_formats_named_and_refused(tmp_path, name):
    """Formats other Scipion packages write are refused naming the file and the format,
    from the name alone (so a form can check them), instead of failing as a bad MRC."""
    path = tmp_path / name
    path.write_bytes(b"\0" * 2048)
    suffix = "." + name.split(".")[1].lower()
    assert suffix in format_problem(str(path)) and "convert" in format_problem(str(path))
    for read in (read_micrograph, micrograph_shape, micrograph_frame):
        with pytest.raises(MicrographError, match="%s.*%s files cannot be read" % (name, suffix)):
            read(str(path))
    for readable in ("mic.mrc", "mic.mrcs", "mic.tif", "mic.tiff", "mic", "mic.st"):
        assert format_problem(readable) is None
    with pytest.raises(MicrographError, match="%s.*%s files cannot be read.*particle stacks"
                       % (name, suffix)):
        read_particle_images([(1, str(path))], 16)


def test_particles_in_tiff_refused_by_name(tmp_path):
    """Particle stacks are read as MRC only: a TIFF stack is named, not misread."""
    path = str(tmp_path / "parts.tif")
    tifffile.imwrite(path, np.zeros((2, 16, 16), dtype=np.float32))
    assert "particle stacks (.mrcs)" in format_problem(path, particles=True)
    assert format_problem(path) is None
    with pytest.raises(MicrographError, match="parts.tif.*.tif files cannot be read"):
        read_particle_images([(1, path)], 16)


# --------------------------------------------------------------------------- extract_to_stack

def _mic_with_values(tmp_path, name, shape=(128, 128), seed=0):
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return _write_mrc(tmp_path / name, data), data


def test_extract_to_stack_writes_rows_in_job_order(tmp_path):
    path_a, mic_a = _mic_with_values(tmp_path, "a.mrc", seed=1)
    path_b, mic_b = _mic_with_values(tmp_path, "b.mrc", seed=2)
    xy_a = np.array([[40.0, 40.0], [90.0, 60.0]])
    xy_b = np.array([[64.0, 64.0], [5.0, 64.0], [100.0, 30.0]])  # the 2nd crosses the border
    stack_path = str(tmp_path / "stack.npy")
    stack = create_stack(stack_path, 5, 16)
    assert stack.shape == (5, 16, 16) and stack.dtype == STACK_DTYPE
    report = extract_to_stack([(path_a, xy_a), (path_b, np.empty((0, 2))), (path_b, xy_b)],
                              stack, box=32)
    stack.close()
    assert isinstance(report, ExtractionReport)
    assert report.n_particles == 5
    assert report.n_crossing_border == 1
    assert report.skipped_micrographs == []
    assert report.seconds >= 0
    expected = np.concatenate([extract_particles(mic_a, xy_a, 32, 16)[0],
                               extract_particles(mic_b, xy_b, 32, 16)[0]])
    stored = open_stack(stack_path)
    assert stored.shape == (5, 16, 16)
    np.testing.assert_allclose(stored.astype(np.float32), expected, atol=5e-3, rtol=1e-3)

    inverted = create_stack(str(tmp_path / "inv.npy"), 5, 16)
    extract_to_stack([(path_a, xy_a), (path_b, xy_b)], inverted, box=32, invert=True)
    np.testing.assert_allclose(inverted.astype(np.float32), -expected, atol=5e-3, rtol=1e-3)


def test_extract_to_stack_skips_bad_micrographs(tmp_path):
    path_a, mic_a = _mic_with_values(tmp_path, "a.mrc", seed=1)
    missing = str(tmp_path / "missing.mrc")
    nan_data = np.zeros((128, 128), dtype=np.float32)
    nan_data[0, 0] = np.nan
    nan_path = _write_mrc(tmp_path / "nan.mrc", nan_data)
    path_c, mic_c = _mic_with_values(tmp_path, "c.mrc", seed=3)
    jobs = [(path_a, np.array([[50.0, 50.0]])),
            (missing, np.array([[50.0, 50.0], [60.0, 60.0]])),
            (nan_path, np.array([[70.0, 70.0]])),
            (path_c, np.array([[64.0, 64.0], [30.0, 80.0]]))]
    stack = create_stack(str(tmp_path / "stack.npy"), 6, 16)
    report = extract_to_stack(jobs, stack, box=32, skip_bad_micrographs=True)
    assert report.skipped_micrographs == [missing, nan_path]
    assert report.n_particles == 3
    stack = stack.astype(np.float32)
    np.testing.assert_array_equal(stack[1:4], 0)           # rows of skipped files stay zero
    assert np.all(stack[[0, 4, 5]].std(axis=(1, 2)) > 0.9)  # the others are normalised images
    np.testing.assert_allclose(stack[4:6], extract_particles(mic_c, jobs[3][1], 32, 16)[0],
                               atol=5e-3, rtol=1e-3)


def test_extract_to_stack_raises_on_bad_micrograph_by_default(tmp_path):
    missing = str(tmp_path / "missing.mrc")
    stack = create_stack(str(tmp_path / "stack.npy"), 1, 16)
    with pytest.raises(MicrographError, match="missing.mrc"):
        extract_to_stack([(missing, np.array([[50.0, 50.0]]))], stack, box=32)


# --------------------------------------------------------------------------- read_particle_images

def test_read_particle_images_order_and_resize(tmp_path):
    rng = np.random.default_rng(5)
    stack_a = rng.normal(size=(4, 24, 24)).astype(np.float32)
    stack_b = rng.normal(size=(2, 24, 24)).astype(np.float32)
    path_a = _write_mrc(tmp_path / "a.mrcs", stack_a)
    path_b = _write_mrc(tmp_path / "b.mrcs", stack_b)
    items = [(3, path_a), (1, path_b), (1, path_a), (2, path_b), (3, path_a)]
    images = read_particle_images(items, 12)
    assert images.shape == (5, 12, 12) and images.dtype == np.float32
    expected_sources = [stack_a[2], stack_b[0], stack_a[0], stack_b[1], stack_a[2]]
    expected = normalise(fourier_resize(np.stack(expected_sources), 12))
    np.testing.assert_allclose(images, expected, atol=1e-5)
    inverted = read_particle_images(items, 12, invert=True)
    np.testing.assert_allclose(inverted, -expected, atol=1e-5)
    # a single 2D image file holds particle 1
    single = _write_mrc(tmp_path / "one.mrc", stack_a[1])
    np.testing.assert_allclose(read_particle_images([(1, single)], 24)[0],
                               normalise(stack_a[1][None])[0], atol=1e-5)
    assert read_particle_images([], 12).shape == (0, 12, 12)


@pytest.mark.parametrize("box, field", [(24, 16), (25, 16), (24, 15), (24, 15.6), (24, 24)])
def test_read_particle_images_cut_to_the_field_first(tmp_path, box, field):
    """With ``field_px`` each image keeps its central field (rounded), centred on pixel
    box // 2 as extraction centres a pick, before it is resized; a wider field than the
    images is refused, naming the file and the box needed."""
    stack = np.random.default_rng(8).normal(size=(3, box, box)).astype(np.float32)
    path = _write_mrc(tmp_path / "p.mrcs", stack)
    assert particle_box(path) == box
    kept = int(round(field))
    start = box // 2 - kept // 2
    expected = normalise(fourier_resize(stack[:, start:start + kept, start:start + kept], 12))
    np.testing.assert_allclose(read_particle_images([(1, path), (2, path), (3, path)], 12,
                                                    field_px=field), expected, atol=1e-5)
    with pytest.raises(MicrographError, match=r"p.mrcs: particle images of %d px are narrower "
                                              r"than the run's boxes \(%d px at their pixel "
                                              r"size\): extract them with a box of at least %d"
                                              % (box, box + 2, box + 2)):
        read_particle_images([(1, path)], 12, field_px=box + 2)


def test_median_skewness_tells_dark_objects_from_inverted_ones():
    """Dark blobs on noise (raw micrograph contrast) skew negative, inverted ones positive;
    plain noise hardly at all."""
    rng = np.random.default_rng(9)
    noise = rng.normal(size=(20, 32, 32))
    dark = noise - 4 * _gaussian_image((32, 32), (16, 16), 4.0)[None]
    assert median_skewness(dark) < -0.5 < 0.5 < median_skewness(-dark)
    assert abs(median_skewness(noise)) < 0.1
    assert median_skewness(np.empty((0, 8, 8))) == 0.0


def test_particle_box_refuses_files_it_cannot_read(tmp_path):
    (tmp_path / "text.mrcs").write_text("not an image\n")
    with pytest.raises(MicrographError, match="text.mrcs.*cannot be read as an MRC stack"):
        particle_box(str(tmp_path / "text.mrcs"))
    with pytest.raises(MicrographError, match="x.stk.*.stk files cannot be read"):
        particle_box(str(tmp_path / "x.stk"))


@pytest.mark.parametrize("index", [0, 5, 99])
def test_read_particle_images_index_out_of_range(tmp_path, index):
    path = _write_mrc(tmp_path / "a.mrcs", np.zeros((4, 8, 8)))
    with pytest.raises(MicrographError, match=r"a.mrcs.*out of range 1..4"):
        read_particle_images([(1, path), (index, path)], 8)


def test_read_particle_images_bad_files(tmp_path):
    with pytest.raises(MicrographError, match="gone.mrcs"):
        read_particle_images([(1, str(tmp_path / "gone.mrcs"))], 8)
    rect = _write_mrc(tmp_path / "rect.mrcs", np.zeros((2, 8, 10)))
    with pytest.raises(MicrographError, match="rect.mrcs.*square"):
        read_particle_images([(1, rect)], 8)
