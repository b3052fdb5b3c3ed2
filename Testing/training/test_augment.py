"""Augmentation keeps image and labels together and re-images samples with thick slices as scanners do."""

from __future__ import annotations

import torch

from training.augment import AugmentOptions, augment_pair, thick_slices, thicken


def _slab_image() -> torch.Tensor:
    image = torch.zeros(1, 30, 8, 8)
    image[0, 15] = 1.0  # a plane one voxel thick, like the flat superior rectus seen across slices
    return image


def test_thick_slices_spread_a_thin_plane_and_keep_its_signal():
    image = _slab_image()
    thick = thick_slices(image, 3.0)
    profile = thick[0, :, 4, 4]
    assert thick.shape == image.shape
    assert float(profile.max()) < 0.6  # partial volume: a third of a 3-voxel slice, then interpolated
    assert int((profile > 0.05).sum()) >= 3  # spread over several voxels along k
    assert abs(float(profile.sum()) - 1.0) < 0.25  # the plane's signal is kept, not lost or doubled
    assert torch.allclose(thick[0, :, 0, 0], thick[0, :, 7, 7])  # nothing changes in-plane


def test_thick_slices_leave_a_uniform_image_and_one_voxel_slices_alone():
    uniform = torch.full((1, 20, 6, 6), 0.3)
    assert torch.allclose(thick_slices(uniform, 2.5), uniform, atol=1e-6)
    image = _slab_image()
    assert torch.equal(thick_slices(image, 1.0), image)


def test_augment_pair_blurs_the_image_along_k_but_never_the_labels():
    image = _slab_image()
    labels = torch.zeros(30, 8, 8, dtype=torch.int64)
    labels[15] = 1
    options = AugmentOptions(translate_vox=(0.0, 0.0, 0.0), rotate_deg=0.0, noise_std=0.0, probability=1.0,
                             slice_thickness=3.5, slice_probability=1.0)
    out_image, out_labels = augment_pair(image, labels, options, torch.Generator().manual_seed(3))
    assert torch.equal(out_labels, labels)  # the truth stays sharp: the network learns to recover it
    assert float(out_image[0, :, 4, 4].max()) < 0.9
    again = augment_pair(image, labels, options, torch.Generator().manual_seed(3))[0]
    assert torch.equal(out_image, again)  # a sample is a pure function of its seed (exact resume)


def test_recipes_without_thick_slices_draw_the_same_random_numbers_as_before():
    """Older runs resume exactly: with slice_thickness 0 the generator advances as it did before the option."""
    image = torch.rand(1, 12, 10, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(12, 10, 10, dtype=torch.int64)
    plain = AugmentOptions(probability=1.0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_pair(image, labels, plain, g1)
    augment_pair(image, labels, AugmentOptions(probability=1.0, slice_thickness=0.0, slice_probability=1.0), g2)
    assert torch.equal(g1.get_state(), g2.get_state())
    g3 = torch.Generator().manual_seed(5)
    augment_pair(image, labels, AugmentOptions(probability=1.0, slice_thickness=3.0, slice_probability=1.0), g3)
    assert not torch.equal(g1.get_state(), g3.get_state())  # the option does draw when it is on


def _two_muscles():
    """A normalised patch: fat (0.25) with a rectus (class 4) and a neighbouring one (class 3), muscle 0.6."""
    image = torch.full((1, 6, 40, 40), 0.25)
    labels = torch.zeros((6, 40, 40), dtype=torch.uint8)
    image[0, :, 15:25, 15:20], labels[:, 15:25, 15:20] = 0.6, 4
    image[0, :, 15:25, 21:23], labels[:, 15:25, 21:23] = 0.6, 3
    image[0, :, :, :3] = 0.0  # air at the edge
    return image, labels


def test_thicken_grows_one_muscle_into_fat_only_in_the_slice_plane():
    image, labels = _two_muscles()
    grown_image, grown_labels = thicken(image, labels, 4, 2, torch.Generator().manual_seed(0))
    new = (grown_labels == 4) & (labels == 0)
    assert int(new.sum()) > 0 and torch.equal(grown_labels == 3, labels == 3)  # the neighbour keeps its voxels
    assert torch.allclose(grown_image[0][new], torch.tensor(0.6))  # painted as the muscle (no spread here)
    assert torch.equal(grown_image[0][~new], image[0][~new])  # nothing else changes
    rows, cols = torch.nonzero((grown_labels == 4)[0], as_tuple=True)
    assert (rows.min(), rows.max(), cols.min()) == (13, 26, 13)  # two voxels in each in-plane direction
    assert torch.equal((grown_labels == 4).sum(dim=(1, 2)), (grown_labels == 4)[0].sum().repeat(6))  # not along k


def test_thicken_is_off_by_default_and_draws_nothing():

    image, labels = _two_muscles()
    options = AugmentOptions(translate_vox=(0, 0, 0), rotate_deg=0, noise_std=0, probability=1.0)
    generator = torch.Generator().manual_seed(3)
    out_image, out_labels = augment_pair(image, labels, options, generator)
    assert torch.equal(out_labels, labels)
    after = torch.rand((), generator=generator).item()
    reference = torch.Generator().manual_seed(3)
    augment_pair(image, labels, options, reference)
    assert after == torch.rand((), generator=reference).item()
    with_thicken = AugmentOptions.from_dict({"thicken_probability": 1.0, "thicken_classes": [4], "probability": 1.0,
                                             "translate_vox": [0, 0, 0], "rotate_deg": 0, "noise_std": 0})
    _, thick_labels = augment_pair(image, labels, with_thicken, torch.Generator().manual_seed(3))
    assert int((thick_labels == 4).sum()) > int((labels == 4).sum())
