"""Datasets other than AVA read into `extract features` inputs (JHMDB-21, UCF101-24)."""
from stagecache.extract.datasets.tubes_pkl import TUBE_DATASETS, TubeInputs, tube_inputs

__all__ = ["TUBE_DATASETS", "TubeInputs", "tube_inputs"]
