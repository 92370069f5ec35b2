"""core.registry_names, the torch-free copies of the registries' names, equal their registries."""
import pytest

from stagecache.core import registry_names


def _registries():
    from stagecache.extract.backbones import BACKBONES
    from stagecache.extract.datasets import TUBE_DATASETS
    from stagecache.extract.detectors import OBJECT_DETECTORS, PERSON_DETECTORS
    from stagecache.extract.detectors.vg_postprocess import VG_POSTPROCESS
    from stagecache.heads import HEADS
    from stagecache.pipelines.training.losses import LOSSES
    from stagecache.pipelines.training.sources import SOURCES
    from stagecache.pipelines.training.split_batches import SAMPLINGS
    from stagecache.extract.store.schema import LEVELS

    return {"BACKBONE_NAMES": BACKBONES, "HEAD_NAMES": HEADS, "LOSS_NAMES": LOSSES, "TUBE_DATASET_NAMES": TUBE_DATASETS,
            "PERSON_DETECTOR_NAMES": PERSON_DETECTORS, "OBJECT_DETECTOR_NAMES": OBJECT_DETECTORS,
            "VG_POSTPROCESS_NAMES": VG_POSTPROCESS, "SAMPLING_NAMES": SAMPLINGS, "SOURCE_NAMES": SOURCES,
            "LEVEL_NAMES": LEVELS}


@pytest.mark.parametrize("name", sorted(_registries()))
def test_names_equal_their_registry(name):
    registry = _registries()[name]
    assert getattr(registry_names, name) == tuple(registry), (
        f"core/registry_names.py {name} differs from its registry: set it to {tuple(registry)!r}")


def test_every_list_is_checked():
    lists = {n for n in vars(registry_names) if n.endswith("_NAMES")}
    assert lists == set(_registries())
